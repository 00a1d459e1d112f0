"""Tasks of the replace-etcd-member flow (guide 4.2): each does one thing against one system,
checks the current state first (so a re-run skips what is done) and retries only transient
failures (`tasks._policy`). Machine re-creation and forced redeployments are in `tasks.kube`.

`observe` is a plain read (no side effect, no Prefect task) that the flow also calls while it
waits; `etcdctl` runs in a healthy etcd pod's `etcdctl` container, as `oc rsh` does.
"""

from __future__ import annotations

import dataclasses
import shlex
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from prefect import get_run_logger

from etcdguard.clients.hosts import HostSession
from etcdguard.clients.kube import KubeClient
from etcdguard.clients.objectstore import ObjectStore
from etcdguard.core import csr, errors, member_plan, member_steps, openshift
from etcdguard.core.profile import ClusterProfile
from tasks import _policy as policy
from tasks import _wait, catalogue

__all__ = [
    "ETCD_NAMESPACE",
    "MACHINE_NAMESPACE",
    "RERUN_HINT",
    "ClusterView",
    "delete_member_secrets",
    "move_etcd_aside",
    "newest_backup",
    "observe",
    "poll",
    "read_cluster",
    "remove_member",
    "verify_members",
    "wait_etcd_pods",
]

ETCD_NAMESPACE = openshift.ETCD_NAMESPACE
MACHINE_NAMESPACE = openshift.MACHINE_NAMESPACE
RERUN_HINT = "run replace-etcd-member again with member=<node>: it skips the steps already done."
SECRET_KINDS = ("peer", "serving", "serving-metrics")


def poll(what: str, probe: Callable[[], tuple[bool, str]], *, timeout: float, first: float = 1.0) -> str:
    """`tasks._wait.poll` with this flow's re-run advice."""
    return _wait.poll(what, probe, timeout=timeout, first=first, rerun_hint=RERUN_HINT)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClusterView:
    """One read of what the diagnosis needs."""

    etcd: dict[str, Any]
    nodes: tuple[dict[str, Any], ...]
    machines: tuple[dict[str, Any], ...]
    etcd_pods: tuple[dict[str, Any], ...]
    csrs: tuple[csr.CsrView, ...]
    members: tuple[member_plan.Member, ...] | None
    """The member list as a healthy etcd pod reads it; None when no pod answered."""
    health: dict[str, bool]
    pod: str | None
    """The etcd pod `members` and `health` were read in."""

    @property
    def control_plane(self) -> dict[str, str]:
        """Control-plane node -> InternalIP."""
        out = {}
        for node in self.nodes:
            if openshift.is_control_plane_node(node):
                ip = next(
                    (
                        a["address"]
                        for a in node.get("status", {}).get("addresses") or []
                        if a["type"] == "InternalIP"
                    ),
                    None,
                )
                if ip:
                    out[str(node["metadata"]["name"])] = str(ip)
        return out


def _etcd_ready(pod: dict[str, Any]) -> bool:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    etcd = [s for s in statuses if s.get("name") == "etcd"]
    return (pod.get("status") or {}).get("phase") == "Running" and bool(etcd) and bool(etcd[0].get("ready"))


def _healthy_pods(pods: list[dict[str, Any]], *, avoid: str | None) -> list[str]:
    """4.2.4.x step 1a: etcd pods NOT on the affected node, running with etcd ready."""
    return [
        str(p["metadata"]["name"])
        for p in pods
        if str(p["metadata"]["name"]).startswith("etcd-")
        and p["spec"].get("nodeName") != avoid
        and _etcd_ready(p)
    ]


def _etcdctl(kube: KubeClient, pod: str, *args: str) -> tuple[int, str, str]:
    return kube.exec(ETCD_NAMESPACE, pod, "etcdctl", ["etcdctl", *args])


def _members_in(
    kube: KubeClient, pods: list[dict[str, Any]], *, avoid: str | None
) -> tuple[str, list[member_plan.Member], dict[str, bool]] | None:
    """(pod, members, {client URL: healthy}) read in the first healthy pod that answers."""
    for pod in _healthy_pods(pods, avoid=avoid):
        try:
            code, out, _ = _etcdctl(kube, pod, "member", "list", "-w", "json")
        except errors.EtcdguardError:
            continue
        if code != 0:
            continue
        members = member_plan.parse_members(out)
        # Exit 1 with "unhealthy cluster" when any endpoint is unhealthy; the JSON is still printed.
        _, health_out, _ = _etcdctl(kube, pod, "endpoint", "health", "--cluster", "-w", "json")
        return pod, members, member_plan.health_urls(health_out)
    return None


