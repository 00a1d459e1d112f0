"""The static-pod operators of kube-apiserver, kube-controller-manager and kube-scheduler, and the
kubelets' mirror pods of every control-plane static pod.

Operators (`kubeapiservers`, `kubecontrollermanagers`, `kubeschedulers` named `cluster`): a change
of `spec.forceRedeploymentReason` rolls a new revision out node by node (`_revisions.rollout`):
the installer writes `static-pod-resources/<component>-pod-N/` and the manifest on the host
(`hostfs.install_revision`), the kubelet restarts the pod, the next node follows once every
container of the new pod runs. The kube-apiserver keeps serving during its rollout: the other
hosts still run theirs.

Mirror pods (what each host's kubelet reports to the API; the real kubelet does this, the
simulator's kubelet stand-in cannot reach the API, so it is done here from `containers.json`):
`openshift-etcd/etcd-<node>`, `openshift-kube-apiserver/kube-apiserver-<node>`,
`openshift-kube-controller-manager/kube-controller-manager-<node>`,
`openshift-kube-scheduler/openshift-kube-scheduler-<node>`:
- status follows the containers: `Running` with ready containers; a crash-looping container is
  waiting `CrashLoopBackOff` with `lastState` terminated `Error` and its restart count; an exited
  one terminated `Error`/`Completed`;
- a host that is powered off, or whose kubelet is stopped, keeps the last reported state with
  every container not ready (`0/5 Running`);
- a host that runs a static pod without a mirror pod gets one; a manifest of another revision or
  with other containers (the restore pod) replaces the mirror pod, as the kubelet recreates it;
  a manifest gone for more than 10 s on a powered host deletes it (`mv etcd-pod.yaml /tmp`).

Pod garbage collection (kube-controller-manager's PodGC, orphaned pods): a pod of these
namespaces named after its node (`etcd-<node>`, `installer-8-<node>`) whose node is neither a
Node object nor a host of the cluster is deleted, as when a control-plane machine is deleted and
replaced (guide 4.2.4.1: the old member's `etcd-<node>` pod goes away).
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from etcdguard_sim import layout
from etcdguard_sim.api import client as apiclient
from etcdguard_sim.controllers import _revisions, context
from etcdguard_sim.hosts import fs as hostfs
from etcdguard_sim.seed import core as _seed_core

__all__ = ["collect_orphans", "reconcile", "sync_mirror_pods"]

Obj = dict[str, Any]
_GONE_AFTER = 10.0
_OPERATORS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")


def reconcile(ctx: context.Context) -> None:
    """One pass: the three static-pod operators, then every mirror pod."""
    for component in _OPERATORS:
        operand = _revisions.OPERANDS[component]
        _revisions.rollout(ctx, operand, _revisions.Hooks(install=_installer(ctx, component)))
    nodes = {n["metadata"]["name"] for n in ctx.api.request("GET", "/api/v1/nodes").get("items") or []}
    for operand in _revisions.OPERANDS.values():
        sync_mirror_pods(ctx, operand)
        collect_orphans(ctx, operand, nodes)


def _installer(ctx: context.Context, component: str) -> Any:
    def install(node: layout.NodeSpec, revision: int) -> bool:
        encryption = None
        if component == "kube-apiserver":
            apiserver = ctx.api.get("config.openshift.io/v1", "APIServer", "cluster")
            encryption = ((apiserver.get("spec") or {}).get("encryption") or {}).get("type") or None
            if encryption not in ("identity", "aescbc"):
                encryption = None
        hostfs.install_revision(ctx.spec, node, component=component, revision=revision, encryption=encryption)
        return True

    return install


# ---- mirror pods -----------------------------------------------------------------------------
def _ts_ns(value: int) -> str:
    return dt.datetime.fromtimestamp(value / 1e9, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _container_status(
    ctx: context.Context, *, pod: str, name: str, seen: Obj | None, prev: Obj | None, usable: bool
) -> Obj:
    """One containerStatus from the kubelet's record `seen` (None: not reported)."""
    image = _seed_core.image(name)
    if seen is None:
        out = dict(prev) if prev else {
            "name": name, "image": image, "imageID": image, "ready": False, "started": False,
            "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}, "lastState": {},
        }  # fmt: skip
        out["ready"] = False
        return out
    cid = f"cri-o://{seen['id']}"
    started = _ts_ns(int(seen.get("created_at") or 0))
    exits: dict[str, Obj] = ctx.memory.setdefault("exits", {})
    key = f"{pod}/{name}"
    running = seen.get("state") == "CONTAINER_RUNNING"
    if not running:
        code = int(seen.get("exit_code") or 0)
        last = exits.get(key)
        if last is None or last.get("containerID") != cid:
            last = exits[key] = {
                "exitCode": code, "reason": "Error" if code else "Completed",
                "startedAt": started, "finishedAt": _revisions.now_ts(), "containerID": cid,
            }  # fmt: skip
    attempt = int(seen.get("attempt") or 0)
    last_state: Obj = {}
    if key in exits and (not running or attempt > 0):
        last_state = {"terminated": dict(exits[key])}
    elif attempt > 0 and prev and prev.get("lastState"):
        last_state = prev["lastState"]
    elif attempt > 0:
        last_state = {"terminated": {"exitCode": 1, "reason": "Error", "startedAt": started,
                                     "finishedAt": started}}  # fmt: skip
    if running:
        state: Obj = {"running": {"startedAt": started}}
    elif seen.get("waiting"):
        message = f"back-off restarting failed container={name} pod={pod}"
        state = {"waiting": {"reason": "CrashLoopBackOff", "message": message}}
        last_state = {"terminated": dict(exits[key])}
    else:
        state = {"terminated": dict(exits[key])}
    return {
        "name": name, "image": image, "imageID": image, "containerID": cid,
        "ready": running and usable, "started": running, "restartCount": attempt,
        "state": state, "lastState": last_state,
    }  # fmt: skip


