"""Replacing an unhealthy etcd member (guide 4.2): the decisions, as pure functions over plain data.

- `diagnose` (4.2.2, 4.2.3): which member is unhealthy (the etcd operator's `EtcdMembersAvailable`
  message, or the member an operator named) and why: its machine is not running, its node is not
  Ready or unreachable, or its etcd pod is crash-looping; hence the procedure, 4.2.4.1 or 4.2.4.2.
  It refuses (`PreflightRefused`) when quorum is lost (-> restore-cluster) or the node's kubelet
  waits for certificates (-> recover-expired-certs), and says when there is nothing to do.
- `plan_removal`: the ONE member `etcdctl member remove` may take: matched by name AND peer URL to
  the unhealthy node, refused when several would match, when the cluster has more than three
  members, when the member answers healthy, or when the healthy members left would be fewer than a
  quorum of the remaining cluster. `None` when it is already gone (a re-run).

The steps after the diagnosis (the Machine copy, the redeployment, the verification, the approval
form) are in `member_steps`. No I/O.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Literal

from etcdguard.core import csr, errors, preflight

__all__ = [
    "MAX_MEMBERS",
    "REPLACES_NODE_ANNOTATION",
    "Diagnosis",
    "Member",
    "Procedure",
    "State",
    "diagnose",
    "etcd_pod_problem",
    "health_urls",
    "parse_members",
    "plan_removal",
]

Obj = Mapping[str, Any]
State = Literal["machine-not-running", "node-not-ready", "etcd-crash-looping"]
Procedure = Literal["4.2.4.1", "4.2.4.2"]

REPLACES_NODE_ANNOTATION = "etcdguard.io/replaces-node"
_MASTER_LABELS = ("node-role.kubernetes.io/master", "node-role.kubernetes.io/control-plane")
_PENDING = re.compile(r"(NAME-PENDING-\S+?)\s+has not started")
_PROCEDURES: dict[State, Procedure] = {
    "machine-not-running": "4.2.4.1",
    "node-not-ready": "4.2.4.1",
    "etcd-crash-looping": "4.2.4.2",
}
MAX_MEMBERS = 3


@dataclasses.dataclass(frozen=True, kw_only=True)
class Member:
    """One line of `etcdctl member list -w json`."""

    id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]

    @property
    def hex_id(self) -> str:
        """The ID as `member remove` and the tables write it."""
        return format(self.id, "x")

    @property
    def started(self) -> bool:
        """An unstarted member has no name and no client URLs."""
        return bool(self.name and self.client_urls)

    def describe(self) -> str:
        return f"{self.hex_id} ({self.name or 'not started'}, {', '.join(self.peer_urls) or 'no peer URL'})"


def parse_members(text: str) -> list[Member]:
    """`etcdctl member list -w json` output -> members; `IntegrityError` when it is not that."""
    try:
        raw = json.loads(text)
        return [
            Member(
                id=int(m["ID"]),
                name=str(m.get("name") or ""),
                peer_urls=tuple(str(u) for u in m.get("peerURLs") or ()),
                client_urls=tuple(str(u) for u in m.get("clientURLs") or ()),
            )
            for m in raw.get("members") or []
        ]
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise errors.IntegrityError(
            "etcdctl member list -w json printed something that is not a member list: "
            f"{errors.truncate_remote(text, limit=200)!r}. Check the etcdctl container of the etcd pod."
        ) from exc


def health_urls(text: str) -> dict[str, bool]:
    """`etcdctl endpoint health --cluster -w json` output -> {client URL: healthy}; {} if unreadable."""
    try:
        raw = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(raw, list):
        return {}
    return {str(h.get("endpoint")): bool(h.get("health")) for h in raw if isinstance(h, Mapping)}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Diagnosis:
    """What is wrong and what to do about it."""

    action: Literal["replace", "nothing-to-do", "undetermined"]
    """`undetermined`: unhealthy for none of the guide's reasons (yet: symptoms can lag the etcd
    operator's message by seconds; the flow looks again before it refuses)."""
    message: str
    members_message: str
    node: str | None = None
    address: str | None = None
    """The node's InternalIP: peer URL `https://<address>:2380`, SSH for 4.2.4.2."""
    machine: str | None = None
    state: State | None = None
    procedure: Procedure | None = None
    evidence: tuple[str, ...] = ()
    resumed: bool = False
    """The member is no longer in the member list: an earlier run removed it; go on from there."""


