"""Server-side printing: the `meta.k8s.io/v1` `Table` that `kubectl get` asks for.

kubectl sends `Accept: application/json;as=Table;v=v1;g=meta.k8s.io,...` and prints whatever
columns the server returns (priority-1 columns only with `-o wide`). The printers below give the
columns and cell values of the Kubernetes 1.21 printers (`pkg/printers/internalversion`) for
nodes, pods, secrets, namespaces, deployments and CSRs, and of the 4.8 CRDs'
`additionalPrinterColumns` for clusteroperators, clusterversions and machines; every other kind
gets `NAME AGE`, as a CRD without printer columns does. Ages are kubectl's `HumanDuration`.

Simplified: the 1.21 printers of configmaps, services, events, PVs and PVCs are not reproduced.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import Any

from etcdguard_sim.api import resources

__all__ = ["PRINTERS", "Column", "Printer", "human_duration", "to_table"]

Cell = str | int | None


@dataclasses.dataclass(frozen=True)
class Column:
    name: str
    type: str = "string"
    priority: int = 0
    format: str = ""
    description: str = ""

    def definition(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "format": self.format,
            "description": self.description or self.name,
            "priority": self.priority,
        }


@dataclasses.dataclass(frozen=True)
class Printer:
    columns: tuple[Column, ...]
    cells: Callable[[dict[str, Any], dt.datetime], list[Cell]]


def human_duration(delta: dt.timedelta) -> str:
    """apimachinery's `duration.HumanDuration` (what kubectl's AGE column shows)."""
    seconds = int(delta.total_seconds())
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        s = seconds % 60
        return f"{minutes}m" if s == 0 else f"{minutes}m{s}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = seconds // 3600
    if hours < 8:
        m = minutes % 60
        return f"{hours}h" if m == 0 else f"{hours}h{m}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        h = hours % 24
        return f"{hours // 24}d" if h == 0 else f"{hours // 24}d{h}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        dy = (hours // 24) % 365
        years = hours // 24 // 365
        return f"{years}y" if dy == 0 else f"{years}y{dy}d"
    return f"{hours // 24 // 365}y"


def _since(stamp: Any, now: dt.datetime) -> str | None:
    if not isinstance(stamp, str) or not stamp:
        return None
    try:
        when = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return human_duration(now - when)


def _age(obj: dict[str, Any], now: dt.datetime) -> str:
    return _since(obj.get("metadata", {}).get("creationTimestamp"), now) or "<unknown>"


def _get(obj: Any, *path: str) -> Any:
    for part in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def _condition(obj: dict[str, Any], ctype: str) -> dict[str, Any]:
    for cond in _get(obj, "status", "conditions") or []:
        if isinstance(cond, dict) and cond.get("type") == ctype:
            return cond
    return {}


def _name(obj: dict[str, Any]) -> str:
    return str(_get(obj, "metadata", "name") or "")


NAME = Column("Name", format="name", description="Name must be unique within a namespace.")
AGE = Column("Age", description="CreationTimestamp is the time the object was created.")


# ---- nodes -------------------------------------------------------------------------------
def _node_cells(obj: dict[str, Any], now: dt.datetime) -> list[Cell]:
    ready = _condition(obj, "Ready")
    status = [] if not ready else ["Ready" if ready.get("status") == "True" else "NotReady"]
    if not status:
        status = ["Unknown"]
    if _get(obj, "spec", "unschedulable"):
        status.append("SchedulingDisabled")
    labels = _get(obj, "metadata", "labels") or {}
    roles = set()
    for key, value in labels.items():
        if key.startswith("node-role.kubernetes.io/"):
            role = key.split("/", 1)[1]
            if role:
                roles.add(role)
        elif key == "kubernetes.io/role" and value:
            roles.add(value)
    addresses = _get(obj, "status", "addresses") or []

    def address(kind: str) -> str:
        return next((a.get("address", "") for a in addresses if a.get("type") == kind), "<none>")

    info = _get(obj, "status", "nodeInfo") or {}
    return [
        _name(obj),
        ",".join(status),
        ",".join(sorted(roles)) or "<none>",
        _age(obj, now),
        info.get("kubeletVersion", ""),
        address("InternalIP"),
        address("ExternalIP"),
        info.get("osImage") or "<unknown>",
        info.get("kernelVersion") or "<unknown>",
        info.get("containerRuntimeVersion") or "<unknown>",
    ]


# ---- pods --------------------------------------------------------------------------------
def _terminated_reason(term: dict[str, Any], prefix: str = "") -> str:
    if term.get("reason"):
        return prefix + str(term["reason"])
    if term.get("signal"):
        return f"{prefix}Signal:{term['signal']}"
    return f"{prefix}ExitCode:{term.get('exitCode', 0)}"


def _pod_cells(obj: dict[str, Any], now: dt.datetime) -> list[Cell]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    reason = status.get("reason") or status.get("phase") or ""
    restarts, ready, initializing = 0, 0, False
    init_statuses = status.get("initContainerStatuses") or []
    for i, cs in enumerate(init_statuses):
        restarts += int(cs.get("restartCount") or 0)
        state = cs.get("state") or {}
        term, waiting = state.get("terminated"), state.get("waiting")
        if term is not None and int(term.get("exitCode") or 0) == 0:
            continue
        if term is not None:
            reason = _terminated_reason(term, "Init:")
        elif waiting and waiting.get("reason") and waiting.get("reason") != "PodInitializing":
            reason = "Init:" + waiting["reason"]
        else:
            reason = f"Init:{i}/{len(spec.get('initContainers') or [])}"
        initializing = True
        break
    if not initializing:
        restarts, has_running = 0, False
        for cs in reversed(status.get("containerStatuses") or []):
            restarts += int(cs.get("restartCount") or 0)
            state = cs.get("state") or {}
            term, waiting = state.get("terminated"), state.get("waiting")
            if waiting and waiting.get("reason"):
                reason = waiting["reason"]
            elif term is not None:
                reason = _terminated_reason(term)
            elif cs.get("ready") and state.get("running") is not None:
                has_running = True
                ready += 1
        if reason == "Completed" and has_running:
            reason = "Running"
    if _get(obj, "metadata", "deletionTimestamp"):
        reason = "Unknown" if status.get("reason") == "NodeLost" else "Terminating"
    gates = spec.get("readinessGates") or []
    if gates:
        true_conditions = {c.get("type") for c in status.get("conditions") or [] if c.get("status") == "True"}
        met = sum(1 for g in gates if g.get("conditionType") in true_conditions)
        gates_cell = f"{met}/{len(gates)}"
    else:
        gates_cell = "<none>"
    return [
        _name(obj),
        f"{ready}/{len(spec.get('containers') or [])}",
        reason,
        restarts,
        _age(obj, now),
        status.get("podIP") or "<none>",
        spec.get("nodeName") or "<none>",
        status.get("nominatedNodeName") or "<none>",
        gates_cell,
    ]


# ---- the rest ----------------------------------------------------------------------------
def _deployment_cells(obj: dict[str, Any], now: dt.datetime) -> list[Cell]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    containers = _get(spec, "template", "spec", "containers") or []
    selector = spec.get("selector") or {}
    terms = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        values = ",".join(expr.get("values") or [])
        terms.append(f"{expr.get('key')} {str(expr.get('operator', '')).lower()} ({values})")
    return [
        _name(obj),
        f"{int(status.get('readyReplicas') or 0)}/{int(spec.get('replicas', 1) or 0)}",
        int(status.get("updatedReplicas") or 0),
        int(status.get("availableReplicas") or 0),
        _age(obj, now),
        ",".join(c.get("name", "") for c in containers),
        ",".join(c.get("image", "") for c in containers),
        ",".join(terms) or "<none>",
    ]


def _csr_condition(obj: dict[str, Any]) -> str:
    types = {c.get("type") for c in _get(obj, "status", "conditions") or [] if isinstance(c, dict)}
    out = "Denied" if "Denied" in types else "Approved" if "Approved" in types else "Pending"
    if "Failed" in types:
        out += ",Failed"
    if _get(obj, "status", "certificate"):
        out += ",Issued"
    return out


def _operator_version(obj: dict[str, Any]) -> str | None:
    for v in _get(obj, "status", "versions") or []:
        if isinstance(v, dict) and v.get("name") == "operator":
            return str(v.get("version", ""))
    return None


def _completed_version(obj: dict[str, Any]) -> str | None:
    for h in _get(obj, "status", "history") or []:
        if isinstance(h, dict) and h.get("state") == "Completed":
            return str(h.get("version", ""))
    return None


def _label(obj: dict[str, Any], key: str) -> str | None:
    value = (_get(obj, "metadata", "labels") or {}).get(key)
    return None if value is None else str(value)


def _annotation(obj: dict[str, Any], key: str) -> str | None:
    value = (_get(obj, "metadata", "annotations") or {}).get(key)
    return None if value is None else str(value)


def _status_of(obj: dict[str, Any], ctype: str) -> str | None:
    return _condition(obj, ctype).get("status")


PRINTERS: dict[str, Printer] = {
    "default": Printer((NAME, AGE), lambda o, now: [_name(o), _age(o, now)]),
    "nodes": Printer(
        (NAME, Column("Status"), Column("Roles"), AGE, Column("Version"),
         Column("Internal-IP", priority=1), Column("External-IP", priority=1),
         Column("OS-Image", priority=1), Column("Kernel-Version", priority=1),
         Column("Container-Runtime", priority=1)),
        _node_cells,
    ),
    "pods": Printer(
        (NAME, Column("Ready"), Column("Status"), Column("Restarts", type="integer"), AGE,
         Column("IP", priority=1), Column("Node", priority=1),
         Column("Nominated Node", priority=1), Column("Readiness Gates", priority=1)),
        _pod_cells,
    ),
    "secrets": Printer(
        (NAME, Column("Type"), Column("Data", type="integer"), AGE),
        lambda o, now: [_name(o), o.get("type", ""), len(o.get("data") or {}), _age(o, now)],
    ),
    "namespaces": Printer(
        (NAME, Column("Status"), AGE),
        lambda o, now: [_name(o), _get(o, "status", "phase") or "", _age(o, now)],
    ),
    "deployments": Printer(
        (NAME, Column("Ready"), Column("Up-to-date", type="integer"),
         Column("Available", type="integer"), AGE, Column("Containers", priority=1),
         Column("Images", priority=1), Column("Selector", priority=1)),
        _deployment_cells,
    ),
    "csr": Printer(
        (NAME, AGE, Column("SignerName"), Column("Requestor"), Column("Condition")),
        lambda o, now: [_name(o), _age(o, now), _get(o, "spec", "signerName") or "",
                        _get(o, "spec", "username") or "", _csr_condition(o)],
    ),
    "clusteroperators": Printer(
        (NAME, Column("Version"), Column("Available"), Column("Progressing"),
         Column("Degraded"), Column("Since", type="date")),
        lambda o, now: [_name(o), _operator_version(o), _status_of(o, "Available"),
                        _status_of(o, "Progressing"), _status_of(o, "Degraded"),
                        _since(_condition(o, "Available").get("lastTransitionTime"), now)],
    ),
    "clusterversions": Printer(
        (NAME, Column("Version"), Column("Available"), Column("Progressing"),
         Column("Since", type="date"), Column("Status")),
        lambda o, now: [_name(o), _completed_version(o), _status_of(o, "Available"),
                        _status_of(o, "Progressing"),
                        _since(_condition(o, "Progressing").get("lastTransitionTime"), now),
                        _condition(o, "Progressing").get("message")],
    ),
    "machines": Printer(
        (NAME, Column("Phase"), Column("Type"), Column("Region"), Column("Zone"), AGE,
         Column("Node", priority=1), Column("ProviderID", priority=1),
         Column("State", priority=1)),
        lambda o, now: [_name(o), _get(o, "status", "phase"),
                        _label(o, "machine.openshift.io/instance-type"),
                        _label(o, "machine.openshift.io/region"),
                        _label(o, "machine.openshift.io/zone"), _age(o, now),
                        _get(o, "status", "nodeRef", "name"), _get(o, "spec", "providerID"),
                        _annotation(o, "machine.openshift.io/instance-state")],
    ),
}  # fmt: skip


def to_table(
    res: resources.Resource,
    objects: list[dict[str, Any]],
    *,
    now: dt.datetime,
    include_object: str = "Metadata",
    resource_version: str = "",
    api_version: str = "meta.k8s.io/v1",
) -> dict[str, Any]:
    """The Table of `objects`; `include_object` is None, Metadata (the default) or Object."""
    printer = PRINTERS[res.printer]
    rows = []
    for obj in objects:
        row: dict[str, Any] = {"cells": printer.cells(obj, now)}
        if include_object == "Object":
            row["object"] = obj
        elif include_object != "None":
            row["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": api_version,
                "metadata": obj.get("metadata", {}),
            }
        rows.append(row)
    meta = {"resourceVersion": resource_version} if resource_version else {}
    return {
        "kind": "Table",
        "apiVersion": api_version,
        "metadata": meta,
        "columnDefinitions": [c.definition() for c in printer.columns],
        "rows": rows,
    }