def observe(profile: ClusterProfile, *, avoid: str | None = None) -> ClusterView:
    """Read the etcd CR, Nodes, Machines, etcd pods, CSRs and the member list (in an etcd pod not
    on `avoid`). Raises TransientError while the API does not answer."""
    with KubeClient(profile.api) as kube:
        etcd = kube.get("Etcd", "cluster")
        nodes = kube.list_objects("Node")
        machines = kube.list_objects("Machine", namespace=MACHINE_NAMESPACE)
        pods = kube.list_objects("Pod", namespace=ETCD_NAMESPACE, labels="app=etcd")
        csrs = kube.list_objects("CertificateSigningRequest")
        found = _members_in(kube, pods, avoid=avoid)
    pod, members, health = found if found is not None else (None, None, {})
    return ClusterView(
        etcd=etcd,
        nodes=tuple(nodes),
        machines=tuple(machines),
        etcd_pods=tuple(pods),
        csrs=tuple(csr.CsrView.from_object(c) for c in csrs),
        members=tuple(members) if members is not None else None,
        health=health,
        pod=pod,
    )


@policy.task("read-cluster", timeout_s=300)
def read_cluster(profile: ClusterProfile, *, avoid: str | None = None) -> ClusterView:
    """Read-only: `observe`, as a task so that the run shows what the diagnosis saw."""
    return observe(profile, avoid=avoid)


@policy.task("newest-backup", timeout_s=300)
def newest_backup(profile: ClusterProfile) -> tuple[str, datetime] | None:
    """The newest complete backup of the cluster in the catalogue: (backup id, taken at)."""
    with ObjectStore(profile.storage) as store:
        entries = catalogue.list_backups(store, profile.storage, cluster=profile.name)
    if not entries:
        return None
    return entries[-1].manifest.backup_id, entries[-1].taken_at


@policy.task("move-etcd-aside", timeout_s=1800)
def move_etcd_aside(profile: ClusterProfile, *, node: str, address: str, timeout: float = 120.0) -> list[str]:
    """4.2.4.2 step 1 on the host: `mv /etc/kubernetes/manifests/etcd-pod.yaml /var/lib/etcd-backup/`,
    wait for the etcd containers to stop, `mv /var/lib/etcd/ /tmp` (to `/tmp/etcd-<time>` when an
    earlier move already used `/tmp/etcd`). Each move is skipped when already done."""
    done = []
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    with HostSession(profile.ssh, address=address, node=node) as host:
        out = host.run(
            [
                "sh",
                "-c",
                "set -eu; mkdir -p /var/lib/etcd-backup; "
                "if [ -f /etc/kubernetes/manifests/etcd-pod.yaml ]; then "
                "mv /etc/kubernetes/manifests/etcd-pod.yaml /var/lib/etcd-backup/; echo moved; fi",
            ],
            sudo=True,
        ).stdout
        done.append(
            "moved /etc/kubernetes/manifests/etcd-pod.yaml to /var/lib/etcd-backup/"
            if "moved" in out
            else "etcd-pod.yaml was already out of /etc/kubernetes/manifests"
        )

        empty_reads = 0

        def stopped() -> tuple[bool, str]:
            nonlocal empty_reads
            ids = host.run(
                ["crictl", "ps", "--label", "io.kubernetes.container.name=etcd", "-q"], sudo=True
            ).stdout.split()
            empty_reads = empty_reads + 1 if not ids else 0
            return empty_reads >= 2, f"{len(ids)} etcd container(s) still running on {node}"

        poll(f"the etcd containers of {node} to stop", stopped, timeout=timeout)
        # The guide's own destination (`mv /var/lib/etcd/ /tmp`), on the host, as root.
        script = (
            "set -eu; if [ -e /var/lib/etcd ]; then dest=/tmp/etcd; "
            f'if [ -e "$dest" ]; then dest={shlex.quote("/tmp/etcd-" + stamp)}; fi; '  # noqa: S108
            'mv /var/lib/etcd/ "$dest"; echo "$dest"; fi'
        )
        moved = host.run(["sh", "-c", script], sudo=True).stdout.strip()
    done.append(f"moved /var/lib/etcd/ to {moved}" if moved else "/var/lib/etcd was already moved aside")
    get_run_logger().info("On %s: %s.", node, "; ".join(done))
    return done


