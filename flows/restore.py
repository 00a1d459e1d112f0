"""`restore-cluster`: guide 4.3.2, the last-resort recovery from an etcd backup.

Gates (nothing changes until all pass and an operator approves): the backup exists, matches its
checksums and its last drill passed; it is of the cluster's z-stream; a healthy recovery host;
SSH to every control-plane host that is not lost; the proxy variables. Then 4.3.2.2 step by step:
copy the backup to the recovery host, stop etcd and kube-apiserver and move /var/lib/etcd aside
on the other hosts, `cluster-restore.sh`, restart the kubelets, approve the validated CSRs, wait
for the single-member control plane, re-create the other control-plane Machines one at a time,
force the etcd, kube-apiserver, kube-controller-manager and kube-scheduler redeployments, verify,
and report (with the 4.3.2.3 storage caveats).

A journal on the recovery host (`/home/core/backup/etcdguard-restore.json`) records the steps
done; a re-run after an interruption reads it, asks for approval again and continues.

Test hook: `ETCDGUARD_RESTORE_STOP_AFTER=<step>` (a name of `STEPS`) makes the run stop with an
error right after that step is done and journaled, as an interruption would.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import pydantic
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from etcdguard.core import errors, preflight, profile, restore_plan, versions
from flows._approval import ApprovalRecord, request_approval
from tasks import catalogue
from tasks import kube as kube_tasks
from tasks import restore as host_tasks
from tasks import restore_api as api_tasks

__all__ = ["GUIDE_STEPS", "STEPS", "RestoreOutcome", "restore_cluster"]

T = TypeVar("T")
# Each step the flow journals: its name (journal, test hook) and the guide step it performs.
GUIDE_STEPS = {
    "copy-backup": "4.3.2.2 step 3: copy the etcd backup directory to the recovery host",
    "stop-static-pods": "4.3.2.2 step 4: stop the static pods on the other control-plane hosts",
    "cluster-restore.sh": "4.3.2.2 steps 6-7: export the proxy variables, run cluster-restore.sh",
    "restart-kubelets": "4.3.2.2 step 8: restart the kubelet service on all control-plane hosts",
    "single-member": "4.3.2.2 steps 9-10: approve the pending CSRs, verify the single-member control plane",
    "replace-machines": "4.3.2.2 step 11: delete and re-create the other control-plane machines, one at a time",
    "redeploy-etcd": "4.3.2.2 steps 13-14: force the etcd redeployment, wait for every node at the latest revision",
    "redeploy-kube-apiserver": "4.3.2.2 step 15: force the kube-apiserver rollout",
    "redeploy-kube-controller-manager": "4.3.2.2 step 15: force the kube-controller-manager rollout",
    "redeploy-kube-scheduler": "4.3.2.2 step 15: force the kube-scheduler rollout",
    "verify": "4.3.2.2 step 16: verify every control-plane host is up and joined the cluster",
}
STEPS = tuple(GUIDE_STEPS)
STOP_AFTER_ENV = "ETCDGUARD_RESTORE_STOP_AFTER"
_REDEPLOY = {
    "redeploy-etcd": "Etcd",
    "redeploy-kube-apiserver": "KubeAPIServer",
    "redeploy-kube-controller-manager": "KubeControllerManager",
    "redeploy-kube-scheduler": "KubeScheduler",
}
_WAIT = 900.0


class RestoreOutcome(pydantic.BaseModel):
    """What a run did, for callers and the UI."""

    cluster: str
    backup_id: str
    ocp_version: str
    ocp_version_source: str
    """Where the cluster's z-stream was read: the API, a surviving etcd member, or ASSUMED."""
    recovery_host: str
    approved_by: str
    durations: dict[str, float]
    skipped: list[str]
    machines_replaced: list[str]
    verification: list[str]
    storage_caveats: list[str]
    notes: list[str]


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Gates:
    entry: catalogue.CatalogueEntry
    checked: list[str]
    zstream: restore_plan.ZStream
    recovery: restore_plan.HostProbe
    others: list[restore_plan.HostProbe]
    lost: list[restore_plan.HostProbe]
    machines: list[str]
    proxy_env: dict[str, str]
    proxy_note: str
    journal: restore_plan.RestoreJournal | None
    notes: list[str]


def _json(text: str | None) -> dict[str, Any] | None:
    try:
        value = json.loads(text) if text else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _journal(probes: list[restore_plan.HostProbe]) -> restore_plan.RestoreJournal | None:
    found = [restore_plan.RestoreJournal.from_json(p.journal) for p in probes if p.reachable and p.journal]
    if len({(j.backup_id, j.recovery_node) for j in found}) > 1:
        raise errors.PreflightRefused(
            "Several control-plane hosts hold a restore journal for different restores: "
            + "; ".join(f"{j.recovery_node}: {j.backup_id}" for j in found)
            + f". Inspect {host_tasks.JOURNAL} on each and remove the stale ones."
        )
    return found[0] if found else None