def _get(obj: Any, *path: str) -> Any:
    for part in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(part)
    return obj


def _address(node: Obj | None, machine: Obj | None) -> str | None:
    for source in (node, machine):
        for item in _get(source, "status", "addresses") or []:
            if isinstance(item, Mapping) and item.get("type") == "InternalIP" and item.get("address"):
                return str(item["address"])
    return None


def _machine_of(machines: Sequence[Obj], node: str) -> Obj | None:
    for machine in machines:
        if _get(machine, "status", "nodeRef", "name") == node:
            return machine
    for machine in machines:
        dns = [a.get("address") for a in _get(machine, "status", "addresses") or [] if isinstance(a, Mapping)]
        if node in dns:
            return machine
    return None


def _instance_state(machine: Obj) -> str | None:
    state = _get(machine, "status", "providerStatus", "instanceState")
    if state is None:
        state = _get(machine, "metadata", "annotations", "machine.openshift.io/instance-state")
    return str(state) if state is not None else None


def _node_problem(node: Obj | None, name: str) -> str | None:
    if node is None:
        return f"node {name} does not exist"
    taints = [str(t.get("key")) for t in _get(node, "spec", "taints") or [] if isinstance(t, Mapping)]
    if "node.kubernetes.io/unreachable" in taints:
        return f"node {name} has the node.kubernetes.io/unreachable taint"
    ready = preflight.condition(node, "Ready")
    if ready is None or ready.get("status") != "True":
        status = ready.get("status") if ready else "missing"
        return f"node {name} is NotReady (Ready {status}: {(ready or {}).get('message') or 'no message'})"
    return None


def etcd_pod_problem(pod: Obj | None) -> str | None:
    """Why the etcd pod is crash-looping (4.2.3 step 3: Error or CrashLoopBackOff), or None."""
    if pod is None:
        return None
    name = _get(pod, "metadata", "name")
    for status in _get(pod, "status", "containerStatuses") or []:
        if not isinstance(status, Mapping) or status.get("name") != "etcd":
            continue
        restarts = int(status.get("restartCount") or 0)
        waiting = _get(status, "state", "waiting", "reason")
        terminated = _get(status, "state", "terminated", "reason")
        last = _get(status, "lastState", "terminated", "reason")
        if waiting == "CrashLoopBackOff":
            return f"pod {name}: container etcd is waiting in CrashLoopBackOff ({restarts} restarts)"
        if terminated == "Error":
            return f"pod {name}: container etcd terminated with Error ({restarts} restarts)"
        if last == "Error" and restarts > 0:
            return f"pod {name}: container etcd restarted {restarts} times, last exit Error"
    return None


def _cert_problem(node: str, csrs: Sequence[csr.CsrView]) -> list[str]:
    """Pending kubelet CSRs of `node`: its kubelet waits for certificates an admin must approve."""
    found = []
    for view in csrs:
        if not view.pending:
            continue
        if view.signer_name == csr.SERVING_SIGNER and view.username == f"system:node:{node}":
            found.append(f"pending kubelet-serving CSR {view.name}")
        elif view.signer_name == csr.CLIENT_SIGNER:
            verdict = csr.validate_csr(view, machines=[], nodes_existing=())
            if verdict.node_name == node:
                found.append(f"pending node-bootstrapper client CSR {view.name}")
    return found


def _is_master(node: Obj) -> bool:
    labels = _get(node, "metadata", "labels") or {}
    return any(label in labels for label in _MASTER_LABELS)


def _member_of(members: Sequence[Member], node: str, address: str | None) -> list[Member]:
    peer = f"https://{address}:2380" if address else None
    return [m for m in members if m.name == node or (peer is not None and peer in m.peer_urls)]


def _without_member(
    nodes: Sequence[Obj], machines: Sequence[Obj], members: Sequence[Member] | None
) -> list[str]:
    if members is None:
        return []
    out = []
    for node in nodes:
        name = str(_get(node, "metadata", "name"))
        if _is_master(node) and not _member_of(members, name, _address(node, _machine_of(machines, name))):
            out.append(name)
    return sorted(out)


