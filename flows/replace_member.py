"""`replace-etcd-member`: guide 4.2 as a flow, triggered from the Prefect UI.

diagnosis (4.2.2, 4.2.3; refuses on lost quorum -> restore-cluster, on a kubelet waiting for
certificates -> recover-expired-certs; nothing to do when no member is unhealthy) -> optionally
wait for a stopped machine to come back (the guide's note) -> a backup younger than
`backup_max_age_h`, or a new one -> the member to remove, guarded (`member_plan.plan_removal`) ->
approval form -> 4.2.4.1 (member, secrets, Machine re-created, CSRs approved, redeployment if only
two etcd pods appear) or 4.2.4.2 (manifest and data dir moved aside on the host, member,
secrets, `single-master-recovery-<time>` redeployment) -> verification (one started, healthy
member per control-plane node) -> report (artifact, event).

Every destructive step checks the current state first: re-running with `member=<node>` after an
interruption skips what was done (member removed, secrets gone, Machine copy created).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Literal, TypeVar

import pydantic
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.concurrency.sync import concurrency

from etcdguard.core import errors, member_plan, member_steps, profile
from flows._approval import ApprovalRecord, request_approval
from flows._prefect import cluster_lock_name, ensure_cluster_lock, send_event
from flows.backup import etcd_backup
from tasks import kube as kube_tasks
from tasks import replace_member as t

__all__ = ["ReplaceOutcome", "replace_etcd_member"]

T = TypeVar("T")

MACHINE_TIMEOUT_S = 900.0
"""How long a re-created Machine may take to run with a Ready node."""
ETCD_PODS_WAIT_S = 90.0
"""How long to wait for the new node's etcd pod before forcing a redeployment (4.2.4.1)."""
ROLLOUT_TIMEOUT_S = 900.0
SYMPTOMS_WAIT_S = 30.0
"""How long an unhealthy member may show none of the guide's symptoms (they lag the etcd
operator's message by seconds) before the flow refuses."""
VERIFY_TIMEOUT_S = 300.0
_MACHINE_POLL_S = 5.0


class ReplaceOutcome(pydantic.BaseModel):
    """What a run did, for callers and the UI."""

    status: Literal["replaced", "nothing-to-do", "came-back"]
    cluster: str
    message: str
    node: str | None = None
    state: str | None = None
    procedure: str | None = None
    backup_id: str | None = None
    new_machine: str | None = None
    new_node: str | None = None
    steps: list[str] = []
    timings: dict[str, float] = {}
    members: list[str] = []


class _Journal:
    """Steps done and their durations, for the report (also when the run fails)."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.steps: list[str] = []
        self.timings: dict[str, float] = {}

    def run(self, name: str, call: Callable[[], T]) -> T:
        began = time.monotonic()
        result = call()
        self.timings[name] = round(time.monotonic() - began, 1)
        return result

    def note(self, *lines: str) -> None:
        self.steps.extend(lines)


def _api_down(cluster: str, exc: errors.TransientError) -> errors.PreflightRefused:
    return errors.PreflightRefused(
        f"The API of cluster {cluster} does not answer ({exc}). When two or more control-plane hosts are down, "
        "etcd has lost quorum and replacing a member cannot help: recover with the restore-cluster flow "
        "(guide 4.3.2) from the newest verified backup of this cluster's z-stream."
    )


def _diagnose(
    cluster_profile: profile.ClusterProfile, member: str | None, *, task: bool = True
) -> tuple[member_plan.Diagnosis, t.ClusterView]:
    try:
        view = (
            t.read_cluster(cluster_profile, avoid=member)
            if task
            else t.observe(cluster_profile, avoid=member)
        )
    except errors.TransientError as exc:
        raise _api_down(cluster_profile.name, exc) from exc
    diagnosis = member_plan.diagnose(
        etcd=view.etcd,
        nodes=view.nodes,
        machines=view.machines,
        etcd_pods=view.etcd_pods,
        csrs=view.csrs,
        members=view.members,
        member=member,
    )
    return diagnosis, view


def _wait_for_machine(cluster_profile: profile.ClusterProfile, node: str, seconds: int) -> bool:
    """The guide's note: a machine expected back needs no replacement. True when it came back."""
    logger = get_run_logger()
    logger.info("The machine of %s is not running; waiting up to %d s for it to come back.", node, seconds)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(_MACHINE_POLL_S)
        try:
            again, _ = _diagnose(cluster_profile, node, task=False)
        except errors.PreflightRefused as exc:
            logger.info("Still waiting: %s", exc)
            continue
        if again.action == "nothing-to-do":
            return True
    logger.warning("The machine of %s did not come back within %d s; replacing its member.", node, seconds)
    return False