def _gates(
    cluster_profile: profile.ClusterProfile, *, backup: str | None, recovery_host: str | None
) -> _Gates:
    logger = get_run_logger()
    notes: list[str] = []
    facts = api_tasks.read_api(cluster_profile)
    if facts is not None:
        hosts = list(facts.control_plane)
    else:
        hosts = [(h.name, h.address) for h in cluster_profile.control_plane]
        notes.append(
            "The API does not answer: control-plane hosts taken from the profile's control_plane list."
        )
        if not hosts:
            raise errors.ConfigError(
                f"The API of {cluster_profile.name} does not answer and its profile lists no control_plane hosts, "
                "so the hosts to restore are unknown. Add `control_plane: [{name, address}, ...]` to the profile."
            )
    probes = [
        host_tasks.probe_host(cluster_profile, name=name, address=address, read_version=facts is None)
        for name, address in hosts
    ]
    journal = _journal(probes)
    if journal is not None:
        if backup is not None and backup != journal.backup_id:
            raise errors.PreflightRefused(
                f"A restore from {journal.backup_id} is in progress on {journal.recovery_node} (started "
                f"{journal.started_at}); run again without a backup, or with that one, to continue it."
            )
        if recovery_host is not None and recovery_host not in (
            journal.recovery_node,
            journal.recovery_address,
        ):
            raise errors.PreflightRefused(
                f"A restore is in progress with recovery host {journal.recovery_node}; run again without "
                "recovery_host, or with that one, to continue it."
            )
        backup, recovery_host = journal.backup_id, journal.recovery_node
        notes.append(
            f"Continuing the restore started {journal.started_at}; steps done: {', '.join(journal.steps)}."
        )
    held_cv = next((cv for p in probes if (cv := _json(p.clusterversion)) is not None), None)
    if facts is not None or held_cv is not None:
        zstream = restore_plan.cluster_zstream(
            clusterversion=facts.clusterversion if facts else None,
            member_clusterversion=held_cv,
            newest_backup_version=None,
        )
    else:
        zstream = restore_plan.cluster_zstream(
            clusterversion=None,
            member_clusterversion=None,
            newest_backup_version=api_tasks.newest_backup_version(cluster_profile),
        )
        notes.append(f"z-stream {zstream.version} {zstream.source}.")
    entry, checked = api_tasks.find_and_verify_backup(
        cluster_profile, backup_id=backup, version=zstream.version
    )
    versions.may_restore(entry.manifest.ocp_version, zstream.version)
    recovery = restore_plan.choose_recovery_host(probes, named=recovery_host)
    resumed = journal is not None and "stop-static-pods" in journal.steps
    lost = restore_plan.lost_hosts(probes, ready_nodes=set(facts.ready) if facts and not resumed else None)
    others = [p for p in probes if p.reachable and p.name != recovery.name]
    machines = sorted(
        restore_plan.machines_to_recreate(facts.machines if facts else (), recovery_node=recovery.name)
    )
    if facts is not None:
        proxy_env, proxy_note = facts.proxy_env, "from the API's Proxy object"
    else:
        held_proxy = next((px for p in probes if (px := _json(p.proxy)) is not None), None)
        proxy_env = preflight.proxy_env(held_proxy) if held_proxy else {}
        proxy_note = (
            "from the Proxy object held by the surviving etcd member"
            if held_proxy
            else "UNKNOWN (API down, no etcd member readable): no proxy variables exported"
        )
    proxy_note = f"{', '.join(sorted(proxy_env)) or 'no proxy variables'} ({proxy_note})"
    for note in notes:
        logger.warning("%s", note)
    return _Gates(
        entry=entry,
        checked=checked,
        zstream=zstream,
        recovery=recovery,
        others=others,
        lost=lost,
        machines=machines,
        proxy_env=proxy_env,
        proxy_note=proxy_note,
        journal=journal,
        notes=notes,
    )


class _Runner:
    """Runs the steps in order, skipping those the journal records, timing and journaling each."""

    def __init__(self, cluster_profile: profile.ClusterProfile, journal: restore_plan.RestoreJournal) -> None:
        self.profile = cluster_profile
        self.journal = journal
        self.durations: dict[str, float] = {}
        self.skipped: list[str] = []
        self.stop_after = os.environ.get(STOP_AFTER_ENV) or None

    def mark(self, step: str) -> None:
        self.journal = self.journal.with_step(step)
        host_tasks.write_journal(self.profile, journal=self.journal)

    def step(self, name: str, action: Callable[[], T]) -> T | None:
        logger = get_run_logger()
        if name in self.journal.steps:
            logger.info("Step %s was done by an earlier run; skipped.", name)
            self.skipped.append(name)
            return None
        logger.info("%s (step %s) ...", GUIDE_STEPS.get(name, name), name)
        started = time.monotonic()
        result = action()
        self.durations[name] = round(time.monotonic() - started, 1)
        self.mark(name)
        logger.info("Step %s done in %.1f s.", name, self.durations[name])
        if self.stop_after == name:
            raise errors.PermanentError(
                f"Stopped after step {name} because {STOP_AFTER_ENV} asks so (a test hook); run restore-cluster "
                "again to continue."
            )
        return result


