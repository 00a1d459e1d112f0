"""What the cluster's API objects say about taking a backup now: pure decisions, explicit `now`.

`assess_backup` reads the objects the preflight task fetched (ClusterVersion, Nodes, the `etcd`
operator CR, etcd pods, ClusterOperators, Proxy, APIServer) and either refuses with a sentence
that says why and what to do, or returns a `BackupPreflight`: the z-stream, the proxy variables
to export, whether encryption is on, and the control-plane nodes a backup may be taken on,
healthiest first. The guide takes ONE backup per cluster from one healthy control-plane host.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from etcdguard.core import errors, types, versions

__all__ = [
    "BACKUP_OPERATORS",
    "BackupPreflight",
    "NodeCandidate",
    "assess_backup",
    "condition",
    "proxy_env",
    "unhealthy_members",
]

Obj = Mapping[str, Any]

# cluster-backup.sh refuses while any of these ClusterOperators is Progressing (without --force).
BACKUP_OPERATORS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd")
_MASTER_LABELS = ("node-role.kubernetes.io/master", "node-role.kubernetes.io/control-plane")
_UNHEALTHY = re.compile(r",\s*(\S+?)\s+(?:is unhealthy|has not started)")


@dataclasses.dataclass(frozen=True, kw_only=True)
class NodeCandidate:
    """A control-plane node a backup may be taken on."""

    name: str
    address: str
    """InternalIP: what SSH connects to."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class BackupPreflight:
    """The read-only checks passed; what the backup needs to know."""

    ocp_version: types.OcpVersion
    cluster_id: uuid.UUID
    encryption: str | None
    proxy_env: dict[str, str]
    candidates: tuple[NodeCandidate, ...]
    notes: tuple[str, ...] = ()
    """Things the admin should know that did not stop the backup (e.g. a member is down)."""


def _items(value: Any) -> list[Obj]:
    if isinstance(value, Mapping):
        value = value.get("items", [])
    if not isinstance(value, Sequence) or isinstance(value, str):
        return []
    return [item for item in value if isinstance(item, Mapping)]


def _get(obj: Obj, *path: str) -> Any:
    current: Any = obj
    for part in path:
        if not isinstance(current, Mapping):
            return None
        current = current.get(part)
    return current


def condition(obj: Obj, kind: str) -> Obj | None:
    """The status condition of type `kind`, or None."""
    for item in _items(_get(obj, "status", "conditions")):
        if item.get("type") == kind:
            return item
    return None


def unhealthy_members(etcd: Obj) -> set[str]:
    """Node names the etcd operator's `EtcdMembersAvailable` message calls unhealthy or unstarted."""
    found = condition(etcd, "EtcdMembersAvailable")
    message = str(found.get("message", "")) if found else ""
    return {name for name in _UNHEALTHY.findall(message) if not name.startswith("NAME-PENDING-")}


def _quorum(etcd: Obj) -> None:
    found = condition(etcd, "EtcdMembersAvailable")
    if found is None:
        raise errors.PreflightRefused(
            "The etcd operator reports no EtcdMembersAvailable condition, so etcd's health is unknown; "
            "check `oc get etcd -o yaml` and the etcd operator's logs before taking a backup."
        )
    if found.get("status") != "True":
        raise errors.PreflightRefused(
            f"etcd has lost quorum ({found.get('message') or found.get('reason') or 'no message'}): a "
            "backup cannot be taken and the cluster needs restoring. Run the restore-cluster flow with "
            "the newest verified backup of this cluster's z-stream (guide 4.3.2)."
        )


def proxy_env(proxy: Obj | None) -> dict[str, str]:
    """HTTP_PROXY/HTTPS_PROXY/NO_PROXY from the cluster Proxy's status (empty when no proxy)."""
    status = _get(proxy or {}, "status") or {}
    names = {"httpProxy": "HTTP_PROXY", "httpsProxy": "HTTPS_PROXY", "noProxy": "NO_PROXY"}
    return {env: str(status[field]) for field, env in names.items() if status.get(field)}


def _operators(cluster_operators: Sequence[Obj]) -> None:
    by_name = {str(_get(co, "metadata", "name")): co for co in cluster_operators}
    busy = []
    for name in BACKUP_OPERATORS:
        co = by_name.get(name)
        progressing = condition(co, "Progressing") if co else None
        if progressing is None:
            raise errors.PreflightRefused(
                f"ClusterOperator {name} has no Progressing condition, so cluster-backup.sh would refuse "
                "('Could not find the status'); check that the API and the operator are running."
            )
        if progressing.get("status") != "False":
            busy.append(f"{name} ({progressing.get('message') or progressing.get('status')})")
    if busy:
        raise errors.PreflightRefused(
            f"These operators are Progressing: {'; '.join(busy)}. A reliable backup requires that no "
            "rollout is in progress; the next scheduled run will try again, or run with force=True to "
            "take a possibly dirty backup now."
        )


