"""Replacing an unhealthy etcd member (guide 4.2), the steps after the diagnosis: pure helpers.

- `next_machine_name`, `clean_machine`: 4.2.4.1 step 3 (the Machine saved, cleaned, renamed);
- `redeploy_reason`, `rollout_done`: the forced redeployment and its end (AllNodesAtLatestRevision);
- `check_members`: the verification (one started, healthy member per control-plane node);
- `approval_summary`: what the operator approves.

No I/O and no clock: callers pass `now`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from etcdguard.core import openshift
from etcdguard.core.member_plan import MAX_MEMBERS, REPLACES_NODE_ANNOTATION, Diagnosis, Member

__all__ = [
    "REPLACES_MACHINE_ANNOTATION",
    "REPLACES_NODE_ANNOTATION",
    "MemberCheck",
    "approval_summary",
    "check_members",
    "clean_machine",
    "next_machine_name",
    "redeploy_reason",
    "rollout_done",
]

Obj = Mapping[str, Any]

REPLACES_MACHINE_ANNOTATION = "etcdguard.io/replaces-machine"


def next_machine_name(old: str, existing: Sequence[str]) -> str:
    """4.2.4.1 step 3c: `openshift.next_machine_name`."""
    return openshift.next_machine_name(old, existing)


def clean_machine(machine: Obj, *, new_name: str, node: str) -> dict[str, Any]:
    """4.2.4.1 step 3c: `openshift.clean_machine`, annotated with the node and Machine it replaces,
    so that a re-run finds the copy and verification knows which node is new."""
    old_name = str((machine.get("metadata") or {}).get("name", ""))
    return openshift.clean_machine(
        machine,
        new_name=new_name,
        annotations={REPLACES_NODE_ANNOTATION: node, REPLACES_MACHINE_ANNOTATION: old_name},
    )


redeploy_reason = openshift.redeploy_reason
rollout_done = openshift.rollout_done


@dataclasses.dataclass(frozen=True, kw_only=True)
class MemberCheck:
    """The verification: one started, healthy member per control-plane node, nothing else."""

    done: bool
    message: str
    extra: tuple[Member, ...] = ()
    """Members that belong to no control-plane node: reported, never removed automatically."""


def check_members(
    members: Sequence[Member], health: Mapping[str, bool], *, control_plane: Mapping[str, str]
) -> MemberCheck:
    """`control_plane` maps each control-plane node to its InternalIP."""
    expected = {name: f"https://{ip}:2380" for name, ip in control_plane.items()}
    extra = tuple(
        m for m in members if not any(m.name == n or url in m.peer_urls for n, url in expected.items())
    )
    if len(members) > MAX_MEMBERS or extra:
        return MemberCheck(
            done=False,
            message=(
                f"{len(members)} etcd members, of which {len(extra)} belong to no control-plane node: "
                f"{'; '.join(m.describe() for m in (extra or tuple(members)))}"
            ),
            extra=extra or tuple(members),
        )
    missing = [
        n
        for n, url in sorted(expected.items())
        if not any(m.name == n and url in m.peer_urls and m.started for m in members)
    ]
    sick = sorted(url for url, ok in health.items() if not ok)
    unanswered = [m.name for m in members if m.started and not any(u in health for u in m.client_urls)]
    if missing or sick or unanswered or len(members) != len(expected):
        parts = [f"{len(members)} members for {len(expected)} control-plane nodes"]
        if missing:
            parts.append(f"no started member for {', '.join(missing)}")
        if sick:
            parts.append(f"unhealthy endpoints {', '.join(sick)}")
        if unanswered:
            parts.append(f"no health answer from {', '.join(unanswered)}")
        return MemberCheck(done=False, message="; ".join(parts))
    return MemberCheck(done=True, message=f"{len(members)} started members, every endpoint healthy")


def approval_summary(
    *, cluster: str, diagnosis: Diagnosis, backup: str, member_to_remove: str | None, new_machine: str | None
) -> str:
    """What the operator approves: the member, its state, the procedure and each change."""
    d = diagnosis
    lines = [
        f"# Replace the etcd member of `{d.node}` on `{cluster}` (guide {d.procedure})",
        "",
        f"- state: **{d.state}**",
        *(f"- seen: {line}" for line in d.evidence),
        f"- backup taken before any change: {backup}",
        "",
        "## What will change",
        "",
    ]
    if d.resumed:
        lines.append("- **resuming** an earlier run: steps already done are skipped")
    if d.procedure == "4.2.4.2":
        lines.append(
            f"- on host `{d.node}` ({d.address}): `/etc/kubernetes/manifests/etcd-pod.yaml` moved to "
            "`/var/lib/etcd-backup/`, `/var/lib/etcd/` moved to `/tmp`"
        )
    lines.append(
        f"- `etcdctl member remove` of member {member_to_remove or '(already removed)'} "
        f"(name `{d.node}`, peer URL `https://{d.address}:2380`), through a healthy etcd pod"
    )
    lines.append(
        f"- secrets `etcd-peer-{d.node}`, `etcd-serving-{d.node}`, `etcd-serving-metrics-{d.node}` deleted "
        "(openshift-etcd)"
    )
    if d.procedure == "4.2.4.1":
        lines.append(
            f"- Machine `{d.machine}` deleted (its instance is terminated) and re-created as `{new_machine}`; "
            "the new node's kubelet CSRs approved after validation; a forced etcd redeployment if only two "
            "etcd pods appear"
        )
    else:
        lines.append("- etcd redeployment forced (`forceRedeploymentReason: single-master-recovery-<time>`)")
    lines += ["", "Type the cluster's name to confirm, give a reason, and tick approve."]
    return "\n".join(lines) + "\n"
