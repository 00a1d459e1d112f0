"""`etcd-retention`: prune a cluster's backups by its retention policy (semantics: `etcdguard.core.retention`).

Plan (pure, `etcdguard.core.retention`) -> report the plan as a table artifact -> unless `dry_run`,
delete the doomed backups (every version of every object, batched DeleteObjects; Object-Locked
objects are skipped and reported) and abort multipart uploads older than the policy's grace.
A run from the UI is a dry run unless the operator unticks it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pydantic
import yaml
from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from etcdguard.clients.kube import KubeClient
from etcdguard.clients.objectstore import ObjectStore
from etcdguard.core import errors, profile, retention, versions
from tasks import _policy as policy
from tasks import retention_apply

__all__ = ["RetentionOutcome", "etcd_retention", "load_policy"]


class RetentionOutcome(pydantic.BaseModel):
    cluster: str
    policy: str
    dry_run: bool
    keep: list[str]
    delete: list[str]
    skipped_locked: list[str]
    floor_violations: list[str]
    bytes_freed: int
    deleted_versions: int = 0
    refused: list[str] = []
    aborted_uploads: list[str] = []
    delete_requests: int = 0


def load_policy(name: str, *, directory: Path | None = None) -> retention.RetentionPolicy:
    """`<profiles>/retention/<name>.yaml`; `default` is the built-in policy when no file exists."""
    base = (directory or profile.profiles_dir()) / "retention"
    path = base / f"{name}.yaml"
    if not path.is_file():
        if name == "default":
            return retention.RetentionPolicy()
        raise errors.ConfigError(
            f"Retention policy {name!r} not found: create {path} (fields: see etcdguard.core.retention)."
        )
    try:
        return retention.RetentionPolicy.model_validate(
            yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        )
    except (pydantic.ValidationError, yaml.YAMLError) as exc:
        raise errors.ConfigError(f"Retention policy {path} is invalid: {exc}") from exc


@policy.task("cluster-versions", timeout_s=300)
def read_cluster_context(cluster_profile: profile.ClusterProfile) -> retention.ClusterContext:
    with KubeClient(cluster_profile.api) as kube:
        clusterversion = kube.get("ClusterVersion", "version")
    history = []
    for entry in clusterversion.get("status", {}).get("history", []):
        if entry.get("state") == "Completed" and entry.get("completionTime"):
            history.append((str(entry["version"]), datetime.fromisoformat(entry["completionTime"])))
    return retention.ClusterContext(
        current_version=versions.current_zstream(clusterversion), version_history=tuple(history)
    )


@policy.task("read-catalogue", timeout_s=300)
def read_catalogue(
    cluster_profile: profile.ClusterProfile, *, now: datetime
) -> retention_apply.CatalogueView:
    with ObjectStore(cluster_profile.storage) as store:
        return retention_apply.load_candidates(
            store, cluster_profile.storage, cluster=cluster_profile.name, now=now
        )


@policy.task("delete-backups", timeout_s=300)
def delete_backups(
    cluster_profile: profile.ClusterProfile,
    *,
    view: retention_apply.CatalogueView,
    plan: retention.RetentionPlan,
    uploads: list[tuple[str, str, str]],
) -> retention_apply.ApplyReport:
    """Idempotent: a retry lists the versions again and deletes what is left."""
    with ObjectStore(cluster_profile.storage) as store:
        return retention_apply.apply_plan(store, view, plan, uploads_to_abort=uploads)


def _rows(plan: retention.RetentionPlan) -> list[dict[str, Any]]:
    rows = []
    for decision_name, decisions in (
        ("delete", plan.delete),
        ("keep", plan.keep),
        ("locked", plan.skipped_locked),
    ):
        for d in decisions:
            rows.append(
                {
                    "decision": decision_name,
                    "backup": d.backup.backup_id,
                    "created (UTC)": d.backup.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
                    "z-stream": d.backup.ocp_version,
                    "bytes": d.backup.size_bytes,
                    "complete": d.backup.complete,
                    "reasons": "; ".join(d.reasons),
                }
            )
    return rows


@flow(name="etcd-retention")
def etcd_retention(cluster: str, policy: str | None = None, dry_run: bool = True) -> RetentionOutcome:
    """Prune `cluster`'s backups by a retention policy.

    Args:
        cluster: the profile name.
        policy: a policy name (`profiles/retention/<name>.yaml`); the profile's `retention` when empty.
        dry_run: only report the plan (the default); untick to delete.
    """
    logger = get_run_logger()
    cluster_profile = profile.load_profile(cluster)
    policy_name = policy or cluster_profile.retention
    chosen = load_policy(policy_name)
    now = datetime.now(UTC)
    view = read_catalogue(cluster_profile, now=now)
    try:
        context = read_cluster_context(cluster_profile)
    except errors.EtcdguardError as exc:
        complete = sorted((c for c in view.candidates if c.complete), key=lambda c: c.created_at)
        if not complete:
            raise
        context = retention.ClusterContext(current_version=complete[-1].ocp_version)
        logger.warning(
            "The cluster's versions are unknown (%s); taking the newest backup's z-stream %s as current.",
            exc,
            context.current_version,
        )
    plan = retention.plan_retention(view.candidates, chosen, context=context, now=now)
    grace_cutoff = now - chosen.incomplete_grace
    uploads = [(b, k, u) for b, k, u, initiated in view.stale_uploads if initiated < grace_cutoff]
    create_table_artifact(
        _rows(plan),
        key=f"etcd-retention-{cluster}",
        description=(
            f"{'DRY RUN: ' if dry_run else ''}retention plan for {cluster} with policy {policy_name}: keep {len(plan.keep)}, "
            f"delete {len(plan.delete)} ({plan.bytes_freed:,} bytes), locked {len(plan.skipped_locked)}"
        ),
    )
    for violation in plan.floor_violations:
        logger.warning("%s", violation)
    outcome = RetentionOutcome(
        cluster=cluster,
        policy=policy_name,
        dry_run=dry_run,
        keep=[d.backup.backup_id for d in plan.keep],
        delete=[d.backup.backup_id for d in plan.delete],
        skipped_locked=[d.backup.backup_id for d in plan.skipped_locked],
        floor_violations=list(plan.floor_violations),
        bytes_freed=plan.bytes_freed,
    )
    if dry_run:
        logger.info(
            "Dry run: would delete %d backup(s), %d bytes; nothing deleted.",
            len(plan.delete),
            plan.bytes_freed,
        )
        return outcome
    report = delete_backups(cluster_profile, view=view, plan=plan, uploads=uploads)
    for refused in report.refused:
        logger.warning("Not deleted (Object Lock or permissions): %s", refused)
    logger.info(
        "Deleted %d backup(s) (%d object versions, %d requests); aborted %d stale upload(s).",
        len(report.deleted_backups), report.deleted_versions, report.requests, len(report.aborted_uploads),
    )  # fmt: skip
    return outcome.model_copy(
        update={
            "deleted_versions": report.deleted_versions,
            "refused": list(report.refused),
            "aborted_uploads": list(report.aborted_uploads),
            "delete_requests": report.requests,
        }
    )