def _report(outcome: RestoreOutcome, gates: _Gates, approval: ApprovalRecord) -> str:
    backup = gates.entry.manifest
    rows = "\n".join(f"| {name} | {outcome.durations.get(name, 0.0):.1f} |" for name in outcome.durations)
    return "\n".join(
        [
            f"# Cluster `{outcome.cluster}` restored from `{backup.backup_id}`",
            "",
            f"- backup taken {backup.taken_at.isoformat()} on {backup.source_node}, OpenShift {backup.ocp_version}, "
            f"revision {backup.snapshot.revision}, {backup.snapshot.total_key} keys",
            f"- checks: {'; '.join(gates.checked)}",
            f"- cluster z-stream {gates.zstream.version}: {gates.zstream.source}",
            f"- recovery host: `{outcome.recovery_host}`; lost hosts: "
            + (", ".join(f"`{p.name}`" for p in gates.lost) or "none"),
            f"- approved by {approval.approved_by} at {approval.approved_at.isoformat()}: {approval.reason}",
            f"- machines re-created: {', '.join(outcome.machines_replaced) or 'none'}",
            f"- steps skipped (done by an earlier run): {', '.join(outcome.skipped) or 'none'}",
            *[f"- note: {n}" for n in outcome.notes],
            "",
            "| step | seconds |",
            "|---|---:|",
            rows,
            "",
            "## Verification",
            *[f"- {line}" for line in outcome.verification],
            "",
            "## Persistent storage after the restore (guide 4.3.2.3)",
            "The etcd snapshot holds the API objects only: volume contents, attachments and provider credentials "
            "are as they are now, not as of the backup.",
            *[f"- {line}" for line in outcome.storage_caveats],
            "",
        ]
    )


def _procedure(
    cluster_profile: profile.ClusterProfile, gates: _Gates, runner: _Runner
) -> tuple[list[str], list[str]]:
    recovery = gates.recovery
    at = {"node": recovery.name, "address": recovery.address}
    # 4.3.2.2 step 3: copy the etcd backup directory to the recovery host.
    runner.step("copy-backup", lambda: host_tasks.copy_backup(cluster_profile, entry=gates.entry, **at))
    # 4.3.2.2 step 4: stop the static pods on the other control-plane hosts (etcd, kube-apiserver,
    # /var/lib/etcd moved aside).
    runner.step(
        "stop-static-pods",
        lambda: [
            host_tasks.stop_static_pods(cluster_profile, node=p.name, address=p.address) for p in gates.others
        ],
    )
    # 4.3.2.2 steps 6-7: export the proxy variables and run cluster-restore.sh on the recovery host
    # (not repeatable on its own: journaled as started before it runs).
    if "cluster-restore.sh" not in runner.journal.steps:
        runner.mark("cluster-restore.sh:started")
    started_before = "cluster-restore.sh:started" in (gates.journal.steps if gates.journal else ())
    runner.step(
        "cluster-restore.sh",
        lambda: host_tasks.run_restore_script(
            cluster_profile, proxy_env=gates.proxy_env, started_before=started_before, **at
        ),
    )
    # 4.3.2.2 step 8: restart the kubelet service on all control-plane hosts.
    runner.step(
        "restart-kubelets",
        lambda: [
            host_tasks.restart_kubelet(cluster_profile, node=p.name, address=p.address)
            for p in [recovery, *gates.others]
        ],
    )

    def single_member() -> None:
        # 4.3.2.2 step 10: the etcd container runs on the recovery host, its pod in the API.
        host_tasks.wait_etcd_container(cluster_profile, timeout=_WAIT, **at)
        api_tasks.wait_api_etcd_pod(cluster_profile, node=recovery.name, timeout=_WAIT)
        # 4.3.2.2 step 9: approve the pending CSRs that the validator accepts.
        for line in api_tasks.approve_valid_csrs(cluster_profile):
            get_run_logger().info("Approved CSR %s.", line)

    # 4.3.2.2 steps 9-10: approve the pending CSRs, verify the single-member control plane.
    runner.step("single-member", single_member)
    replaced: list[str] = []

    def replace_machines() -> None:
        facts = api_tasks.read_api(cluster_profile)
        if facts is None:
            raise errors.TransientError("The API stopped answering before the machines could be re-created.")
        backup_id = gates.entry.manifest.backup_id
        for name in restore_plan.machines_to_recreate(facts.machines, recovery_node=recovery.name):
            done = kube_tasks.replace_machine(
                cluster_profile,
                old_name=name,
                annotations={restore_plan.RECREATED_ANNOTATION: f"{backup_id} replaces {name}"},
                marker=restore_plan.RECREATED_ANNOTATION,
                csrs_of_new_node_only=False,
                timeout=_WAIT,
                guide_step="4.3.2.2 step 11",
                rerun_hint=host_tasks.RERUN_HINT,
            )
            replaced.append(f"{done.old} -> {done.new} ({done.seconds} s)")

    # 4.3.2.2 step 11: delete and re-create the other control-plane machines, one at a time.
    runner.step("replace-machines", replace_machines)
    # 4.3.2.2 step 12 (a cluster-admin login) is the profile's kubeconfig.
    # 4.3.2.2 steps 13-14: force the etcd redeployment and wait until every node is at the latest
    # revision; 4.3.2.2 step 15: the same for kube-apiserver, kube-controller-manager, kube-scheduler.
    for step, kind in _REDEPLOY.items():

        def redeploy(kind: str = kind) -> str:
            before = kube_tasks.force_redeployment(cluster_profile, kind=kind)
            return kube_tasks.wait_rollout(
                cluster_profile, kind=kind, after=before, timeout=_WAIT, rerun_hint=host_tasks.RERUN_HINT
            )

        runner.step(step, redeploy)
    # 4.3.2.2 step 16: verify that every control-plane host is up and joined the cluster.
    verification = runner.step("verify", lambda: api_tasks.verify_etcd(cluster_profile, timeout=_WAIT)) or []
    return replaced, verification