def diagnose(
    *,
    etcd: Obj,
    nodes: Sequence[Obj],
    machines: Sequence[Obj],
    etcd_pods: Sequence[Obj],
    csrs: Sequence[csr.CsrView],
    members: Sequence[Member] | None,
    member: str | None = None,
) -> Diagnosis:
    """Guide 4.2.2 and 4.2.3 (see the module docstring). `members` is the member list read in a
    healthy etcd pod (None when it could not be read); `member` the node name an operator named."""
    available = preflight.condition(etcd, "EtcdMembersAvailable")
    if available is None:
        raise errors.PreflightRefused(
            "The etcd operator reports no EtcdMembersAvailable condition, so no unhealthy member can be "
            "identified (guide 4.2.2); check `oc get etcd -o yaml` and the etcd operator's logs."
        )
    text = str(available.get("message") or available.get("reason") or "")
    if available.get("status") != "True":
        raise errors.PreflightRefused(
            f"etcd has lost quorum ({text}): replacing a member cannot help. Restore the cluster with the "
            "restore-cluster flow (guide 4.3.2) from the newest verified backup of this cluster's z-stream."
        )
    unhealthy = sorted(preflight.unhealthy_members(etcd))
    pending = _PENDING.findall(text)
    if member is None:
        if pending:
            raise errors.PreflightRefused(
                f"The etcd operator is adding a member ({', '.join(pending)} has not started: {text}). Wait for "
                "its rollout to finish, then run replace-etcd-member again if a member is still unhealthy."
            )
        if not unhealthy:
            message = f"No unhealthy etcd member: {text}."
            orphans = _without_member(nodes, machines, members)
            if orphans:
                message += (
                    f" But control-plane node(s) {', '.join(orphans)} have no etcd member: if an earlier run was "
                    "interrupted after removing the member, run the flow again with member=<node name>."
                )
            return Diagnosis(action="nothing-to-do", message=message, members_message=text)
        if len(unhealthy) > 1:
            raise errors.PreflightRefused(
                f"{len(unhealthy)} etcd members are unhealthy ({', '.join(unhealthy)}; {text}); the guide replaces a "
                "single member at a time. Run the flow with member=<node name> for the one to replace first."
            )
        target = unhealthy[0]
    else:
        target = member
    by_name = {str(_get(n, "metadata", "name")): n for n in nodes}
    node = by_name.get(target)
    machine = _machine_of(machines, target)
    address = _address(node, machine)
    in_list = _member_of(members, target, address) if members is not None else None
    resumed = in_list == [] and target not in unhealthy
    if node is None and machine is None:
        copies = [
            m for m in machines if _get(m, "metadata", "annotations", REPLACES_NODE_ANNOTATION) == target
        ]
        if copies and resumed:
            new = str(_get(copies[0], "metadata", "name"))
            return Diagnosis(
                action="replace", message=f"Machine {new} is replacing the machine of {target}; waiting for it.",
                members_message=text, node=target, state="machine-not-running", procedure="4.2.4.1",
                evidence=(f"Machine {new} is annotated {REPLACES_NODE_ANNOTATION}={target}",), resumed=True,
            )  # fmt: skip
        raise errors.PreflightRefused(
            f"No Node and no Machine is named {target!r}; give the node name of the unhealthy member as "
            "`oc get etcd -o=jsonpath=...EtcdMembersAvailable` shows it (guide 4.2.2)."
        )
    if node is not None and not _is_master(node):
        raise errors.PreflightRefused(f"Node {target} is not a control-plane node; it runs no etcd member.")
    certs = _cert_problem(target, csrs)
    if certs:
        raise errors.PreflightRefused(
            f"The kubelet of {target} waits for certificates ({'; '.join(certs)}): its control-plane certificates "
            "are not valid, so the guide says not to replace the member. Run the recover-expired-certs flow "
            "(guide 4.3.3) instead."
        )
    machine_name = str(_get(machine, "metadata", "name")) if machine is not None else None
    evidence = [f"EtcdMembersAvailable: {text}"]
    if resumed:
        evidence.append(
            f"{target} has no member in the etcd member list any more (removed by an earlier run)"
        )
    state: State | None = None
    instance = _instance_state(machine) if machine is not None else None
    if machine is not None and instance != "running":
        state = "machine-not-running"
        evidence.append(f"Machine {machine_name}: instance state {instance or 'unknown'}")
    node_problem = _node_problem(node, target)
    if node_problem is not None:
        state = state or "node-not-ready"
        evidence.append(node_problem)
    pod = next((p for p in etcd_pods if _get(p, "metadata", "name") == f"etcd-{target}"), None)
    pod_problem = etcd_pod_problem(pod)
    if pod_problem is not None:
        evidence.append(pod_problem)
    if state is None and pod_problem is not None:
        state = "etcd-crash-looping"
    if state is None and resumed and pod is None:
        state = "etcd-crash-looping"
        evidence.append(f"no pod etcd-{target}: its manifest was moved aside by an earlier run")
    if state is None:
        if target not in unhealthy and not resumed:
            return Diagnosis(
                action="nothing-to-do", message=f"The etcd member of {target} is healthy: {text}.",
                members_message=text, node=target, address=address, machine=machine_name,
            )  # fmt: skip
        return Diagnosis(
            action="undetermined", members_message=text, node=target, address=address, machine=machine_name,
            message=(
                f"The etcd member of {target} is unhealthy ({text}) but its machine runs, its node is Ready and "
                "its etcd pod is not crash-looping: none of the guide's cases (4.2.3) applies. Check "
                f"`oc get pods -n openshift-etcd` and the logs of etcd-{target} before replacing anything."
            ),
            evidence=tuple(evidence),
        )  # fmt: skip
    if address is None:
        raise errors.PreflightRefused(
            f"Neither Node nor Machine of {target} gives an InternalIP, so its etcd member cannot be matched by "
            "peer URL; check `oc get node -o wide` and `oc get machines -o wide`."
        )
    procedure = _PROCEDURES[state]
    return Diagnosis(
        action="replace",
        message=f"The etcd member of {target} is unhealthy: {state.replace('-', ' ')}; procedure {procedure}.",
        members_message=text,
        node=target,
        address=address,
        machine=machine_name,
        state=state,
        procedure=procedure,
        evidence=tuple(evidence),
        resumed=resumed,
    )