def _backup(
    cluster_profile: profile.ClusterProfile, *, max_age_h: float, journal: _Journal
) -> tuple[str, str]:
    """4.2.1: a backup younger than `max_age_h`, or a new one (etcd-backup, forced): its id, and
    a line for the approval form."""
    found = t.newest_backup(cluster_profile)
    now = datetime.now(UTC)
    if found is not None and now - found[1] < timedelta(hours=max_age_h):
        age = (now - found[1]).total_seconds() / 3600
        journal.note(f"backup `{found[0]}` ({age:.1f} h old) is recent enough")
        return found[0], f"`{found[0]}`, {age:.1f} h old"
    outcome = journal.run("backup", lambda: etcd_backup(cluster_profile.name, force=True))
    if outcome.backup_id is None:
        raise errors.PreflightRefused(
            f"No backup of {cluster_profile.name} younger than {max_age_h:g} h exists and taking one did not "
            f"complete ({outcome.message}); the guide requires a backup before replacing a member."
        )
    journal.note(f"took backup `{outcome.backup_id}`")
    return outcome.backup_id, f"`{outcome.backup_id}`, taken by this run"


def _member_to_remove(diagnosis: member_plan.Diagnosis, view: t.ClusterView) -> member_plan.Member | None:
    if view.members is None:
        raise errors.PreflightRefused(
            "No healthy etcd pod answered `etcdctl member list`, so the member to remove cannot be checked; "
            "check `oc get pods -n openshift-etcd` and run the flow again."
        )
    healthy = {url for url, ok in view.health.items() if ok}
    if diagnosis.node is None or diagnosis.address is None:
        return None  # resuming after the Machine was replaced: its member was removed before
    return member_plan.plan_removal(
        view.members, node=diagnosis.node, address=diagnosis.address, healthy_urls=healthy
    )


def _new_machine_name(diagnosis: member_plan.Diagnosis, view: t.ClusterView) -> str | None:
    names = [str(m["metadata"]["name"]) for m in view.machines]
    for machine in view.machines:
        if (machine["metadata"].get("annotations") or {}).get(
            member_plan.REPLACES_NODE_ANNOTATION
        ) == diagnosis.node:
            return str(machine["metadata"]["name"])
    return member_steps.next_machine_name(diagnosis.machine, names) if diagnosis.machine else None


def _replace_machine_member(
    cluster_profile: profile.ClusterProfile, diagnosis: member_plan.Diagnosis, journal: _Journal
) -> kube_tasks.MachineReplacement:
    """4.2.4.1 (the machine is not running, or the node is not ready)."""
    node, address = str(diagnosis.node), str(diagnosis.address)
    # 4.2.4.1 step 1: remove the unhealthy member (`etcdctl member remove`), from a healthy pod.
    if diagnosis.address is not None:
        journal.note(
            journal.run("remove member", lambda: t.remove_member(cluster_profile, node=node, address=address))
        )
    # 4.2.4.1 step 2: delete the removed member's old secrets (peer, serving, serving-metrics).
    journal.note(*journal.run("delete secrets", lambda: t.delete_member_secrets(cluster_profile, node=node)))
    # 4.2.4.1 step 3: delete and re-create the control-plane machine (a copy first, see tasks.kube).
    machine = journal.run(
        "re-create machine",
        lambda: kube_tasks.replace_machine(
            cluster_profile,
            old_name=diagnosis.machine,
            annotations={
                member_plan.REPLACES_NODE_ANNOTATION: node,
                member_steps.REPLACES_MACHINE_ANNOTATION: str(diagnosis.machine or ""),
            },
            marker=member_plan.REPLACES_NODE_ANNOTATION,
            csrs_of_new_node_only=True,
            timeout=MACHINE_TIMEOUT_S,
            guide_step="4.2.4.1 step 3",
            rerun_hint=t.RERUN_HINT,
        ),
    )
    journal.note(
        f"Machine {machine.new} replaces {machine.old}: {machine.state}",
        *(f"approved CSR {c}" for c in machine.csrs_approved),
    )
    # 4.2.4.1 step 3 (end): the new machine's etcd pod runs; if not, force a new revision.
    pods = journal.run(
        "wait for etcd pods", lambda: t.wait_etcd_pods(cluster_profile, count=3, timeout=ETCD_PODS_WAIT_S)
    )
    if pods < 3:
        journal.note(f"only {pods} etcd pods after {ETCD_PODS_WAIT_S:.0f} s: forcing a redeployment")
        _redeploy_etcd(cluster_profile, journal, prefix="recovery")
    return machine


def _redeploy_etcd(cluster_profile: profile.ClusterProfile, journal: _Journal, *, prefix: str) -> None:
    before = journal.run(
        "force redeployment",
        lambda: kube_tasks.force_redeployment(cluster_profile, kind="Etcd", prefix=prefix),
    )
    journal.note(
        journal.run(
            "rollout",
            lambda: kube_tasks.wait_rollout(
                cluster_profile, kind="Etcd", after=before, timeout=ROLLOUT_TIMEOUT_S, rerun_hint=t.RERUN_HINT
            ),
        )
    )


