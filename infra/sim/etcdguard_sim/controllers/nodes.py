"""The Nodes' `Ready` condition and taints: the kubelets' status posts and the node lifecycle
controller, simulated from the hosts' power, their kubelets and their certificates.

Per node, in this order (the first that holds wins):
1. the kubelet cannot post its status for more than `GRACE` seconds -> the node lifecycle
   controller sets every condition `Unknown`, reason `NodeStatusUnknown`, "Kubelet stopped
   posting node status.", and taints the node `node.kubernetes.io/unreachable` (NoSchedule and
   NoExecute). Causes: the host is powered off; its kubelet is stopped (`systemctl stop
   kubelet`); its certificates expired (`DIR/run/certs-expired/<node>`). Expiry gives Unknown,
   not False, on purpose: a kubelet whose client certificate expired is refused by the API
   server, so it posts nothing and the node controller marks it Unknown, which is what
   `oc get nodes` shows as `NotReady` on a cluster whose certificates expired (guide 4.3.3).
2. `DIR/run/notready/<node>` exists (fault injector) -> `Ready` False, reason KubeletNotReady,
   taint `node.kubernetes.io/not-ready` (NoSchedule, NoExecute).
3. its client certificate was renewed but its serving certificate not yet issued (`csrs`) ->
   `Ready` False, KubeletNotReady, as above.
4. otherwise `Ready` True, KubeletReady, and the two taints above are removed.
Nothing is written while a node already shows what it should.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any, Literal

from etcdguard_sim import layout
from etcdguard_sim.controllers import context, csrs

__all__ = ["GRACE", "NOT_READY_TAINT", "UNREACHABLE_TAINT", "reconcile"]

GRACE = 5.0
UNREACHABLE_TAINT = "node.kubernetes.io/unreachable"
NOT_READY_TAINT = "node.kubernetes.io/not-ready"
_UNKNOWN_MESSAGE = "Kubelet stopped posting node status."
_PLEG_MESSAGE = "PLEG is not healthy: pleg was last seen active 3m0.418s ago; threshold is 3m0s"
# Condition type -> (reason, message) when the kubelet reports it healthy.
_HEALTHY = {
    "MemoryPressure": ("KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
    "DiskPressure": ("KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    "PIDPressure": ("KubeletHasSufficientPID", "kubelet has sufficient PID available"),
    "Ready": ("KubeletReady", "kubelet is posting ready status"),
}

Obj = dict[str, Any]
Status = Literal["True", "False", "Unknown"]


def _ts() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _silent(ctx: context.Context, node: layout.NodeSpec) -> bool:
    """True when the node's kubelet cannot post status right now."""
    if not ctx.powered(node):
        return True
    if (ctx.spec.run_dir / "certs-expired" / node.name).exists():
        return True
    return node.role == "master" and ctx.kubelet_state(node).get("state") == "inactive"


def _desired(ctx: context.Context, node: layout.NodeSpec, awaiting: set[str]) -> tuple[Status, str, str]:
    since: dict[str, float] = ctx.memory.setdefault("silent-since", {})
    if _silent(ctx, node):
        first = since.setdefault(node.name, time.monotonic())
        if time.monotonic() - first > GRACE:
            return "Unknown", "NodeStatusUnknown", _UNKNOWN_MESSAGE
    else:
        since.pop(node.name, None)
    if (ctx.spec.run_dir / "notready" / node.name).exists():
        return "False", "KubeletNotReady", _PLEG_MESSAGE
    if node.name in awaiting:
        return "False", "KubeletNotReady", csrs.NOT_READY_MESSAGE
    return "True", *_HEALTHY["Ready"]


def _conditions(current: list[Obj], status: Status, reason: str, message: str) -> list[Obj]:
    now = _ts()
    by_type = {c.get("type"): dict(c) for c in current}
    out: list[Obj] = []
    for kind, (ok_reason, ok_message) in _HEALTHY.items():
        cond = by_type.pop(kind, {"type": kind})
        if status == "Unknown":
            want = ("Unknown", "NodeStatusUnknown", _UNKNOWN_MESSAGE)
        elif kind == "Ready":
            want = (status, reason, message)
        else:
            want = ("False", ok_reason, ok_message)
        if cond.get("status") != want[0]:
            cond["lastTransitionTime"] = now
        if status != "Unknown":
            cond["lastHeartbeatTime"] = now  # the kubelet posts again
        cond.update(status=want[0], reason=want[1], message=want[2])
        cond.setdefault("lastHeartbeatTime", now)
        cond.setdefault("lastTransitionTime", now)
        out.append(cond)
    return out + list(by_type.values())


def _taints(current: list[Obj], status: Status) -> list[Obj]:
    keep = [t for t in current if t.get("key") not in (UNREACHABLE_TAINT, NOT_READY_TAINT)]
    if status == "True":
        return keep
    key = UNREACHABLE_TAINT if status == "Unknown" else NOT_READY_TAINT
    old = {(t.get("key"), t.get("effect")): t for t in current}
    added = []
    for effect in ("NoSchedule", "NoExecute"):
        taint = old.get((key, effect)) or {"key": key, "effect": effect}
        if effect == "NoExecute":
            taint.setdefault("timeAdded", _ts())
        added.append(taint)
    return keep + added


def reconcile(ctx: context.Context) -> None:
    items: list[Obj] = ctx.api.request("GET", "/api/v1/nodes").get("items") or []
    awaiting = csrs.awaiting_serving(csrs.list_csrs(ctx))
    by_name = {n.name: n for n in ctx.spec.nodes}
    for obj in items:
        name = obj["metadata"]["name"]
        node = by_name.get(name)
        if node is None:
            continue
        status, reason, message = _desired(ctx, node, awaiting)
        path = f"/api/v1/nodes/{name}"
        conditions = (obj.get("status") or {}).get("conditions") or []
        ready: Obj = next((c for c in conditions if c.get("type") == "Ready"), {})
        if (ready.get("status"), ready.get("reason")) != (status, reason):
            new = _conditions(conditions, status, reason, message)
            ctx.api.request(
                "PATCH",
                path + "/status",
                {"status": {"conditions": new}},
                content_type="application/merge-patch+json",
            )
            print(f"nodes: {name} Ready={status} ({reason})", flush=True)
        taints = (obj.get("spec") or {}).get("taints") or []
        wanted = _taints(taints, status)
        if wanted != taints:
            ctx.api.request(
                "PATCH", path, {"spec": {"taints": wanted}}, content_type="application/merge-patch+json"
            )