def _pod_status(
    ctx: context.Context, node: layout.NodeSpec, pod: Obj, containers: list[Obj], *, usable: bool
) -> Obj:
    name = pod["metadata"]["name"]
    old = pod.get("status") or {}
    prev = {c.get("name"): c for c in old.get("containerStatuses") or []}
    seen = {c.get("name"): c for c in containers if c.get("pod") == name} if usable else {}
    names = [c["name"] for c in (pod.get("spec") or {}).get("containers") or []]
    statuses = [
        _container_status(ctx, pod=name, name=n, seen=seen.get(n), prev=prev.get(n), usable=usable)
        for n in names
    ]
    all_ready = bool(statuses) and all(s["ready"] for s in statuses)
    any_running = any("running" in (s.get("state") or {}) for s in statuses)
    phase = "Running" if any_running or old.get("phase") == "Running" else "Pending"
    now = _revisions.now_ts()
    wanted = [
        {"type": "Initialized", "status": "True"},
        {"type": "Ready", "status": "True" if all_ready else "False"},
        {"type": "ContainersReady", "status": "True" if all_ready else "False"},
        {"type": "PodScheduled", "status": "True"},
    ]
    status = dict(old)
    status.update(
        {
            "phase": phase,
            "conditions": _revisions.merge_conditions(old.get("conditions") or [], wanted, now=now),
            "hostIP": node.ip,
            "podIP": node.ip,
            "podIPs": [{"ip": node.ip}],
            "startTime": old.get("startTime") or now,
            "containerStatuses": statuses,
        }
    )
    status.setdefault("qosClass", "Burstable")
    return status


def _new_mirror(ctx: context.Context, node: layout.NodeSpec, manifest: Obj, name: str) -> Obj:
    meta = manifest.get("metadata") or {}
    labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    names = [c["name"] for c in (manifest.get("spec") or {}).get("containers") or []]
    pod = _seed_core.pod_object(
        ctx.spec, node=node, namespace=meta.get("namespace", "default"), name=name, containers=names,
        labels=labels, started=dt.datetime.now(dt.UTC).replace(microsecond=0),
    )  # fmt: skip
    del pod["metadata"]["uid"]
    del pod["status"]
    return pod


def _differs(pod: Obj, manifest: Obj) -> bool:
    """The mirror pod shows another static pod than the manifest (revision or containers)."""
    labels = (pod.get("metadata") or {}).get("labels") or {}
    want_labels = (manifest.get("metadata") or {}).get("labels") or {}
    names = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
    want = [c.get("name") for c in (manifest.get("spec") or {}).get("containers") or []]
    return str(labels.get("revision")) != str(want_labels.get("revision")) or names != want


def sync_mirror_pods(ctx: context.Context, operand: _revisions.Operand) -> None:
    """Create, update or delete the mirror pods of `operand` on every control-plane host."""
    api = ctx.api
    collection = api.path_for("v1", "Pod", namespace=operand.namespace)
    pods = {p["metadata"]["name"]: p for p in api.request("GET", collection).get("items", [])}
    absent: dict[str, float] = ctx.memory.setdefault("absent", {})
    for node in ctx.spec.masters:
        name = f"{operand.pod_prefix}-{node.name}"
        pod = pods.get(name)
        powered = ctx.powered(node)
        usable = _revisions.kubelet_up(ctx, node)
        info = _revisions.manifest_info(ctx, node, operand)
        containers = ctx.containers(node) if usable else []
        runs = any(c.get("pod") == name for c in containers)
        if info is None:
            if pod is None or not powered:
                absent.pop(name, None)
                continue
            since = absent.setdefault(name, time.monotonic())
            if time.monotonic() - since > _GONE_AFTER:
                print(f"controllers: static pods: deleting mirror pod {operand.namespace}/{name}", flush=True)
                _delete(ctx, collection, name)
                absent.pop(name, None)
                continue
        else:
            absent.pop(name, None)
            manifest = info[0]
            if pod is not None and usable and runs and _differs(pod, manifest):
                _delete(ctx, collection, name)
                pod = None
            if pod is None:
                if not (usable and runs):
                    continue
                pod = api.create(_new_mirror(ctx, node, manifest, name))
        status = _pod_status(ctx, node, pod, containers, usable=usable)
        if status != pod.get("status"):
            pod["status"] = status
            pod["metadata"].pop("resourceVersion", None)  # the kubelet owns the status: no CAS
            api.request("PUT", f"{collection}/{name}/status", pod)


def collect_orphans(ctx: context.Context, operand: _revisions.Operand, nodes: set[str]) -> None:
    """Delete the operand's pods named after a node that is neither in `nodes` (the Node
    objects) nor a host of the cluster (PodGC's orphaned pods, limited to per-node pods)."""
    collection = ctx.api.path_for("v1", "Pod", namespace=operand.namespace)
    hosts = {n.name for n in ctx.spec.masters}
    for pod in ctx.api.request("GET", collection).get("items", []):
        name = pod["metadata"]["name"]
        node = (pod.get("spec") or {}).get("nodeName")
        if not node or node in nodes or node in hosts or not name.endswith(f"-{node}"):
            continue
        print(
            f"controllers: pod GC: deleting {operand.namespace}/{name} of the deleted node {node}", flush=True
        )
        _delete(ctx, collection, name)


def _delete(ctx: context.Context, collection: str, name: str) -> None:
    try:
        ctx.api.request("DELETE", f"{collection}/{name}")
    except apiclient.ApiError as exc:
        if exc.status != 404:
            raise