def _replace_crashlooping_member(
    cluster_profile: profile.ClusterProfile, diagnosis: member_plan.Diagnosis, journal: _Journal
) -> None:
    """4.2.4.2 (the etcd pod is crash-looping)."""
    node, address = str(diagnosis.node), str(diagnosis.address)
    # 4.2.4.2 step 1: stop the crash-looping etcd pod (manifest out, data directory aside).
    journal.note(
        *journal.run(
            "move etcd aside", lambda: t.move_etcd_aside(cluster_profile, node=node, address=address)
        )
    )
    # 4.2.4.2 step 2: remove the unhealthy member.
    journal.note(
        journal.run("remove member", lambda: t.remove_member(cluster_profile, node=node, address=address))
    )
    # 4.2.4.2 step 3: delete the removed member's old secrets.
    journal.note(*journal.run("delete secrets", lambda: t.delete_member_secrets(cluster_profile, node=node)))
    # 4.2.4.2 step 4: force the etcd redeployment and wait for every node at the new revision.
    _redeploy_etcd(cluster_profile, journal, prefix="single-master-recovery")


def _report(
    cluster: str,
    *,
    diagnosis: member_plan.Diagnosis | None,
    approval: ApprovalRecord | None,
    journal: _Journal,
    result: str,
    members: list[str],
) -> str:
    lines = [f"# replace-etcd-member on `{cluster}` (guide 4.2)", "", f"**{result}**", ""]
    if diagnosis is not None:
        lines += ["## Diagnosis", "", f"- {diagnosis.message}", *(f"- {e}" for e in diagnosis.evidence), ""]
        if diagnosis.procedure:
            lines += [f"Procedure: **{diagnosis.procedure}** ({diagnosis.state}).", ""]
    if approval is not None:
        lines += [
            f"Approved by {approval.approved_by} at {approval.approved_at:%Y-%m-%d %H:%M:%S} UTC: {approval.reason}",
            "",
        ]
    if journal.steps:
        lines += ["## Steps", "", *(f"- {s}" for s in journal.steps), ""]
    total = time.monotonic() - journal.started
    lines += ["## Timings", "", "| step | seconds |", "|---|---:|"]
    lines += [f"| {name} | {seconds:.1f} |" for name, seconds in journal.timings.items()]
    lines += [f"| **total** | {total:.1f} |", ""]
    if members:
        lines += ["## etcd members after the run", "", *(f"- {m}" for m in members), ""]
    return "\n".join(lines)


def _replace(
    cluster_profile: profile.ClusterProfile,
    *,
    member: str | None,
    wait_for_machine_s: int,
    backup_max_age_h: float,
    approval_timeout_s: int,
    journal: _Journal,
    seen: list[member_plan.Diagnosis],
    approvals: list[ApprovalRecord],
) -> ReplaceOutcome:
    cluster = cluster_profile.name
    logger = get_run_logger()
    diagnosis, view = journal.run("diagnosis", lambda: _diagnose(cluster_profile, member))
    deadline = time.monotonic() + SYMPTOMS_WAIT_S
    while diagnosis.action == "undetermined" and time.monotonic() < deadline:
        logger.info("%s Looking again in %.0f s.", diagnosis.message, _MACHINE_POLL_S)
        time.sleep(_MACHINE_POLL_S)
        diagnosis, view = _diagnose(cluster_profile, member, task=False)
    seen.append(diagnosis)
    if diagnosis.action == "undetermined":
        raise errors.PreflightRefused(diagnosis.message)
    logger.info("%s", diagnosis.message)
    if diagnosis.action == "nothing-to-do":
        return ReplaceOutcome(
            status="nothing-to-do", cluster=cluster, message=diagnosis.message, node=diagnosis.node
        )
    if diagnosis.state == "machine-not-running" and wait_for_machine_s > 0 and not diagnosis.resumed:
        node = str(diagnosis.node)
        if journal.run(
            "wait for the machine", lambda: _wait_for_machine(cluster_profile, node, wait_for_machine_s)
        ):
            message = (
                f"The machine of {node} came back and its etcd member is healthy again; nothing was replaced."
            )
            journal.note(message)
            return ReplaceOutcome(
                status="came-back", cluster=cluster, message=message, node=node, state=diagnosis.state
            )
        diagnosis, view = _diagnose(cluster_profile, node)
        seen[-1] = diagnosis
    backup_id, backup = _backup(cluster_profile, max_age_h=backup_max_age_h, journal=journal)
    target = _member_to_remove(diagnosis, view)  # guards before anyone is asked to approve
    new_machine = _new_machine_name(diagnosis, view) if diagnosis.procedure == "4.2.4.1" else None
    summary = member_steps.approval_summary(
        cluster=cluster,
        diagnosis=diagnosis,
        backup=backup,
        member_to_remove=target.hex_id if target else None,
        new_machine=new_machine,
    )
    approvals.append(
        request_approval(
            cluster=cluster,
            action="replace-etcd-member",
            summary_markdown=summary,
            timeout_s=approval_timeout_s,
        )
    )
    machine: kube_tasks.MachineReplacement | None = None
    if diagnosis.procedure == "4.2.4.1":
        machine = _replace_machine_member(cluster_profile, diagnosis, journal)
    else:
        _replace_crashlooping_member(cluster_profile, diagnosis, journal)
    members = journal.run("verify", lambda: t.verify_members(cluster_profile, timeout=VERIFY_TIMEOUT_S))
    new_node = machine.node if machine is not None else None
    message = (
        f"The etcd member of {diagnosis.node} was replaced (procedure {diagnosis.procedure}"
        + (f", new node {new_node}" if new_node else "")
        + f"); {len([m for m in members if m.startswith('member ')])} started members, every endpoint healthy."
    )
    return ReplaceOutcome(
        status="replaced",
        cluster=cluster,
        message=message,
        node=diagnosis.node,
        state=diagnosis.state,
        procedure=diagnosis.procedure,
        backup_id=backup_id,
        new_machine=machine.new if machine is not None else None,
        new_node=new_node,
        steps=list(journal.steps),
        timings=dict(journal.timings),
        members=members,
    )


