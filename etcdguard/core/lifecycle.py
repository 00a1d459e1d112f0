"""Pure decisions of graceful shutdown and restart (guide chapters 2 and 3).

- `inventory`: the cluster's machines as the restart will need them (instance id from
  `spec.providerID` `aws:///<zone>/<id>`, node, role, address), recorded at shutdown because
  the API is down when the cluster is.
- `ShutdownState`: that record, stored next to the backups (`state_key`).
- `assess_cert_expiry`: `kube-apiserver-to-kubelet-signer`'s not-after annotation -> the last safe
  restart date, and whether it is too close to shut down.
- `assess_health`: which nodes are not Ready and which ClusterOperators are Degraded.

Plain data in, plain data out: no I/O, explicit `now`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Literal

import pydantic

from etcdguard.core import keys

__all__ = [
    "SIGNER_ANNOTATION",
    "CertExpiry",
    "ClusterHealth",
    "MachineRecord",
    "ShutdownState",
    "assess_cert_expiry",
    "assess_health",
    "inventory",
    "node_ready",
    "parse_provider_id",
    "state_key",
]

SIGNER_ANNOTATION = "auth.openshift.io/certificate-not-after"
_PROVIDER_ID = re.compile(r"^aws:///(?P<zone>[^/]*)/(?P<id>i-[0-9a-zA-Z]+)$")
_MASTER_LABEL = "node-role.kubernetes.io/master"
_ROLE_LABEL = "machine.openshift.io/cluster-api-machine-role"

Role = Literal["master", "worker"]


def parse_provider_id(provider_id: str) -> tuple[str, str]:
    """`aws:///us-east-1a/i-0fdb85790d76d0c3f` -> (`us-east-1a`, `i-0fdb85790d76d0c3f`)."""
    match = _PROVIDER_ID.match(provider_id or "")
    if match is None:
        raise ValueError(
            f"providerID {provider_id!r} is not an AWS one ('aws:///<zone>/i-...'); "
            "graceful-restart starts machines through EC2 only."
        )
    return match["zone"], match["id"]


class MachineRecord(pydantic.BaseModel):
    """One machine of the cluster, as graceful-restart needs it when the API is down."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    machine: str
    node: str | None
    role: Role
    instance_id: str
    zone: str
    address: str | None
    """The node's InternalIP (SSH address)."""


class ShutdownState(pydantic.BaseModel):
    """What graceful-shutdown recorded for graceful-restart: `<prefix>/_etcdguard/<cluster>/shutdown-state.json`."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    cluster: str
    ocp_version: str | None
    recorded_at: datetime
    flow_run_id: str | None = None
    cert_not_after: datetime | None = None
    machines: tuple[MachineRecord, ...]

    def to_json_bytes(self) -> bytes:
        return self.model_dump_json(indent=2).encode()

    @classmethod
    def from_json_bytes(cls, data: bytes) -> ShutdownState:
        return cls.model_validate_json(data)


def state_key(*, prefix: str, cluster: str) -> str:
    """Where the shutdown state of `cluster` is kept in the snapshots bucket. `_etcdguard` can never
    be a cluster name (DNS-1123 label), so the key is outside every cluster's backup prefix and
    neither the catalogue nor retention ever sees it."""
    parts = [keys.validate_prefix(prefix)] if prefix else []
    parts += ["_etcdguard", keys.validate_cluster_name(cluster), "shutdown-state.json"]
    return "/".join(parts)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _addresses(obj: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for entry in _mapping(obj.get("status")).get("addresses") or []:
        entry = _mapping(entry)
        if isinstance(entry.get("type"), str) and isinstance(entry.get("address"), str):
            out.setdefault(entry["type"], entry["address"])
    return out


def inventory(
    machines: Iterable[Mapping[str, Any]], nodes: Iterable[Mapping[str, Any]]
) -> tuple[MachineRecord, ...]:
    """Every Machine with an instance, ordered workers first then masters, by name. Raises
    ValueError naming a Machine whose providerID is missing or not an AWS one."""
    node_by_name = {str(_mapping(n.get("metadata")).get("name")): n for n in nodes}
    records = []
    for machine in machines:
        meta, spec = _mapping(machine.get("metadata")), _mapping(machine.get("spec"))
        name = str(meta.get("name") or "")
        provider_id = spec.get("providerID")
        if not provider_id:
            raise ValueError(
                f"Machine {name} has no spec.providerID (it is still provisioning); wait until it is "
                "Running, or delete it, before shutting the cluster down."
            )
        zone, instance_id = parse_provider_id(str(provider_id))
        node_name = _mapping(_mapping(machine.get("status")).get("nodeRef")).get("name")
        labels = _mapping(meta.get("labels"))
        node = node_by_name.get(str(node_name)) if node_name else None
        is_master = labels.get(_ROLE_LABEL) == "master" or (
            node is not None and _MASTER_LABEL in _mapping(_mapping(node.get("metadata")).get("labels"))
        )
        address = _addresses(machine).get("InternalIP") or (
            _addresses(node).get("InternalIP") if node else None
        )
        records.append(
            MachineRecord(
                machine=name,
                node=str(node_name) if node_name else None,
                role="master" if is_master else "worker",
                instance_id=instance_id,
                zone=zone,
                address=address,
            )
        )
    return tuple(sorted(records, key=lambda r: (r.role == "master", r.machine)))


@dataclasses.dataclass(frozen=True)
class CertExpiry:
    """The kubelet signer's expiry against the shutdown margin."""

    not_after: datetime
    remaining: timedelta
    margin: timedelta
    too_close: bool
    message: str

    @property
    def last_safe_restart(self) -> datetime:
        """Restart on or before this instant (guide 2 step 1); after it, kubelet certificates expire."""
        return self.not_after