def plan_removal(
    members: Sequence[Member], *, node: str, address: str, healthy_urls: Collection[str]
) -> Member | None:
    """The member to remove for `node`, or None when it is already gone; refuses (see the module
    docstring) rather than remove a wrong member or risk quorum."""
    listing = "; ".join(m.describe() for m in members)
    if len(members) > MAX_MEMBERS:
        raise errors.PreflightRefused(
            f"The etcd member list has {len(members)} members, more than {MAX_MEMBERS}: {listing}. Decide by hand "
            "which are not needed (guide 4.2.4.1, last step) before removing anything; etcdguard does not guess."
        )
    peer = f"https://{address}:2380"
    matches = _member_of(members, node, address)
    if not matches:
        return None
    if len(matches) > 1:
        raise errors.PreflightRefused(
            f"{len(matches)} members match node {node} or peer URL {peer}: "
            f"{'; '.join(m.describe() for m in matches)}. Remove the right one by hand."
        )
    target = matches[0]
    if target.name != node or peer not in target.peer_urls:
        raise errors.PreflightRefused(
            f"Member {target.describe()} matches {node} only by {'name' if target.name == node else 'peer URL'} "
            f"(expected name {node} and peer URL {peer}); it may be another host's member. Check "
            "`etcdctl member list -w table` and remove it by hand if it is the right one."
        )
    if any(url in healthy_urls for url in target.client_urls):
        raise errors.PreflightRefused(
            f"Member {target.describe()} answers healthy now; etcdguard does not remove a healthy member. "
            "Run the flow again if it fails again."
        )
    remaining = [m for m in members if m.id != target.id]
    quorum = len(remaining) // 2 + 1
    healthy = [m for m in remaining if any(url in healthy_urls for url in m.client_urls)]
    if len(healthy) < quorum:
        raise errors.PreflightRefused(
            f"Removing member {target.describe()} would leave {len(healthy)} healthy of {len(remaining)} members, "
            f"fewer than a quorum of {quorum}; etcd would stop. Healthy now: "
            f"{', '.join(m.name for m in healthy) or 'none'}. Restore the cluster (restore-cluster) instead."
        )
    return target