@flow(name="restore-cluster")
def restore_cluster(
    cluster: str, backup: str | None = None, recovery_host: str | None = None, approval_timeout_s: int = 3600
) -> RestoreOutcome:
    """Restore a cluster to the state of an etcd backup (guide 4.3.2): destructive, last resort.

    Args:
        cluster: the profile name.
        backup: a backup id `<cluster>/<ocp-version>/<yyyy-mm-ddTHHMMSSZ>`; empty: the newest verified
            backup of the cluster's current z-stream.
        recovery_host: the control-plane node (name or address) to restore on; empty: the first healthy one.
        approval_timeout_s: how long to wait for an operator's approval before giving up (nothing changes).
    """
    logger = get_run_logger()
    cluster_profile = profile.load_profile(cluster)
    if backup is not None and not backup.startswith(f"{cluster}/"):
        raise errors.ConfigError(
            f"Parameter backup {backup!r} is not a backup of {cluster}: ids look like '{cluster}/4.8.12/2026-01-31T013000Z'."
        )
    gates = _gates(cluster_profile, backup=backup, recovery_host=recovery_host)
    now = datetime.now(UTC)
    backup_manifest = gates.entry.manifest
    summary = restore_plan.approval_summary(
        cluster=cluster,
        backup_id=backup_manifest.backup_id,
        backup_taken_at=backup_manifest.taken_at,
        backup_version=backup_manifest.ocp_version,
        zstream=gates.zstream,
        recovery=gates.recovery,
        others=gates.others,
        lost=gates.lost,
        machines_to_replace=gates.machines,
        proxy_note=gates.proxy_note,
        resumed=gates.journal,
        notes=gates.notes,
        now=now,
    )
    approval = request_approval(
        cluster=cluster, action="restore-cluster", summary_markdown=summary, timeout_s=approval_timeout_s
    )
    journal = gates.journal or restore_plan.RestoreJournal(
        backup_id=backup_manifest.backup_id,
        recovery_node=gates.recovery.name,
        recovery_address=gates.recovery.address,
        started_at=now.isoformat(),
    )
    runner = _Runner(cluster_profile, journal)
    runner.mark("approved")
    replaced, verification = _procedure(cluster_profile, gates, runner)
    caveats = api_tasks.storage_caveats(cluster_profile)
    host_tasks.clean_up_host(cluster_profile, node=gates.recovery.name, address=gates.recovery.address)
    outcome = RestoreOutcome(
        cluster=cluster,
        backup_id=backup_manifest.backup_id,
        ocp_version=backup_manifest.ocp_version,
        ocp_version_source=gates.zstream.source,
        recovery_host=gates.recovery.name,
        approved_by=approval.approved_by,
        durations=runner.durations,
        skipped=runner.skipped,
        machines_replaced=replaced,
        verification=verification,
        storage_caveats=caveats,
        notes=gates.notes,
    )
    create_markdown_artifact(
        _report(outcome, gates, approval),
        key=f"restore-cluster-{cluster}",
        description=f"restore of {cluster}",
    )
    logger.info("Cluster %s restored from %s.", cluster, backup_manifest.backup_id)
    return outcome
