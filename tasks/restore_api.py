"""API-side tasks of the restore-cluster flow (guide 4.3.2.2 steps 9-16 and 4.3.2.3).

Reads that decide (`read_api`, `find_and_verify_backup`) have no side effect; the writes (CSR
approvals, Machine re-creation, forced redeployments) each check the current state first, so a
re-run continues instead of repeating them.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

from prefect import get_run_logger

from etcdguard.clients.kube import KubeClient
from etcdguard.clients.objectstore import ObjectStore
from etcdguard.core import errors, openshift, preflight
from etcdguard.core.profile import ClusterProfile
from tasks import _policy as policy
from tasks import catalogue, certs
from tasks.restore import poll

__all__ = [
    "ApiFacts",
    "approve_valid_csrs",
    "find_and_verify_backup",
    "newest_backup_version",
    "read_api",
    "storage_caveats",
    "verify_etcd",
    "wait_api_etcd_pod",
]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ApiFacts:
    """What the API said, when it answered."""

    clusterversion: dict[str, Any]
    control_plane: tuple[tuple[str, str], ...]
    """(node name, InternalIP) of every control-plane Node."""
    ready: frozenset[str]
    proxy_env: dict[str, str]
    machines: tuple[dict[str, Any], ...]
    """Control-plane Machines."""


def _read(kube: KubeClient) -> ApiFacts:
    clusterversion = kube.get("ClusterVersion", "version")
    nodes = [n for n in kube.list_objects("Node") if openshift.is_control_plane_node(n)]
    try:
        proxy: dict[str, Any] | None = kube.get("Proxy", "cluster")
    except errors.NotFoundError:
        proxy = None
    machines = [
        m
        for m in kube.list_objects("Machine", namespace=openshift.MACHINE_NAMESPACE)
        if openshift.is_control_plane_machine(m)
    ]
    hosts = tuple(sorted((str(n["metadata"]["name"]), a) for n in nodes if (a := openshift.internal_ip(n))))
    ready = frozenset(str(n["metadata"]["name"]) for n in nodes if openshift.node_ready(n))
    return ApiFacts(
        clusterversion=clusterversion,
        control_plane=hosts,
        ready=ready,
        proxy_env=preflight.proxy_env(proxy),
        machines=tuple(machines),
    )


@policy.task("read-api", timeout_s=300, retries=0)
def read_api(profile: ClusterProfile, *, attempts: int = 3) -> ApiFacts | None:
    """The cluster's facts, or None when the API does not answer after `attempts` tries (lost
    quorum: the API is down with it)."""
    for attempt in range(attempts):
        try:
            with KubeClient(profile.api) as kube:
                return _read(kube)
        except errors.TransientError as exc:
            get_run_logger().warning("The API does not answer (%s).", exc)
            if attempt + 1 < attempts:
                time.sleep(2)
    return None


@policy.task("find-and-verify-backup", timeout_s=300)
def find_and_verify_backup(
    profile: ClusterProfile, *, backup_id: str | None, version: str | None
) -> tuple[catalogue.CatalogueEntry, list[str]]:
    """The named backup, or the newest of `version` (of any version when None); refused unless its
    files match the manifest's checksums, it has the static-pod-resources tarball, and its last
    drill (if any ran) passed. Returns the entry and what was checked."""
    with ObjectStore(profile.storage) as store:
        entry = catalogue.find_backup(
            store,
            profile.storage,
            cluster=profile.name,
            backup_id=backup_id,
            ocp_version=None if backup_id else version,
        )
        report = catalogue.verify_backup(store, profile.storage, entry)
    backup = entry.manifest
    if not report.ok:
        raise errors.IntegrityError(
            f"Backup {backup.backup_id} fails its checksums: {' '.join(report.problems)} Choose another backup."
        )
    if backup.static_resources_file is None:
        raise errors.PreflightRefused(
            f"Backup {backup.backup_id} has no static_kuberesources tarball, which cluster-restore.sh needs; "
            "choose another backup."
        )
    checked = list(report.checked)
    if backup.drills:
        last = backup.drills[-1]
        if not last.passed:
            raise errors.PreflightRefused(
                f"The last restore drill of backup {backup.backup_id} ({last.ran_at.isoformat()}) failed: "
                f"{last.message} Choose another backup."
            )
        checked.append(f"last restore drill passed ({last.ran_at.isoformat()})")
    else:
        checked.append("no restore drill has run on this backup")
    return entry, checked


@policy.task("newest-backup-version", timeout_s=300)
def newest_backup_version(profile: ClusterProfile) -> str | None:
    """The z-stream of the cluster's newest complete backup (of any z-stream), or None."""
    with ObjectStore(profile.storage) as store:
        entries = catalogue.list_backups(store, profile.storage, cluster=profile.name)
    return entries[-1].manifest.ocp_version if entries else None


