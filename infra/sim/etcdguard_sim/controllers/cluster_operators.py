"""ClusterOperator conditions of the static-pod operators, from their operator CRs and the nodes.

For `etcd`, `kube-apiserver`, `kube-controller-manager` and `kube-scheduler` this does what
library-go's status controller does (`UnionClusterCondition` over the operator CR's
conditions), plus the node controller every static-pod operator runs:
- Degraded: True when any `*Degraded` condition of the CR is True (for etcd, e.g.
  `EtcdMembersDegraded`) or a master node is not Ready (`NodeControllerDegraded: The master
  nodes not ready: node "<name>" not ready since <time> because <reason> (<message>)`); the
  message lists each `<Type>: <message>` line, the reason joins `<Type w/o Degraded>_<reason>`
  with `::`; False/AsExpected otherwise.
- Progressing: True while `NodeInstallerProgressing` (or etcd's `EtcdMembersProgressing`) is
  True ("NodeInstallerProgressing: 1 nodes are at revision 7; 2 nodes are at revision 8"),
  False/AsExpected otherwise. `cluster-backup.sh` refuses while it is True, so this runs
  every pass.
- Available: False when any `*Available` condition is False (etcd without quorum: the API is
  then down too, so the write simply fails and is retried), True otherwise.
A condition keeps its `lastTransitionTime` while its status does not change; nothing is
written when nothing changed. `machine-api` has no operator CR: the simulated machine API
never degrades, so its seeded healthy conditions are left as they are.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from etcdguard_sim.controllers import context

__all__ = ["OPERATORS", "desired_conditions", "node_controller_condition", "reconcile"]

# ClusterOperator name -> kind of its operator.openshift.io/v1 CR (named `cluster`).
OPERATORS = {
    "etcd": "Etcd",
    "kube-apiserver": "KubeAPIServer",
    "kube-controller-manager": "KubeControllerManager",
    "kube-scheduler": "KubeScheduler",
}
_NODE_CONDITIONS = ("NodeControllerDegraded", "NodeDegraded")

Obj = dict[str, Any]


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _go_time(rfc3339: str) -> str:
    """A Kubernetes timestamp as Go's `time.Time.String()` prints it in these messages."""
    try:
        when = dt.datetime.strptime(rfc3339, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return rfc3339
    return when.strftime("%Y-%m-%d %H:%M:%S +0000 UTC")


def node_controller_condition(nodes: list[Obj]) -> Obj:
    """`NodeControllerDegraded` of library-go's node controller over the master Nodes."""
    not_ready = []
    for node in sorted(nodes, key=lambda n: n["metadata"]["name"]):
        if "node-role.kubernetes.io/master" not in (node["metadata"].get("labels") or {}):
            continue
        conditions = (node.get("status") or {}).get("conditions") or []
        ready = next((c for c in conditions if c.get("type") == "Ready"), None)
        if ready is None or ready.get("status") != "True":
            ready = ready or {}
            not_ready.append(
                f'node "{node["metadata"]["name"]}" not ready since '
                f"{_go_time(str(ready.get('lastTransitionTime', '')))} because "
                f"{ready.get('reason', '')} ({ready.get('message', '')})"
            )
    if not_ready:
        return {
            "type": "NodeControllerDegraded",
            "status": "True",
            "reason": "MasterNodesReady",
            "message": "The master nodes not ready: " + ", ".join(not_ready),
        }
    return {
        "type": "NodeControllerDegraded",
        "status": "False",
        "reason": "MasterNodesReady",
        "message": "All master nodes are ready",
    }


def _union(conditions: list[Obj], suffix: str, *, bad: str) -> tuple[str, str, str]:
    """(status, reason, message) of library-go's union of the `*<suffix>` conditions;
    `bad` is the status that makes the union bad ("True" for Degraded/Progressing)."""
    mine = [c for c in conditions if str(c.get("type", "")).endswith(suffix)]
    failing = [c for c in mine if c.get("status") == bad]
    shown = failing or mine
    lines = [f"{c['type']}: {c['message']}" for c in shown if c.get("message")]
    if not failing:
        return ("False" if bad == "True" else "True"), "AsExpected", "\n".join(lines)
    reasons = []
    for c in failing:
        base = str(c["type"])[: -len(suffix)]
        reasons.append(f"{base}_{c['reason']}" if c.get("reason") else base)
    return bad, "::".join(reasons), "\n".join(lines)


def desired_conditions(cr: Obj, nodes: list[Obj]) -> dict[str, tuple[str, str, str]]:
    """Condition type -> (status, reason, message) of the ClusterOperator of operator CR `cr`."""
    conditions = [c for c in (cr.get("status") or {}).get("conditions") or [] if c.get("type")]
    node_cond = node_controller_condition(nodes)
    merged: list[Obj] = []
    placed = False
    for cond in conditions:
        if cond["type"] in _NODE_CONDITIONS:
            if not placed:
                merged.append(node_cond)
                placed = True
            continue
        merged.append(cond)
    if not placed:
        merged.insert(0, node_cond)
    return {
        "Degraded": _union(merged, "Degraded", bad="True"),
        "Progressing": _union(merged, "Progressing", bad="True"),
        "Available": _union(merged, "Available", bad="False"),
    }


def _apply(ctx: context.Context, co: Obj, wanted: dict[str, tuple[str, str, str]]) -> None:
    current = (co.get("status") or {}).get("conditions") or []
    now = _now()
    out: list[Obj] = []
    changed = False
    seen = set()
    for cond in current:
        kind = cond.get("type")
        seen.add(kind)
        if kind not in wanted:
            out.append(cond)
            continue
        status, reason, message = wanted[kind]
        new = dict(cond)
        if cond.get("status") != status:
            new["lastTransitionTime"] = now
        new.update(status=status, reason=reason, message=message)
        changed |= new != cond
        out.append(new)
    for kind, (status, reason, message) in wanted.items():
        if kind not in seen:
            out.append(
                {
                    "type": kind,
                    "status": status,
                    "reason": reason,
                    "message": message,
                    "lastTransitionTime": now,
                }
            )
            changed = True
    if not changed:
        return
    name = co["metadata"]["name"]
    path = ctx.api.path_for("config.openshift.io/v1", "ClusterOperator", namespace=None, name=name)
    ctx.api.request(
        "PATCH",
        path + "/status",
        {"status": {"conditions": out}},
        content_type="application/merge-patch+json",
    )
    summary = ", ".join(f"{k}={v[0]}" for k, v in wanted.items())
    print(f"cluster_operators: {name}: {summary}", flush=True)


def reconcile(ctx: context.Context) -> None:
    nodes: list[Obj] = ctx.api.request("GET", "/api/v1/nodes").get("items") or []
    for name, kind in OPERATORS.items():
        cr = ctx.api.get("operator.openshift.io/v1", kind, "cluster")
        co = ctx.api.get("config.openshift.io/v1", "ClusterOperator", name)
        _apply(ctx, co, desired_conditions(cr, nodes))
