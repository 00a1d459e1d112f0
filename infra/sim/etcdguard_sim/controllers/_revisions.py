"""Static-pod revision rollouts, shared by the etcd operator and the other static-pod operators.

What library-go's revision and installer controllers do for an operator CR named `cluster`
(`etcds`, `kubeapiservers`, `kubecontrollermanagers`, `kubeschedulers`), reduced to what the
guide relies on:

- a change of `spec.forceRedeploymentReason` makes a new revision: `status.latestAvailableRevision`
  goes up by one. The reason that was turned into a revision is remembered in the annotations
  `etcdguard.sim/rolled-out-reason` / `etcdguard.sim/rolled-out-revision` on the CR (a missing
  annotation means the seeded reason, ""), so a controller restart does not make it twice;
- `status.nodeStatuses` follows the control-plane Node objects (a new node enters at
  `currentRevision: 0`, a deleted one leaves);
- the latest revision is rolled out ONE NODE AT A TIME: the node gets `targetRevision`, an
  `installer-<N>-<node>` pod is recorded, the installer's work is done on the host
  (`hostfs.install_revision`, through the operand's `install` hook), and once the kubelet runs
  the new static pod (every container running, started after the manifest was written) and the
  operand's `ready` hook agrees, `currentRevision` becomes N and `targetRevision` goes;
- a node whose host is powered off, whose kubelet is stopped or whose Node is not Ready is
  skipped and keeps its revision; the rollout goes on with it once it is back;
- conditions `NodeInstallerProgressing` and `StaticPodsAvailable` with library-go's messages
  ("2 nodes are at revision 7; 1 nodes are at revision 8").

All progress lives in the CR's status, so a restarted controller continues a rollout.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import urllib.parse
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from etcdguard_sim import layout
from etcdguard_sim.api import client as apiclient
from etcdguard_sim.controllers import context
from etcdguard_sim.seed import core as _seed_core

__all__ = [
    "ANN_REASON",
    "ANN_REVISION",
    "OPERANDS",
    "Operand",
    "installer_conditions",
    "manifest_info",
    "master_nodes",
    "merge_conditions",
    "now_ts",
    "pod_runs_manifest",
    "rollout",
]

API = "operator.openshift.io/v1"
ANN_REASON = "etcdguard.sim/rolled-out-reason"
ANN_REVISION = "etcdguard.sim/rolled-out-revision"
MASTER_LABEL = "node-role.kubernetes.io/master"

Obj = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Operand:
    """One static-pod operand: its operator CR kind, host component and namespace."""

    kind: str  # "Etcd"
    component: str  # "etcd", the name hostfs and the manifests use
    namespace: str  # where its mirror and installer pods live
    pod_prefix: str  # mirror pod `<prefix>-<node>`

    @property
    def manifest_name(self) -> str:
        return f"{self.component}-pod.yaml"


OPERANDS: dict[str, Operand] = {
    component: Operand(kind=kind, component=component, namespace=shape[0], pod_prefix=shape[1])
    for kind, component in (
        ("Etcd", "etcd"),
        ("KubeAPIServer", "kube-apiserver"),
        ("KubeControllerManager", "kube-controller-manager"),
        ("KubeScheduler", "kube-scheduler"),
    )
    for shape in [_seed_core.STATIC_PODS[component]]
}


def now_ts() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---- conditions ---------------------------------------------------------------------------------
def merge_conditions(old: list[Obj], wanted: list[Obj], *, now: str) -> list[Obj]:
    """`old` with each condition of `wanted` (type, status, reason, message) set in place.

    lastTransitionTime changes only when a condition's status changes; conditions of other types
    are kept as they are, in their order; new types are appended.
    """
    out = [dict(c) for c in old]
    index = {c.get("type"): i for i, c in enumerate(out)}
    for want in wanted:
        i = index.get(want["type"])
        prev = out[i] if i is not None else None
        cond: Obj = {"type": want["type"], "status": want["status"]}
        if prev is not None and prev.get("status") == want["status"] and prev.get("lastTransitionTime"):
            cond["lastTransitionTime"] = prev["lastTransitionTime"]
        else:
            cond["lastTransitionTime"] = now
        if want.get("reason"):
            cond["reason"] = want["reason"]
        if want.get("message"):
            cond["message"] = want["message"]
        if i is None:
            index[want["type"]] = len(out)
            out.append(cond)
        else:
            out[i] = cond
    return out


def installer_conditions(node_statuses: list[Obj], latest: int) -> list[Obj]:
    """`NodeInstallerProgressing` and `StaticPodsAvailable` as library-go's installer controller
    words them (4.8): "%d nodes are at revision %d" joined by "; ", ascending, plus
    "0 nodes have achieved new revision N" while no node is at the latest."""
    counts: Counter[int] = Counter()
    at_latest = progressing = 0
    for ns in node_statuses:
        current = int(ns.get("currentRevision") or 0)
        if current == latest:
            at_latest += 1
        else:
            progressing += 1
        if current:
            counts[current] += 1
    parts = [f"{counts[rev]} nodes are at revision {rev}" for rev in sorted(counts)]
    if progressing and not at_latest:
        parts.append(f"0 nodes have achieved new revision {latest}")
    description = "; ".join(parts)
    active = sum(counts.values())
    available: Obj = {
        "type": "StaticPodsAvailable",
        "status": "True" if active else "False",
        "reason": "AsExpected" if active else "ZeroNodesActive",
        "message": f"{active} nodes are active; {description}",
    }
    if progressing:
        installing: Obj = {"type": "NodeInstallerProgressing", "status": "True", "message": description}
    else:
        installing = {
            "type": "NodeInstallerProgressing",
            "status": "False",
            "reason": "AllNodesAtLatestRevision",
            "message": description,
        }
    return [installing, available]


# ---- the hosts ------------------------------------------------------------------------------------
def manifest_path(spec: layout.SimSpec, node: layout.NodeSpec, operand: Operand) -> Path:
    return spec.host_root(node) / "etc" / "kubernetes" / "manifests" / operand.manifest_name


_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def manifest_info(ctx: context.Context, node: layout.NodeSpec, operand: Operand) -> tuple[Obj, int] | None:
    """(manifest, mtime in ns) of the operand's static pod manifest on the host, or None.

    Parsed manifests are cached by (mtime, size) in `ctx.memory`, so an unchanged file costs one
    `stat` per pass.
    """
    path = manifest_path(ctx.spec, node, operand)
    try:
        st = path.stat()
    except OSError:
        return None
    cache: dict[str, tuple[int, int, Obj]] = ctx.memory.setdefault("manifests", {})
    hit = cache.get(str(path))
    if hit is not None and hit[0] == st.st_mtime_ns and hit[1] == st.st_size:
        return hit[2], st.st_mtime_ns
    try:
        doc = yaml.load(path.read_bytes(), Loader=_LOADER)  # noqa: S506 (a safe loader)
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(doc, dict):
        return None
    cache[str(path)] = (st.st_mtime_ns, st.st_size, doc)
    return doc, st.st_mtime_ns


def manifest_revision(ctx: context.Context, node: layout.NodeSpec, operand: Operand) -> int | None:
    info = manifest_info(ctx, node, operand)
    if info is None:
        return None
    raw = str(((info[0].get("metadata") or {}).get("labels") or {}).get("revision"))
    try:
        return int(raw)
    except (TypeError, ValueError):
        return None


def kubelet_up(ctx: context.Context, node: layout.NodeSpec) -> bool:
    """The host is powered and its kubelet is active."""
    return ctx.powered(node) and ctx.kubelet_state(node).get("state", "active") == "active"


def pod_runs_manifest(ctx: context.Context, node: layout.NodeSpec, operand: Operand) -> bool:
    """The kubelet runs every container of the host's current manifest, each started after the
    manifest was written (so it is the new static pod, not the one it replaces)."""
    info = manifest_info(ctx, node, operand)
    if info is None or not kubelet_up(ctx, node):
        return False
    manifest, mtime = info
    wanted = [c.get("name") for c in (manifest.get("spec") or {}).get("containers") or []]
    pod = f"{(manifest.get('metadata') or {}).get('name', operand.pod_prefix)}-{node.name}"
    running = {
        c.get("name"): c
        for c in ctx.containers(node)
        if c.get("pod") == pod and c.get("state") == "CONTAINER_RUNNING"
    }
    return bool(wanted) and all(
        n in running and int(running[n].get("created_at") or 0) >= mtime for n in wanted
    )


# ---- the API --------------------------------------------------------------------------------------
def master_nodes(ctx: context.Context) -> list[Obj]:
    """Every control-plane Node object."""
    path = ctx.api.path_for("v1", "Node", namespace=None)
    query = urllib.parse.urlencode({"labelSelector": MASTER_LABEL})
    items: list[Obj] = ctx.api.request("GET", f"{path}?{query}").get("items", [])
    return items


def node_ready(node_obj: Obj) -> bool:
    for cond in (node_obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def _patch(ctx: context.Context, operand: Operand, body: Obj, *, status: bool) -> Obj:
    path = ctx.api.path_for(API, operand.kind, namespace=None, name="cluster")
    out: Obj = ctx.api.request(
        "PATCH", path + ("/status" if status else ""), body, content_type="application/merge-patch+json"
    )
    return out


def _record_installer(ctx: context.Context, operand: Operand, node: layout.NodeSpec, revision: int) -> None:
    """The finished `installer-<N>-<node>` pod, as seeded for earlier revisions."""
    name = f"installer-{revision}-{node.name}"
    done: set[str] = ctx.memory.setdefault("installers", set())
    if name in done:
        return
    when = dt.datetime.now(dt.UTC).replace(microsecond=0)
    pod = _seed_core.pod_object(
        ctx.spec, node=node, namespace=operand.namespace, name=name, containers=["installer"],
        labels={"app": "installer"}, started=when, finished=when, static=False, host_network=False,
    )  # fmt: skip
    del pod["metadata"]["uid"]
    try:
        ctx.api.create(pod)
    except apiclient.ApiError as exc:
        if exc.status != 409:
            raise
    done.add(name)


# ---- the rollout ----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Hooks:
    """What differs between operands.

    `install(node, revision)` does the installer's work on the host and returns True once the
    manifest of `revision` is in place (it may need several passes, e.g. to stop etcd first);
    `ready(node)` is the operand's own check after the kubelet runs the new pod; `order(node)`
    sorts the nodes waiting for the revision (lowest first).
    """

    install: Callable[[layout.NodeSpec, int], bool]
    ready: Callable[[layout.NodeSpec], bool] = lambda node: True
    order: Callable[[layout.NodeSpec, Obj], tuple[Any, ...]] = lambda node, ns: (
        int(ns.get("currentRevision") or 0),
        node.name,
    )


def _latest_revision(ctx: context.Context, operand: Operand, cr: Obj) -> int:
    """The latest revision, making a new one when forceRedeploymentReason changed."""
    meta = cr.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    latest = int((cr.get("status") or {}).get("latestAvailableRevision") or 0)
    recorded = int(annotations.get(ANN_REVISION) or 0)
    reason = str((cr.get("spec") or {}).get("forceRedeploymentReason") or "")
    if reason != annotations.get(ANN_REASON, ""):
        new = max(latest, recorded) + 1
        print(
            f"controllers: {operand.kind}: forceRedeploymentReason {reason!r} -> revision {new}",
            flush=True,
        )
        body = {
            "metadata": {
                "resourceVersion": meta.get("resourceVersion"),
                "annotations": {ANN_REASON: reason, ANN_REVISION: str(new)},
            }
        }
        _patch(ctx, operand, body, status=False)
        return new
    return max(latest, recorded)


def _sync_node_statuses(old: list[Obj], nodes: list[Obj]) -> list[Obj]:
    names = [n["metadata"]["name"] for n in nodes]
    by_name = {ns.get("nodeName"): dict(ns) for ns in old}
    out = [by_name.get(name) or {"nodeName": name, "currentRevision": 0} for name in sorted(names)]
    # Keep the order of the existing entries; new nodes go last.
    order = {ns.get("nodeName"): i for i, ns in enumerate(old)}
    return sorted(out, key=lambda ns: (order.get(ns["nodeName"], len(order)), ns["nodeName"]))


def rollout(ctx: context.Context, operand: Operand, hooks: Hooks) -> Obj:
    """One pass of the revision and installer controllers for `operand`; returns the CR."""
    cr: Obj = ctx.api.get(API, operand.kind, "cluster")
    latest = _latest_revision(ctx, operand, cr)
    status = cr.get("status") or {}
    nodes = master_nodes(ctx)
    node_objs = {n["metadata"]["name"]: n for n in nodes}
    statuses = _sync_node_statuses(status.get("nodeStatuses") or [], nodes)
    specs = {n.name: n for n in ctx.spec.masters}

    def usable(name: str) -> layout.NodeSpec | None:
        node = specs.get(name)
        if node is None or not kubelet_up(ctx, node) or not node_ready(node_objs[name]):
            return None
        return node

    target = next((ns for ns in statuses if ns.get("targetRevision")), None)
    if target is not None and usable(target["nodeName"]) is None:
        print(
            f"controllers: {operand.kind}: {target['nodeName']} is unavailable, rollout skips it", flush=True
        )
        del target["targetRevision"]
        target = None
    if target is None:
        waiting = [
            (hooks.order(node, ns), ns)
            for ns in statuses
            if int(ns.get("currentRevision") or 0) != latest and (node := usable(ns["nodeName"])) is not None
        ]
        if waiting:
            target = min(waiting, key=lambda item: item[0])[1]
            target["targetRevision"] = latest
    if target is not None:
        node = specs[target["nodeName"]]
        target["targetRevision"] = latest
        if manifest_revision(ctx, node, operand) != latest:
            if hooks.install(node, latest):
                print(f"controllers: {operand.kind}: installed revision {latest} on {node.name}", flush=True)
                with contextlib.suppress(OSError, apiclient.ApiError):  # etcd may be joining a member
                    _record_installer(ctx, operand, node, latest)
        elif pod_runs_manifest(ctx, node, operand) and hooks.ready(node):
            _record_installer(ctx, operand, node, latest)
            print(f"controllers: {operand.kind}: {node.name} is at revision {latest}", flush=True)
            target["currentRevision"] = latest
            del target["targetRevision"]
    conditions = merge_conditions(
        status.get("conditions") or [], installer_conditions(statuses, latest), now=now_ts()
    )
    wanted = {"latestAvailableRevision": latest, "nodeStatuses": statuses, "conditions": conditions}
    if any(status.get(k) != v for k, v in wanted.items()):
        cr = _patch(ctx, operand, {"status": wanted}, status=True)
    return cr