@policy.task("approve-csrs", timeout_s=300)
def approve_valid_csrs(profile: ClusterProfile) -> list[str]:
    """Step 9: approve every pending kubelet CSR that `etcdguard.core.csr` validates against the
    Machines; the others are left pending and logged."""
    return certs.approve_validated(profile)


@policy.task("wait-etcd-pod", timeout_s=7200)
def wait_api_etcd_pod(profile: ClusterProfile, *, node: str, timeout: float) -> str:
    """Step 10b: the API answers and lists `etcd-<recovery node>` Running and ready."""

    def probe() -> tuple[bool, str]:
        with KubeClient(profile.api) as kube:
            pods = kube.list_objects("Pod", namespace=openshift.ETCD_NAMESPACE, labels="app=etcd")
        mine = [p for p in pods if p["metadata"]["name"] == f"etcd-{node}"]
        if not mine:
            return False, f"no pod etcd-{node} yet"
        statuses = (mine[0].get("status") or {}).get("containerStatuses") or []
        ready = [s for s in statuses if s.get("name") == "etcd" and s.get("ready")]
        phase = (mine[0].get("status") or {}).get("phase")
        return phase == "Running" and bool(
            ready
        ), f"etcd-{node} is {phase}, etcd container ready: {bool(ready)}"

    return poll("the single-member control plane", probe, timeout=timeout)


@policy.task("verify-etcd", timeout_s=7200)
def verify_etcd(profile: ClusterProfile, *, timeout: float) -> list[str]:
    """Step 16: every control-plane node has a Running, ready etcd pod, and `etcdctl endpoint
    health --cluster` finds every member healthy, one per control-plane node."""
    lines: list[str] = []

    def probe() -> tuple[bool, str]:
        with KubeClient(profile.api) as kube:
            masters = {
                n["metadata"]["name"] for n in kube.list_objects("Node") if openshift.is_control_plane_node(n)
            }
            pods = kube.list_objects("Pod", namespace=openshift.ETCD_NAMESPACE, labels="app=etcd")
            running = {
                p["spec"].get("nodeName")
                for p in pods
                if (p.get("status") or {}).get("phase") == "Running"
                and all(s.get("ready") for s in (p.get("status") or {}).get("containerStatuses") or [])
            }
            if not masters <= running:
                return False, f"etcd pods not running and ready on {sorted(masters - running)}"
            pod = f"etcd-{sorted(masters)[0]}"
            code, out, err = kube.exec(
                "openshift-etcd", pod, "etcdctl", ["etcdctl", "endpoint", "health", "--cluster", "-w", "json"]
            )
        try:
            health = json.loads(out)
        except ValueError:
            return False, f"etcdctl endpoint health printed {errors.truncate_remote(out + err, limit=200)!r}"
        sick = [h["endpoint"] for h in health if not h.get("health")]
        if code != 0 or sick or len(health) != len(masters):
            return False, f"{len(health)} members for {len(masters)} control-plane nodes, unhealthy: {sick}"
        lines[:] = [f"etcd-{n} Running" for n in sorted(masters)] + [
            f"member {h['endpoint']} healthy ({h.get('took')})"
            for h in sorted(health, key=lambda h: h["endpoint"])
        ]
        return True, f"{len(health)} healthy members"

    poll("every etcd member to be healthy", probe, timeout=timeout)
    return lines


@policy.task("storage-caveats", timeout_s=300)
def storage_caveats(profile: ClusterProfile) -> list[str]:
    """4.3.2.3 made concrete: the PersistentVolumes and VolumeAttachments the restored etcd
    describes, whose real state (volume contents, attachments) may differ from it."""
    out = []
    with KubeClient(profile.api) as kube:
        for kind in ("PersistentVolume", "VolumeAttachment"):
            try:
                items = kube.list_objects(kind)
            except errors.PermanentError as exc:
                out.append(f"{kind}s could not be listed ({exc}); check them by hand.")
                continue
            if not items:
                out.append(f"No {kind}s in the restored cluster.")
            for item in items:
                name = item["metadata"]["name"]
                spec = item.get("spec") or {}
                if kind == "PersistentVolume":
                    claim = spec.get("claimRef") or {}
                    out.append(
                        f"PV `{name}` ({(item.get('status') or {}).get('phase')}, claim "
                        f"{claim.get('namespace', '-')}/{claim.get('name', '-')}): its contents are NOT restored; "
                        "if the volume was re-provisioned since the backup, point the PV at the new volume."
                    )
                else:
                    source = (spec.get("source") or {}).get("persistentVolumeName")
                    out.append(
                        f"VolumeAttachment `{name}`: PV {source} on node {spec.get('nodeName')} as of the backup; "
                        "if the volume is now attached elsewhere, detach it by hand."
                    )
    return out
