"""Build the deployments of every profile in a directory."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from prefect import Flow
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import RunnerDeployment
from prefect.events import DeploymentEventTrigger
from prefect.schedules import Cron

from etcdguard.core import errors, profile, schedule
from flows.backup import etcd_backup
from flows.certs import recover_expired_certs
from flows.drill import restore_drill
from flows.power import graceful_restart, graceful_shutdown
from flows.replace_member import replace_etcd_member
from flows.restore import restore_cluster
from flows.retention import etcd_retention
from flows.watch import watch_cluster_version

__all__ = ["backup_deployment", "build_all", "watch_deployment"]


def backup_deployment(cluster_profile: profile.ClusterProfile, *, today: datetime) -> RunnerDeployment:
    cluster = cluster_profile.name
    schedules = []
    description = f"Nightly etcd backup of {cluster} (guide 4.1)."
    if cluster_profile.window is not None:
        plan = schedule.backup_schedule(cluster_profile.window, today=today.date())
        schedules.append(Cron(plan.cron, timezone=plan.timezone))
        description += f" Off-peak window {cluster_profile.window.describe()}."
        if plan.note:
            description += " " + plan.note
    upgraded = DeploymentEventTrigger(
        name=f"backup {cluster} after an upgrade",
        expect={"etcdguard.cluster.upgraded"},
        match={"prefect.resource.id": f"etcdguard.cluster.{cluster}"},
        parameters={"cluster": cluster, "force": True},
    )
    deployment = etcd_backup.to_deployment(
        name=cluster,
        schedules=schedules,
        parameters={"cluster": cluster, "force": False, "prune": True},
        triggers=[upgraded],
        concurrency_limit=ConcurrencyLimitConfig(
            limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW
        ),
        description=description,
        tags=["etcdguard", f"cluster:{cluster}"],
    )
    return cast(RunnerDeployment, deployment)


def watch_deployment(cluster_profile: profile.ClusterProfile) -> RunnerDeployment:
    cluster = cluster_profile.name
    deployment = watch_cluster_version.to_deployment(
        name=cluster,
        interval=900,
        parameters={"cluster": cluster},
        concurrency_limit=1,
        description=f"Watch {cluster}'s ClusterVersion; a completed upgrade triggers a backup.",
        tags=["etcdguard", f"cluster:{cluster}"],
    )
    return cast(RunnerDeployment, deployment)


def drill_deployment(cluster_profile: profile.ClusterProfile) -> RunnerDeployment:
    """The daily restore drill, after the backup window (or at 06:00 UTC without one)."""
    cluster = cluster_profile.name
    window = cluster_profile.window
    if window is not None:
        end = window.end
        cron = Cron(f"{end.minute} {(end.hour + 1) % 24} * * *", timezone=window.timezone)
    else:
        cron = Cron("0 6 * * *", timezone="UTC")
    deployment = restore_drill.to_deployment(
        name=cluster,
        schedules=[cron],
        parameters={"cluster": cluster},
        concurrency_limit=1,
        description=f"Daily restore drill of {cluster}'s newest backup into a throwaway etcd.",
        tags=["etcdguard", f"cluster:{cluster}"],
    )
    return cast(RunnerDeployment, deployment)


def retention_deployment(cluster_profile: profile.ClusterProfile) -> RunnerDeployment:
    """On demand from the UI; a dry run unless the operator unticks it."""
    deployment = etcd_retention.to_deployment(
        name=cluster_profile.name,
        parameters={"cluster": cluster_profile.name, "dry_run": True},
        concurrency_limit=1,
        description=f"Prune {cluster_profile.name}'s backups by its retention policy (dry run by default).",
        tags=["etcdguard", f"cluster:{cluster_profile.name}"],
    )
    return cast(RunnerDeployment, deployment)


def power_deployments(cluster_profile: profile.ClusterProfile) -> list[RunnerDeployment]:
    """recover-expired-certs, graceful-shutdown, graceful-restart: on demand from the UI, no schedule."""
    cluster = cluster_profile.name
    described: dict[str, Flow[..., Any]] = {
        "Approve valid kubelet CSRs until every node is Ready (guide 4.3.3).": recover_expired_certs,
        "Back up, check the certificate expiry, shut every node down (guide 2).": graceful_shutdown,
        "Start the machines, approve valid CSRs, check that the cluster is healthy (guide 3).": graceful_restart,
    }
    built = []
    for description, flow_ in described.items():
        deployment = flow_.to_deployment(
            name=cluster,
            parameters={"cluster": cluster},
            concurrency_limit=1,
            description=f"{description} Cluster {cluster}.",
            tags=["etcdguard", f"cluster:{cluster}"],
        )
        built.append(cast(RunnerDeployment, deployment))
    return built


def restore_deployment(cluster_profile: profile.ClusterProfile) -> RunnerDeployment:
    """restore-cluster (guide 4.3.2): on demand from the UI, no schedule; the run pauses for approval."""
    cluster = cluster_profile.name
    deployment = restore_cluster.to_deployment(
        name=cluster,
        parameters={"cluster": cluster},
        concurrency_limit=1,
        description=(
            f"Restore {cluster} from an etcd backup (guide 4.3.2): destructive, last resort. The run shows what "
            "it will destroy and waits for an operator to approve."
        ),
        tags=["etcdguard", f"cluster:{cluster}"],
    )
    return cast(RunnerDeployment, deployment)


def replace_member_deployment(cluster_profile: profile.ClusterProfile) -> RunnerDeployment:
    """replace-etcd-member (guide 4.2): on demand from the UI, no schedule; the run pauses for approval."""
    cluster = cluster_profile.name
    deployment = replace_etcd_member.to_deployment(
        name=cluster,
        parameters={"cluster": cluster},
        concurrency_limit=1,
        description=(
            f"Replace the unhealthy etcd member of {cluster} (guide 4.2): diagnosis, backup, then the guide's "
            "procedure for a stopped machine / NotReady node (4.2.4.1) or a crash-looping etcd pod (4.2.4.2). "
            "The run shows what it will change and waits for an operator to approve."
        ),
        tags=["etcdguard", f"cluster:{cluster}"],
    )
    return cast(RunnerDeployment, deployment)


def build_all(directory: Path) -> list[RunnerDeployment]:
    """Every profile's deployments; any invalid profile stops everything (ConfigError), so a
    typo never silently drops a cluster's backups."""
    names = sorted(p.stem for p in directory.glob("*.yaml"))
    if not names:
        raise errors.ConfigError(f"No profiles (*.yaml) in {directory}; write one per cluster first.")
    today = datetime.now(UTC)
    built = []
    for name in names:
        cluster_profile = profile.load_profile(name, directory=directory)
        built += [
            backup_deployment(cluster_profile, today=today),
            watch_deployment(cluster_profile),
            drill_deployment(cluster_profile),
            retention_deployment(cluster_profile),
            *power_deployments(cluster_profile),
            restore_deployment(cluster_profile),
            replace_member_deployment(cluster_profile),
        ]
    return built