def assess_cert_expiry(annotation: str | None, *, now: datetime, margin_days: float) -> CertExpiry:
    """Read the `auth.openshift.io/certificate-not-after` annotation (RFC 3339). Raises ValueError
    when it is missing or unreadable."""
    if not annotation:
        raise ValueError(
            f"Secret kube-apiserver-to-kubelet-signer has no {SIGNER_ANNOTATION} annotation, so the "
            "certificate expiry date is unknown; check it with `oc -n openshift-kube-apiserver-operator "
            "get secret kube-apiserver-to-kubelet-signer -o yaml`."
        )
    try:
        not_after = datetime.fromisoformat(annotation.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{SIGNER_ANNOTATION} {annotation!r} is not an RFC 3339 date.") from None
    if not_after.tzinfo is None:
        raise ValueError(f"{SIGNER_ANNOTATION} {annotation!r} has no time zone.")
    margin = timedelta(days=margin_days)
    remaining = not_after - now
    too_close = remaining < margin
    days = remaining.total_seconds() / 86400
    when = f"{not_after:%Y-%m-%d %H:%M:%S} UTC"
    if remaining <= timedelta(0):
        message = (
            f"The kubelet signer expired on {when} ({-days:.1f} days ago): a restart needs the "
            "recover-expired-certs flow (guide 4.3.3)."
        )
    elif too_close:
        message = (
            f"The kubelet signer expires on {when}, in {days:.1f} days, less than the "
            f"{margin_days:g}-day margin (profile shutdown.min_cert_margin_days): restart before that date."
        )
    else:
        message = f"Restart the cluster on or before {when} ({days:.1f} days from now), when the kubelet signer expires."
    return CertExpiry(
        not_after=not_after, remaining=remaining, margin=margin, too_close=too_close, message=message
    )


def node_ready(node: Mapping[str, Any]) -> tuple[str, str]:
    """The node's Ready status ("True" / "False" / "Unknown", "Unknown" when absent) and a reason text."""
    for cond in _mapping(node.get("status")).get("conditions") or []:
        cond = _mapping(cond)
        if cond.get("type") == "Ready":
            status = str(cond.get("status") or "Unknown")
            why = str(cond.get("reason") or "")
            if cond.get("message"):
                why += f": {cond['message']}"
            return status, why
    return "Unknown", "no Ready condition"


@dataclasses.dataclass(frozen=True)
class ClusterHealth:
    """What stands between the cluster and "healthy" (guide 3 step 7)."""

    ready: tuple[str, ...]
    not_ready: dict[str, str]
    """node -> "Ready=<status> (<reason>)"; nodes expected but absent say so."""
    degraded: dict[str, str]
    """ClusterOperator -> its Degraded message."""

    @property
    def healthy(self) -> bool:
        return not self.not_ready and not self.degraded

    def problems(self) -> list[str]:
        out = [f"node {name} is not Ready: {why}" for name, why in sorted(self.not_ready.items())]
        out += [f"ClusterOperator {name} is Degraded: {why}" for name, why in sorted(self.degraded.items())]
        return out


def assess_health(
    nodes: Sequence[Mapping[str, Any]],
    cluster_operators: Sequence[Mapping[str, Any]],
    *,
    expected_nodes: Iterable[str] = (),
) -> ClusterHealth:
    """Nodes not Ready (and expected nodes that are missing), ClusterOperators Degraded=True."""
    ready, not_ready = [], {}
    seen = set()
    for node in nodes:
        name = str(_mapping(node.get("metadata")).get("name"))
        seen.add(name)
        status, why = node_ready(node)
        if status == "True":
            ready.append(name)
        else:
            not_ready[name] = f"Ready={status} ({why})" if why else f"Ready={status}"
    for name in expected_nodes:
        if name not in seen:
            not_ready[name] = "the Node object does not exist"
    degraded = {}
    for co in cluster_operators:
        for cond in _mapping(co.get("status")).get("conditions") or []:
            cond = _mapping(cond)
            if cond.get("type") == "Degraded" and cond.get("status") == "True":
                name = str(_mapping(co.get("metadata")).get("name"))
                text = str(cond.get("message") or cond.get("reason") or "Degraded")
                degraded[name] = text if len(text) <= 400 else text[:397] + "..."
    return ClusterHealth(ready=tuple(sorted(ready)), not_ready=not_ready, degraded=degraded)