def _is_ready(node: Obj) -> bool:
    ready = condition(node, "Ready")
    taints = _items(_get(node, "spec", "taints"))
    unreachable = any(str(t.get("key", "")).startswith("node.kubernetes.io/unreachable") for t in taints)
    return bool(ready and ready.get("status") == "True" and not unreachable)


def _address(node: Obj) -> str | None:
    for item in _items(_get(node, "status", "addresses")):
        if item.get("type") == "InternalIP" and item.get("address"):
            return str(item["address"])
    return None


def _etcd_pod_ready(pods: Sequence[Obj], node: str) -> bool:
    for pod in pods:
        if _get(pod, "spec", "nodeName") != node or _get(pod, "metadata", "labels", "app") != "etcd":
            continue
        statuses = _items(_get(pod, "status", "containerStatuses"))
        etcd = [s for s in statuses if s.get("name") == "etcd"]
        return _get(pod, "status", "phase") == "Running" and bool(etcd) and bool(etcd[0].get("ready"))
    return False


def _candidates(nodes: Sequence[Obj], pods: Sequence[Obj], unhealthy: set[str]) -> list[NodeCandidate]:
    found = []
    for node in nodes:
        labels = _get(node, "metadata", "labels") or {}
        name = str(_get(node, "metadata", "name"))
        if not any(label in labels for label in _MASTER_LABELS):
            continue
        address = _address(node)
        if name in unhealthy or not _is_ready(node) or address is None or not _etcd_pod_ready(pods, name):
            continue
        found.append(NodeCandidate(name=name, address=address))
    return sorted(found, key=lambda c: c.name)


def assess_backup(
    *,
    clusterversion: Obj,
    nodes: Sequence[Obj],
    etcd: Obj,
    etcd_pods: Sequence[Obj],
    cluster_operators: Sequence[Obj],
    proxy: Obj | None,
    apiserver: Obj | None,
    now: datetime,
    min_age: timedelta,
    force: bool,
) -> BackupPreflight:
    """Refuse (`PreflightRefused`) or say how to take the backup; see the module docstring.

    `force` skips the checks the guide lets an admin override (cluster age, operators
    Progressing); it never skips quorum, an upgrade in progress or the need for a healthy node.
    """
    reason = versions.upgrade_reason(clusterversion)
    if reason is not None:
        raise errors.PreflightRefused(
            f"The cluster is upgrading: {reason}. Back up after the upgrade completes (the post-upgrade "
            "trigger does this automatically)."
        )
    version = versions.current_zstream(clusterversion)
    notes = []
    age = now - versions.install_time(clusterversion)
    if age < min_age:
        message = (
            f"The cluster was installed {age.total_seconds() / 3600:.1f} h ago; the guide requires a "
            f"backup only after the first certificate rotation, {min_age.total_seconds() / 3600:g} h "
            "after installation (a backup from before it cannot be restored)."
        )
        if not force:
            raise errors.PreflightRefused(message + " Wait, or run with force=True.")
        notes.append("forced: " + message)
    _quorum(etcd)
    if force:
        notes.append("forced: ClusterOperator Progressing checks skipped (cluster-backup.sh --force).")
    else:
        _operators(cluster_operators)
    unhealthy = unhealthy_members(etcd)
    if unhealthy:
        notes.append(f"etcd members not healthy, not used for the backup: {', '.join(sorted(unhealthy))}.")
    candidates = _candidates(nodes, etcd_pods, unhealthy)
    if not candidates:
        raise errors.PreflightRefused(
            "No control-plane node is healthy enough to take the backup on (Ready, no unreachable taint, "
            "etcd pod running and ready, member healthy). Check `oc get nodes` and "
            "`oc get pods -n openshift-etcd`; replace the failed member (replace-etcd-member flow)."
        )
    cluster_id_text = _get(clusterversion, "spec", "clusterID")
    try:
        cluster_id = uuid.UUID(str(cluster_id_text))
    except ValueError as exc:
        raise errors.PreflightRefused(
            f"ClusterVersion spec.clusterID {cluster_id_text!r} is not a UUID; the backup could not be "
            "tied to its cluster. Check `oc get clusterversion version -o yaml`."
        ) from exc
    encryption = _get(apiserver or {}, "spec", "encryption", "type") or None
    return BackupPreflight(
        ocp_version=version,
        cluster_id=cluster_id,
        encryption=str(encryption) if encryption else None,
        proxy_env=proxy_env(proxy),
        candidates=tuple(candidates),
        notes=tuple(notes),
    )
