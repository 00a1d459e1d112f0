"""Build the deployments of every profile in a directory."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import cast

from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import RunnerDeployment
from prefect.events import DeploymentEventTrigger
from prefect.schedules import Cron

from etcdguard import errors, profile, schedule
from flows.backup import etcd_backup
from flows.drill import restore_drill
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
        ]
    return built
