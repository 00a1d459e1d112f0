"""OpenShift 4.8 vocabulary and the small object rules every flow shares.

Namespaces, labels and annotations are spelled here once. The machine rules are the guide's own:
re-create a control-plane Machine from its saved YAML with `status`, the server-set metadata and
`spec.providerID` removed, under the old name's base and the next free number (4.2.4.1 step 3c,
4.3.2.2 step 11c); a forced redeployment is `spec.forceRedeploymentReason: <prefix>-$(date
--rfc-3339=ns)` and is done when every node is at a revision newer than the one before.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from etcdguard.core import errors, preflight

__all__ = [
    "ETCD_NAMESPACE",
    "MACHINE_NAMESPACE",
    "MACHINE_ROLE_LABEL",
    "MASTER_LABELS",
    "clean_machine",
    "internal_ip",
    "is_control_plane_machine",
    "is_control_plane_node",
    "next_machine_name",
    "node_ready",
    "redeploy_reason",
    "rollout_done",
]

Obj = Mapping[str, Any]

ETCD_NAMESPACE = "openshift-etcd"
MACHINE_NAMESPACE = "openshift-machine-api"
MASTER_LABELS = ("node-role.kubernetes.io/master", "node-role.kubernetes.io/control-plane")
MACHINE_ROLE_LABEL = "machine.openshift.io/cluster-api-machine-role"

_MACHINE_INDEX = re.compile(r"^(?P<base>.*-)(?P<index>\d+)$")
# Set by the API server (selfLink too, until Kubernetes 1.20); a create must not carry them.
_SERVER_METADATA = (
    "annotations",
    "generation",
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "managedFields",
    "selfLink",
)


def is_control_plane_node(node: Obj) -> bool:
    labels = (node.get("metadata") or {}).get("labels") or {}
    return any(label in labels for label in MASTER_LABELS)


def is_control_plane_machine(machine: Obj) -> bool:
    """By the machine-role label; a Machine without it counts when its name has `-master-`."""
    meta = machine.get("metadata") or {}
    role = (meta.get("labels") or {}).get(MACHINE_ROLE_LABEL)
    return role == "master" or (role is None and "-master-" in str(meta.get("name", "")))


def node_ready(node: Obj | None) -> bool:
    """The Node's Ready condition is True (None: no such node)."""
    found = preflight.condition(node, "Ready") if node is not None else None
    return found is not None and found.get("status") == "True"


def internal_ip(node: Obj) -> str | None:
    for item in (node.get("status") or {}).get("addresses") or []:
        if item.get("type") == "InternalIP":
            return str(item.get("address"))
    return None


def next_machine_name(old: str, existing: Sequence[str]) -> str:
    """The old name with its last number replaced by the next number free among `existing`
    (`...-master-0` -> `...-master-3` when 0-2 exist), as the guide recommends."""
    match = _MACHINE_INDEX.match(old)
    if match is None:
        raise errors.PreflightRefused(
            f"Machine {old!r} does not end in a number, so no replacement name can be derived (the guide "
            "keeps the base name and takes the next free number); re-create it by hand."
        )
    base = match["base"]
    used = {int(m["index"]) for name in existing if (m := _MACHINE_INDEX.match(name)) and m["base"] == base}
    return f"{base}{max(used | {int(match['index'])}) + 1}"


def clean_machine(machine: Obj, *, new_name: str, annotations: Mapping[str, str]) -> dict[str, Any]:
    """A copy of `machine` to create under `new_name`: without `status`, `spec.providerID` and the
    metadata the API server sets (annotations, generation, resourceVersion, uid,
    creationTimestamp, managedFields, selfLink), with `annotations` as its only annotations (they
    record what it replaces, so a re-run finds it). The input is left alone."""
    cleaned: dict[str, Any] = copy.deepcopy(dict(machine))
    cleaned.pop("status", None)
    meta = dict(cleaned.get("metadata") or {})
    for key in _SERVER_METADATA:
        meta.pop(key, None)
    meta["name"] = new_name
    meta["annotations"] = dict(annotations)
    cleaned["metadata"] = meta
    spec = dict(cleaned.get("spec") or {})
    spec.pop("providerID", None)
    cleaned["spec"] = spec
    return cleaned


def redeploy_reason(prefix: str, now: datetime) -> str:
    """`<prefix>-` and `now` as `date --rfc-3339=ns` prints it (unique, as the guide requires)."""
    if now.tzinfo is None:
        raise ValueError("redeploy_reason() needs an aware datetime (UTC).")
    offset = now.strftime("%z")
    return f"{prefix}-{now:%Y-%m-%d %H:%M:%S}.{now.microsecond * 1000:09d}{offset[:3]}:{offset[3:]}"


def rollout_done(cr: Obj, *, after: int) -> tuple[bool, str]:
    """Whether a revision newer than `after` reached every node (AllNodesAtLatestRevision)."""
    status = cr.get("status") or {}
    latest = int(status.get("latestAvailableRevision") or 0)
    found = preflight.condition(cr, "NodeInstallerProgressing")
    message = str((found or {}).get("message") or "no NodeInstallerProgressing condition yet")
    statuses = status.get("nodeStatuses") or []
    done = (
        latest > after
        and found is not None
        and found.get("reason") == "AllNodesAtLatestRevision"
        and bool(statuses)
        and all(int(s.get("currentRevision") or 0) == latest for s in statuses)
    )
    return done, f"latest revision {latest}: {message}"
