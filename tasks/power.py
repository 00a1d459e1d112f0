"""Tasks of graceful-shutdown and graceful-restart (guide chapters 2 and 3): the cluster's
inventory and certificate expiry, the backup check, the shutdown state in S3, shutting hosts down
over SSH, stopping and starting instances through EC2."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from prefect import get_run_logger, runtime

from etcdguard.clients.cloud import Cloud
from etcdguard.clients.hosts import HostSession
from etcdguard.clients.kube import KubeClient
from etcdguard.clients.objectstore import ObjectStore
from etcdguard.core import errors, lifecycle
from etcdguard.core.profile import CloudSettings, ClusterProfile
from tasks import _policy as policy
from tasks import catalogue

__all__ = [
    "clear_shutdown_state",
    "cloud_settings",
    "describe_instances",
    "find_recent_verified_backup",
    "latest_valid_backup",
    "load_shutdown_state",
    "read_inventory",
    "save_shutdown_state",
    "schedule_host_shutdown",
    "start_instances",
    "stop_instances",
    "wait_for_instances",
]

_SIGNER = ("openshift-kube-apiserver-operator", "kube-apiserver-to-kubelet-signer")


def cloud_settings(profile: ClusterProfile) -> CloudSettings:
    """The profile's `cloud:` section, or a ConfigError saying how to add it."""
    if profile.cloud is None:
        raise errors.ConfigError(
            f"Profile {profile.name} has no `cloud:` section; graceful shutdown and restart stop and start "
            "the machines through EC2. Add `cloud: {region: <region>}` (and endpoint_url / credentials_file "
            "if needed) to the profile."
        )
    return profile.cloud


@policy.task("read-inventory", timeout_s=300)
def read_inventory(profile: ClusterProfile) -> tuple[lifecycle.ShutdownState, str | None]:
    """Machines with their instances, nodes, z-stream -> the shutdown state; and the kubelet
    signer's not-after annotation (guide 2 step 1)."""
    with KubeClient(profile.api) as kube:
        machines = kube.list_objects("Machine", namespace="openshift-machine-api")
        nodes = kube.list_objects("Node")
        version = kube.get("ClusterVersion", "version")
        signer = kube.get("Secret", _SIGNER[1], namespace=_SIGNER[0])
    try:
        records = lifecycle.inventory(machines, nodes)
    except ValueError as exc:
        raise errors.PreflightRefused(str(exc)) from exc
    history = (version.get("status") or {}).get("history") or []
    completed = next((h.get("version") for h in history if h.get("state") == "Completed"), None)
    annotation = ((signer.get("metadata") or {}).get("annotations") or {}).get(lifecycle.SIGNER_ANNOTATION)
    state = lifecycle.ShutdownState(
        cluster=profile.name,
        ocp_version=str(completed) if completed else None,
        recorded_at=datetime.now(UTC).replace(microsecond=0),
        flow_run_id=str(runtime.flow_run.id) if runtime.flow_run.id else None,
        machines=records,
    )
    return state, annotation


def _verified(store: ObjectStore, profile: ClusterProfile, entry: catalogue.CatalogueEntry) -> list[str]:
    problems = list(catalogue.verify_backup(store, profile.storage, entry).problems)
    drills = entry.manifest.drills
    if drills and not drills[-1].passed:
        problems.append(f"its last restore drill failed: {drills[-1].message}")
    return problems


@policy.task("find-recent-verified-backup", timeout_s=300)
def find_recent_verified_backup(
    profile: ClusterProfile, *, max_age_h: float, now: datetime
) -> tuple[str | None, list[str]]:
    """The newest backup younger than `max_age_h` whose files match their manifest (and whose last
    drill, if any, passed): (its id, notes). (None, notes) when there is none."""
    notes: list[str] = []
    with ObjectStore(profile.storage) as store:
        entries = catalogue.list_backups(store, profile.storage, cluster=profile.name)
        recent = [e for e in entries if now - e.taken_at <= timedelta(hours=max_age_h)]
        for entry in reversed(recent):
            problems = _verified(store, profile, entry)
            if not problems:
                return entry.manifest.backup_id, notes
            notes.append(f"Backup {entry.manifest.backup_id} is not usable: {' '.join(problems)}")
    if not recent:
        notes.append(f"No backup of {profile.name} is younger than {max_age_h:g} h.")
    return None, notes


@policy.task("latest-valid-backup", timeout_s=300)
def latest_valid_backup(profile: ClusterProfile, *, ocp_version: str | None, look_at: int = 3) -> str | None:
    """The newest backup (of `ocp_version` when known) whose checksums verify; None when none of the
    newest `look_at` does."""
    with ObjectStore(profile.storage) as store:
        entries = catalogue.list_backups(
            store, profile.storage, cluster=profile.name, ocp_version=ocp_version
        )
        for entry in list(reversed(entries))[:look_at]:
            if not _verified(store, profile, entry):
                return entry.manifest.backup_id
    return None


