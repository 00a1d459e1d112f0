"""`graceful-shutdown` (guide chapter 2) and `graceful-restart` (chapter 3) as flows.

graceful-shutdown: the cluster's machines and the kubelet signer's expiry (refuse, unless forced,
when it is closer than `shutdown.min_cert_margin_days`) -> a verified backup younger than N hours,
or one taken now -> approval gate -> the machines' instance ids recorded next to the backups
(the API is down while the cluster is) -> every node shut down, workers first (`shutdown -h 1`
over SSH, or EC2 StopInstances) -> wait until EC2 reports them stopped -> report: the last safe
restart date and the external dependencies to stop now.

graceful-restart: the machines (from the API, or the recorded state when it does not answer) ->
EC2 StartInstances -> wait for the API -> approve valid kubelet CSRs (recover-expired-certs'
validator) -> every node Ready, no ClusterOperator Degraded. When the cluster is not back within
the timeout (or a machine can never come back), the run fails saying exactly what is wrong and
naming the backup to restore with restore-cluster.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Literal

import pydantic
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from etcdguard.core import errors, lifecycle, profile
from flows._approval import request_approval
from flows.backup import etcd_backup
from flows.certs import CsrLedger
from tasks import power
from tasks.certs import observe

__all__ = ["RestartOutcome", "ShutdownOutcome", "graceful_restart", "graceful_shutdown"]

_GONE = ("terminated", "shutting-down", "missing")


class NodeShutdown(pydantic.BaseModel):
    machine: str
    node: str | None
    role: str
    instance_id: str
    how: str
    final_state: str


class ShutdownOutcome(pydantic.BaseModel):
    cluster: str
    backup_id: str
    backup_taken_now: bool
    cert_not_after: datetime | None
    last_safe_restart: datetime | None
    method: str
    nodes: list[NodeShutdown]
    state_uri: str
    external_dependencies: list[str]
    message: str


class RestartOutcome(pydantic.BaseModel):
    cluster: str
    machines_from: Literal["api", "shutdown-state"]
    started: list[str]
    milestones_s: dict[str, float]
    approved_csrs: list[str]
    message: str


def _machines_table(records: tuple[lifecycle.MachineRecord, ...]) -> str:
    rows = "\n".join(
        f"| {r.role} | `{r.machine}` | `{r.node or '-'}` | `{r.instance_id}` | {r.zone} |" for r in records
    )
    return f"| role | machine | node | instance | zone |\n|---|---|---|---|---|\n{rows}\n"


def _dependencies(items: tuple[str, ...] | list[str], verb: str) -> str:
    if not items:
        return f"The profile lists no external dependencies to {verb}.\n"
    return "".join(f"- [ ] {verb} **{item}**\n" for item in items)


def _shut_down(
    cluster_profile: profile.ClusterProfile, *, records: tuple[lifecycle.MachineRecord, ...], method: str
) -> dict[str, str]:
    """Workers first, then control-plane hosts; returns instance id -> how it was shut down."""
    logger = get_run_logger()
    how: dict[str, str] = {}
    for role in ("worker", "master"):
        group = [r for r in records if r.role == role]
        if method == "ec2":
            power.stop_instances(cluster_profile, instance_ids=[r.instance_id for r in group])
            how.update({r.instance_id: "EC2 StopInstances" for r in group})
            continue
        for record in group:
            try:
                said = power.schedule_host_shutdown(cluster_profile, record=record)
                how[record.instance_id] = f"`shutdown -h 1` over SSH ({said or 'scheduled'})"
            except (errors.TransientError, errors.NotFoundError) as exc:
                logger.warning(
                    "SSH to %s failed (%s); stopping its instance through EC2.", record.machine, exc
                )
                power.stop_instances(cluster_profile, instance_ids=[record.instance_id])
                how[record.instance_id] = (
                    f"EC2 StopInstances (SSH failed: {errors.truncate_remote(str(exc), limit=160)})"
                )
    return how


@flow(name="graceful-shutdown")
def graceful_shutdown(
    cluster: str,
    backup_max_age_h: float = 24.0,
    force: bool = False,
    method: Literal["shutdown", "ec2"] = "shutdown",
    approval_timeout_s: int = 3600,
) -> ShutdownOutcome:
    """Shut the cluster down so that it can be restarted later (guide chapter 2).

    Args:
        cluster: the profile name.
        backup_max_age_h: reuse a verified backup younger than this; otherwise take one now.
        force: shut down even when the kubelet signer expires sooner than shutdown.min_cert_margin_days.
        method: `shutdown` runs `sudo shutdown -h 1` on every node over SSH (the guide's way; a node SSH
            cannot reach is stopped through EC2); `ec2` stops the instances through the EC2 API.
        approval_timeout_s: how long the run waits for an operator's approval.
    """
    logger = get_run_logger()
    cluster_profile = profile.load_profile(cluster)
    power.cloud_settings(cluster_profile)  # ConfigError before any side effect
    now = datetime.now(UTC).replace(microsecond=0)
    state, annotation = power.read_inventory(cluster_profile)
    margin = cluster_profile.shutdown.min_cert_margin_days
    try:
        expiry: lifecycle.CertExpiry | None = lifecycle.assess_cert_expiry(
            annotation, now=now, margin_days=margin
        )
    except ValueError as exc:
        if not force:
            raise errors.PreflightRefused(f"{exc} Run again with force=True to shut down anyway.") from exc
        logger.warning("%s Going on: force=True.", exc)
        expiry = None
    if expiry is not None:
        if expiry.too_close and not force:
            raise errors.PreflightRefused(
                f"{expiry.message} Refusing to shut {cluster} down; run again with force=True if you must."
            )
        if expiry.too_close:
            logger.warning("%s Going on: force=True.", expiry.message)
        else:
            logger.info("%s", expiry.message)
        state = state.model_copy(update={"cert_not_after": expiry.not_after})

    backup_id, notes = power.find_recent_verified_backup(cluster_profile, max_age_h=backup_max_age_h, now=now)
    for note in notes:
        logger.warning("%s", note)
    taken_now = backup_id is None
    if backup_id is None:
        logger.info("Taking a backup of %s now (guide 2.1: back up etcd before shutting down).", cluster)
        backup = etcd_backup(cluster, force=True)
        if backup.status != "completed" or backup.backup_id is None:
            raise errors.PreflightRefused(
                f"No backup of {cluster} could be taken ({backup.message}); not shutting down."
            )
        backup_id = backup.backup_id

    how_text = "`sudo shutdown -h 1` over SSH" if method == "shutdown" else "EC2 StopInstances"
    summary = (
        f"# Shut down cluster `{cluster}` (guide 2)\n\n"
        f"Every node below is shut down with {how_text}, workers first.\n\n{_machines_table(state.machines)}\n"
        f"- backup: `{backup_id}`{' (taken by this run)' if taken_now else ''}\n"
        f"- {expiry.message if expiry else 'certificate expiry unknown (forced)'}\n\n"
        f"After the shutdown, stop these external dependencies:\n\n"
        f"{_dependencies(cluster_profile.external_dependencies, 'stop')}"
    )
    approval = request_approval(
        cluster=cluster, action="graceful-shutdown", summary_markdown=summary, timeout_s=approval_timeout_s
    )
    fresh, _ = power.read_inventory(cluster_profile)  # the approval may have taken an hour
    if [(r.machine, r.instance_id) for r in fresh.machines] != [
        (r.machine, r.instance_id) for r in state.machines
    ]:
        raise errors.PreflightRefused(
            f"The machines of {cluster} changed while the shutdown waited for approval; nothing was shut down. "
            "Run graceful-shutdown again and review the new list."
        )
    state_uri = power.save_shutdown_state(cluster_profile, state=state)
    how = _shut_down(cluster_profile, records=state.machines, method=method)
    ids = [r.instance_id for r in state.machines]
    wait = 240.0 if method == "shutdown" else 120.0
    states = power.wait_for_instances(cluster_profile, instance_ids=ids, wanted="stopped", timeout_s=wait)
    nodes = [
        NodeShutdown(
            machine=r.machine,
            node=r.node,
            role=r.role,
            instance_id=r.instance_id,
            how=how.get(r.instance_id, "?"),
            final_state=states.get(r.instance_id, "unknown"),
        )
        for r in state.machines
    ]
    running = [n for n in nodes if n.final_state != "stopped"]
    rows = "\n".join(
        f"| {n.role} | `{n.machine}` | `{n.instance_id}` | {n.how} | **{n.final_state}** |" for n in nodes
    )
    message = (
        f"{cluster} is shut down: {len(nodes) - len(running)} of {len(nodes)} instances stopped."
        if not running
        else f"{len(running)} instance(s) of {cluster} did not stop within {wait:.0f} s: "
        + ", ".join(f"{n.machine} ({n.instance_id}: {n.final_state})" for n in running)
    )
    restart_by = (
        f"**last safe restart: {expiry.last_safe_restart:%Y-%m-%d %H:%M:%S} UTC** (kubelet signer expiry)"
        if expiry
        else "last safe restart: unknown (the signer's expiry could not be read)"
    )
    create_markdown_artifact(
        f"# graceful-shutdown of `{cluster}`\n\n**{message}**\n\n- {restart_by}\n"
        f"- approved by {approval.approved_by}: {approval.reason}\n- backup: `{backup_id}`\n"
        f"- machines recorded for graceful-restart: `{state_uri}`\n\n"
        "| role | machine | instance | shut down by | state |\n|---|---|---|---|---|\n"
        f"{rows}\n\n## Now stop the external dependencies (guide 2 step 3)\n\n"
        f"{_dependencies(cluster_profile.external_dependencies, 'stop')}",
        key=f"graceful-shutdown-{cluster}",
        description=f"graceful shutdown of {cluster}",
    )
    if running:
        raise errors.PermanentError(message + " Check them in the cloud console and stop them there.")
    logger.info("%s", message)
    return ShutdownOutcome(
        cluster=cluster,
        backup_id=backup_id,
        backup_taken_now=taken_now,
        cert_not_after=expiry.not_after if expiry else None,
        last_safe_restart=expiry.last_safe_restart if expiry else None,
        method=method,
        nodes=nodes,
        state_uri=state_uri,
        external_dependencies=list(cluster_profile.external_dependencies),
        message=message,
    )


def _machines_to_start(
    cluster_profile: profile.ClusterProfile,
) -> tuple[lifecycle.ShutdownState, Literal["api", "shutdown-state"]]:
    logger = get_run_logger()
    try:
        # Once, without retries: after a shutdown the API is usually down, and the state file answers.
        state, _ = power.read_inventory.with_options(retries=0)(cluster_profile)
        return state, "api"
    except errors.TransientError as exc:
        logger.info("The API does not answer (%s); using the machines recorded at shutdown.", exc)
    recorded = power.load_shutdown_state(cluster_profile)
    if recorded is None:
        raise errors.NotFoundError(
            f"The API of {cluster_profile.name} does not answer and no shutdown state was recorded (graceful-shutdown "
            "writes it); start the instances in the cloud console, then run recover-expired-certs."
        )
    return recorded, "shutdown-state"


def _gone_problems(records: tuple[lifecycle.MachineRecord, ...], states: dict[str, str]) -> list[str]:
    out = []
    for r in records:
        state = states.get(r.instance_id)
        if state in _GONE:
            out.append(
                f"machine {r.machine} ({r.role}, node {r.node or '-'}, instance {r.instance_id}) is {state}: "
                "it will never come back"
            )
        elif state is not None and state != "running":
            out.append(
                f"machine {r.machine} (node {r.node or '-'}, instance {r.instance_id}) is {state}, not running"
            )
    return out


@flow(name="graceful-restart")
def graceful_restart(cluster: str, timeout_s: int = 1200, poll_s: float = 5.0) -> RestartOutcome:
    """Start a cluster that graceful-shutdown stopped and check that it is healthy (guide chapter 3).

    Args:
        cluster: the profile name.
        timeout_s: how long the cluster has to come back (the guide waits about 10 minutes before even
            looking); after it, the run fails naming what is wrong and the backup to restore.
        poll_s: seconds between checks.
    """
    logger = get_run_logger()
    cluster_profile = profile.load_profile(cluster)
    power.cloud_settings(cluster_profile)
    started_at = time.monotonic()
    state, source = _machines_to_start(cluster_profile)
    records = state.machines
    deps = cluster_profile.external_dependencies
    if deps:
        logger.warning("Guide 3 step 1: the external dependencies must be on first: %s.", ", ".join(deps))
    ids = [r.instance_id for r in records]
    states = power.describe_instances(cluster_profile, ids)
    to_start = [i for i in ids if states.get(i) == "stopped"]
    if to_start:
        power.start_instances(cluster_profile, instance_ids=to_start)
    logger.info("Started %d of %d instances; waiting for the control plane.", len(to_start), len(ids))
    ledger = CsrLedger()
    milestones: dict[str, float] = {}
    settled = 0
    masters = {r.node for r in records if r.role == "master" and r.node}
    expected = [r.node for r in records if r.node]
    while True:
        elapsed = round(time.monotonic() - started_at, 1)
        try:
            states = power.describe_instances(cluster_profile, ids)
        except errors.TransientError as exc:
            logger.warning("%s", exc)
        late = [i for i, s in states.items() if s == "stopped" and i not in to_start]  # was still stopping
        if late:
            power.start_instances(cluster_profile, instance_ids=late)
            to_start += late
        gone = {i for i, s in states.items() if s in _GONE}
        problems = _gone_problems(records, states)
        try:
            seen = observe(cluster_profile, operators=True)
        except errors.TransientError as exc:
            problems.append(f"the API does not answer ({errors.truncate_remote(str(exc), limit=200)})")
            approved = 0
            healthy = False
        else:
            milestones.setdefault("api_answers", elapsed)
            approved = ledger.round(cluster_profile, seen)
            health = lifecycle.assess_health(seen.nodes, seen.cluster_operators, expected_nodes=expected)
            if not masters & set(health.not_ready):
                milestones.setdefault("control_plane_ready", elapsed)
            if not health.not_ready:
                milestones.setdefault("all_nodes_ready", elapsed)
            problems += health.problems()
            problems += [
                f"CSR {n} left pending: {' '.join(v.reasons)}" for n, v in sorted(ledger.refused.items())
            ]
            healthy = health.healthy and not gone
            live = {r.node for r in records if r.node and r.instance_id not in gone}
            # Everything that can come back is back: waiting longer cannot mend a lost machine.
            settled = settled + 1 if gone and approved == 0 and not live & set(health.not_ready) else 0
        if healthy and approved == 0:
            break
        if settled >= 2 or elapsed > timeout_s:
            _fail_restart(
                cluster_profile, state=state, problems=problems, ledger=ledger, milestones=milestones
            )
        time.sleep(poll_s)
    milestones["healthy"] = round(time.monotonic() - started_at, 1)
    power.clear_shutdown_state(cluster_profile)
    message = (
        f"{cluster} is back: every node Ready, no ClusterOperator Degraded, after {milestones['healthy']:.0f} s "
        f"({len(ledger.approved)} CSR(s) approved)."
    )
    create_markdown_artifact(
        f"# graceful-restart of `{cluster}`\n\n**{message}**\n\n"
        + "".join(f"- {k.replace('_', ' ')}: {v:.0f} s\n" for k, v in milestones.items())
        + f"\n{ledger.markdown()}\n## External dependencies (should be on)\n\n{_dependencies(deps, 'check')}"
        + "\nRestart your own workloads cleanly now (guide 2, note).\n",
        key=f"graceful-restart-{cluster}",
        description=f"graceful restart of {cluster}",
    )
    logger.info("%s", message)
    return RestartOutcome(
        cluster=cluster,
        machines_from=source,
        started=to_start,
        milestones_s=milestones,
        approved_csrs=sorted(ledger.approved),
        message=message,
    )


def _fail_restart(
    cluster_profile: profile.ClusterProfile,
    *,
    state: lifecycle.ShutdownState,
    problems: list[str],
    ledger: CsrLedger,
    milestones: dict[str, float],
) -> None:
    cluster = cluster_profile.name
    try:
        backup = power.latest_valid_backup(cluster_profile, ocp_version=state.ocp_version)
    except errors.EtcdguardError as exc:
        backup = None
        problems = [*problems, f"the backup catalogue could not be read ({exc})"]
    pointer = (
        f"restore it with the restore-cluster flow (guide 4.3.2) from backup {backup}, the newest verified backup"
        + (f" of {state.ocp_version}" if state.ocp_version else "")
        if backup
        else "no verified backup was found to restore it with restore-cluster (guide 4.3.2): check the catalogue"
    )
    message = f"Cluster {cluster} did not come back healthy: {'; '.join(problems)}. If it cannot be mended, {pointer}."
    create_markdown_artifact(
        f"# graceful-restart of `{cluster}` FAILED\n\n"
        + "".join(f"- {p}\n" for p in problems)
        + f"\n**Next:** {pointer}.\n\n"
        + "".join(f"- {k.replace('_', ' ')}: {v:.0f} s\n" for k, v in milestones.items())
        + f"\n{ledger.markdown()}",
        key=f"graceful-restart-{cluster}",
        description=f"graceful restart of {cluster}",
    )
    raise errors.PermanentError(message)