@flow(name="replace-etcd-member")
def replace_etcd_member(
    cluster: str,
    member: str | None = None,
    wait_for_machine_s: int = 0,
    backup_max_age_h: float = 24,
    approval_timeout_s: int = 3600,
) -> ReplaceOutcome:
    """Replace ONE unhealthy etcd member (guide 4.2), after a diagnosis, a backup and an approval.

    Args:
        cluster: the profile name (`profiles/<cluster>.yaml`).
        member: the node name of the member to replace; default: the one `EtcdMembersAvailable` calls
            unhealthy. Name it to resume an interrupted run (steps already done are skipped).
        wait_for_machine_s: when the member's machine is stopped, first wait this long for it to come
            back (the guide: a machine expected back needs no replacement); 0 replaces at once.
        backup_max_age_h: the newest backup must be younger than this, else one is taken first.
        approval_timeout_s: how long the approval form waits for an operator.
    """
    cluster_profile = profile.load_profile(cluster)  # ConfigError before any side effect
    journal = _Journal()
    seen: list[member_plan.Diagnosis] = []
    approvals: list[ApprovalRecord] = []
    lock = cluster_lock_name("replace-member", cluster)
    ensure_cluster_lock(lock)
    locked = False
    try:
        with concurrency(lock, occupy=1, timeout_seconds=15, strict=True):
            locked = True
            outcome = _replace(
                cluster_profile,
                member=member,
                wait_for_machine_s=wait_for_machine_s,
                backup_max_age_h=backup_max_age_h,
                approval_timeout_s=approval_timeout_s,
                journal=journal,
                seen=seen,
                approvals=approvals,
            )
    except Exception as exc:
        text = errors.truncate_remote(str(exc), limit=1000)
        busy = isinstance(exc, TimeoutError) and not locked
        if busy:
            text = (
                f"Another replace-etcd-member run of {cluster} holds the cluster's lock ({lock}); nothing was "
                "changed. Wait for it to finish."
            )
        create_markdown_artifact(
            _report(
                cluster,
                diagnosis=seen[-1] if seen else None,
                approval=approvals[-1] if approvals else None,
                journal=journal,
                result=f"Failed: {text}",
                members=[],
            ),
            key=f"replace-etcd-member-{cluster}",
            description=f"replace-etcd-member on {cluster}: failed",
        )
        send_event(
            "etcdguard.member.failed",
            cluster=cluster,
            payload={"error": text, "type": type(exc).__name__, "node": seen[-1].node if seen else member},
        )
        if busy:
            raise errors.PreflightRefused(text) from exc
        raise
    create_markdown_artifact(
        _report(
            cluster,
            diagnosis=seen[-1] if seen else None,
            approval=approvals[-1] if approvals else None,
            journal=journal,
            result=outcome.message,
            members=outcome.members,
        ),
        key=f"replace-etcd-member-{cluster}",
        description=f"replace-etcd-member on {cluster}: {outcome.status}",
    )
    if outcome.status == "replaced":
        send_event(
            "etcdguard.member.replaced",
            cluster=cluster,
            payload={
                "node": outcome.node,
                "procedure": outcome.procedure,
                "new_node": outcome.new_node,
                "timings": outcome.timings,
            },
        )
    get_run_logger().info("%s", outcome.message)
    return outcome