@policy.task("save-shutdown-state", timeout_s=300)
def save_shutdown_state(profile: ClusterProfile, *, state: lifecycle.ShutdownState) -> str:
    """Write the state next to the backups (before any host goes down); returns its s3:// URI."""
    location = profile.storage.snapshots
    key = lifecycle.state_key(prefix=location.prefix, cluster=profile.name)
    with ObjectStore(profile.storage) as store:
        store.put_bytes(
            location.bucket,
            key,
            state.to_json_bytes(),
            kms_key_id=location.kms_key_id,
            content_type="application/json",
        )
    return f"s3://{location.bucket}/{key}"


@policy.task("load-shutdown-state", timeout_s=300)
def load_shutdown_state(profile: ClusterProfile) -> lifecycle.ShutdownState | None:
    """The state graceful-shutdown recorded, or None."""
    location = profile.storage.snapshots
    key = lifecycle.state_key(prefix=location.prefix, cluster=profile.name)
    with ObjectStore(profile.storage) as store:
        try:
            data = store.get_bytes(location.bucket, key)
        except errors.NotFoundError:
            return None
    try:
        return lifecycle.ShutdownState.from_json_bytes(data)
    except ValueError as exc:
        raise errors.IntegrityError(
            f"s3://{location.bucket}/{key} is not a shutdown state etcdguard wrote ({exc}); delete it."
        ) from exc


@policy.task("shutdown -h 1", timeout_s=300, retries=1)
def schedule_host_shutdown(profile: ClusterProfile, *, record: lifecycle.MachineRecord) -> str:
    """`sudo shutdown -h 1` on the host over SSH (guide 2 step 2): pods stop cleanly, the host
    powers off a minute later. Idempotent: a second run schedules the same power-off."""
    if not record.address:
        raise errors.NotFoundError(f"Machine {record.machine} has no InternalIP address to SSH to.")
    with HostSession(profile.ssh, address=record.address, node=record.node or record.machine) as host:
        result = host.run(["shutdown", "-h", "1"], sudo=True, timeout=60)
    return (result.stdout + result.stderr).strip()


@policy.task("stop-instances", timeout_s=300)
def stop_instances(profile: ClusterProfile, *, instance_ids: Sequence[str]) -> None:
    with Cloud(cloud_settings(profile)) as cloud:
        cloud.stop(list(instance_ids))


@policy.task("start-instances", timeout_s=300)
def start_instances(profile: ClusterProfile, *, instance_ids: Sequence[str]) -> None:
    with Cloud(cloud_settings(profile)) as cloud:
        cloud.start(list(instance_ids))


def describe_instances(profile: ClusterProfile, instance_ids: Sequence[str]) -> dict[str, str]:
    """instance id -> state; an id EC2 does not know maps to "missing". A plain read."""
    with Cloud(cloud_settings(profile)) as cloud:
        try:
            return {i.instance_id: i.state for i in cloud.describe(list(instance_ids))}
        except errors.NotFoundError:
            out = {}
            for instance_id in instance_ids:  # one by one, to tell which one is unknown
                try:
                    found = cloud.describe([instance_id])
                except errors.NotFoundError:
                    out[instance_id] = "missing"
                else:
                    out[instance_id] = found[0].state if found else "missing"
            return out


@policy.task("wait-for-instances", timeout_s=7200, retries=0)
def wait_for_instances(
    profile: ClusterProfile,
    *,
    instance_ids: Sequence[str],
    wanted: str,
    timeout_s: float,
    poll_s: float = 2.0,
) -> dict[str, str]:
    """Poll EC2 until every instance is `wanted` (or gone for good) or the timeout; returns the
    last states seen (the caller decides what a straggler means)."""
    logger = get_run_logger()
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            states = describe_instances(profile, instance_ids)
        except errors.TransientError as exc:
            logger.warning("%s", exc)
            states = {}
        waiting = [i for i in instance_ids if states.get(i) not in (wanted, "terminated", "missing")]
        if not waiting or time.monotonic() > deadline:
            return states
        time.sleep(poll_s)


@policy.task("clear-shutdown-state", timeout_s=300)
def clear_shutdown_state(profile: ClusterProfile) -> None:
    """Remove the shutdown state once the cluster is back, so a stale one never misleads a later run."""
    location = profile.storage.snapshots
    with ObjectStore(profile.storage) as store:
        store.delete_keys(
            location.bucket, [lifecycle.state_key(prefix=location.prefix, cluster=profile.name)]
        )