@policy.task("remove-member", timeout_s=300)
def remove_member(profile: ClusterProfile, *, node: str, address: str) -> str:
    """4.2.4.x: `etcdctl member remove <id>` in a healthy etcd pod not on `node`, for the member
    `member_plan.plan_removal` picks (name AND peer URL); skipped when it is already gone."""
    logger = get_run_logger()
    with KubeClient(profile.api) as kube:
        pods = kube.list_objects("Pod", namespace=ETCD_NAMESPACE, labels="app=etcd")
        found = _members_in(kube, pods, avoid=node)
        if found is None:
            raise errors.TransientError(
                f"No healthy etcd pod other than etcd-{node} answered `etcdctl member list`; retrying."
            )
        pod, members, health = found
        healthy = {url for url, ok in health.items() if ok}
        target = member_plan.plan_removal(members, node=node, address=address, healthy_urls=healthy)
        if target is None:
            logger.info(
                "The member of %s is not in the member list (read in %s): already removed.", node, pod
            )
            return f"the member of {node} was already removed"
        code, out, err = _etcdctl(kube, pod, "member", "remove", target.hex_id)
        if code != 0:
            raise errors.RemoteCommandFailed(
                f"etcdctl member remove {target.hex_id} failed in {pod}.", exit_code=code, output=out + err
            )
        code, out, err = _etcdctl(kube, pod, "member", "list", "-w", "json")
        if code == 0 and any(m.id == target.id for m in member_plan.parse_members(out)):
            raise errors.PermanentError(
                f"etcdctl reported member {target.hex_id} removed, but {pod} still lists it; check "
                "`etcdctl member list -w table` by hand."
            )
    logger.info("Removed etcd member %s through %s.", target.describe(), pod)
    return f"removed member {target.describe()} through {pod}"


@policy.task("delete-member-secrets", timeout_s=300)
def delete_member_secrets(profile: ClusterProfile, *, node: str) -> list[str]:
    """4.2.4.x: delete `etcd-peer-<node>`, `etcd-serving-<node>`, `etcd-serving-metrics-<node>`;
    each one already gone is skipped."""
    done = []
    with KubeClient(profile.api) as kube:
        for kind in SECRET_KINDS:
            name = f"etcd-{kind}-{node}"
            try:
                kube.delete("Secret", name, namespace=ETCD_NAMESPACE)
                done.append(f"deleted secret {name}")
            except errors.NotFoundError:
                done.append(f"secret {name} was already gone")
    get_run_logger().info("%s.", "; ".join(done))
    return done


@policy.task("wait-etcd-pods", timeout_s=7200)
def wait_etcd_pods(profile: ClusterProfile, *, count: int, timeout: float) -> int:
    """4.2.4.1 verification: wait up to `timeout` for `count` running, ready etcd pods; returns how
    many there are at the end (fewer is not an error: the caller forces a redeployment)."""
    seen = 0
    deadline = time.monotonic() + timeout
    while True:
        try:
            with KubeClient(profile.api) as kube:
                pods = kube.list_objects("Pod", namespace=ETCD_NAMESPACE, labels="app=etcd")
            seen = len(_healthy_pods(pods, avoid=None))
        except errors.TransientError:
            pass
        if seen >= count or time.monotonic() > deadline:
            return seen
        time.sleep(2)


@policy.task("verify-members", timeout_s=7200)
def verify_members(profile: ClusterProfile, *, timeout: float) -> list[str]:
    """Verification: one started member per control-plane node (`etcdctl member list`) and every
    endpoint healthy (`etcdctl endpoint health --cluster`). More members than control-plane nodes
    stops the flow at once, naming them: etcdguard never guesses which to remove."""
    lines: list[str] = []

    def probe() -> tuple[bool, str]:
        view = observe(profile)
        if view.members is None:
            return False, "no healthy etcd pod answered"
        check = member_steps.check_members(view.members, view.health, control_plane=view.control_plane)
        if check.extra:
            raise errors.PermanentError(
                f"The etcd member list does not match the control-plane nodes: {check.message}. Remove the members "
                "that are not needed by hand, carefully (guide 4.2.4.1, last step); etcdguard does not guess."
            )
        if check.done:
            lines[:] = [f"member {m.describe()}" for m in view.members] + [
                f"endpoint {url}: {'healthy' if ok else 'UNHEALTHY'}"
                for url, ok in sorted(view.health.items())
            ]
        return check.done, check.message

    poll("three started, healthy etcd members", probe, timeout=timeout)
    return lines
