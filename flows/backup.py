"""`etcd-backup`: guide 4.1 as a flow that runs every night without anyone watching.

preflight (read-only) -> off-peak window gate -> ONE healthy control-plane node ->
`cluster-backup.sh` over SSH -> both files streamed to S3 with checksums -> `manifest.json`
written last -> host directory removed -> report (artifact, event).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Literal

import pydantic
from prefect import flow, get_run_logger, runtime
from prefect.artifacts import create_markdown_artifact
from prefect.concurrency.sync import concurrency

from etcdguard.core import errors, manifest, preflight, profile, windows
from flows._prefect import cluster_lock_name, ensure_cluster_lock, send_event
from tasks import _policy as policy
from tasks.backup import (
    HostBackup,
    UploadedFile,
    check_backup_preflight,
    etcd_server_version,
    remove_host_dir,
    run_cluster_backup,
    upload_backup_file,
    write_manifest,
)

__all__ = ["BackupOutcome", "etcd_backup"]


class BackupOutcome(pydantic.BaseModel):
    """What a run did, for callers and the UI."""

    status: Literal["completed", "skipped"]
    cluster: str
    message: str
    backup_id: str | None = None
    manifest_uri: str | None = None
    snapshot_uri: str | None = None
    static_resources_uri: str | None = None
    ocp_version: str | None = None
    source_node: str | None = None


@policy.task("discard-partial-upload", timeout_s=300)
def discard_partial_upload(cluster_profile: profile.ClusterProfile, *, uploaded: list[UploadedFile]) -> None:
    """A run that failed after some files reached S3: delete them, so only complete backups remain."""
    from etcdguard.clients.objectstore import ObjectStore

    with ObjectStore(cluster_profile.storage) as store:
        for item in uploaded:
            store.delete_keys(item.bucket, [item.entry.key])


def _report(
    outcome: BackupOutcome, backup: manifest.BackupManifest, files: list[UploadedFile], host: HostBackup
) -> str:
    rows = "\n".join(
        f"| {f.entry.kind} | `s3://{f.bucket}/{f.entry.key}` | {f.entry.size:,} | `{f.entry.sha256_stored}` | "
        f"{f.parts} | {f.duration:.1f} s |"
        for f in files
    )
    status = backup.snapshot
    return (
        f"# etcd backup of `{backup.cluster}` ({backup.ocp_version})\n\n"
        f"- backup id: `{backup.backup_id}`\n- manifest: `{outcome.manifest_uri}`\n"
        f"- taken on node `{backup.source_node}` (etcd {backup.etcd_version}) in {host.duration:.1f} s\n"
        f"- snapshot status: revision {status.revision}, {status.total_key} keys, {status.total_size:,} bytes, "
        f"hash {status.hash}\n- sha256 trailer: {backup.sha256_trailer}\n"
        f"- etcd encryption: {backup.encryption or 'off'}\n\n"
        "| file | object | bytes | sha256 (stored) | parts | upload |\n|---|---|---:|---|---:|---:|\n"
        f"{rows}\n\nVerified while streaming: sha256 of the original and stored bytes, the S3 ETag of every "
        "part against the bytes sent, the snapshot's sha256 trailer, `etcdctl snapshot status`.\n"
    )


def _preflight(
    cluster_profile: profile.ClusterProfile, *, force: bool, now: datetime
) -> preflight.BackupPreflight:
    try:
        return check_backup_preflight(cluster_profile, force=force, now=now)
    except errors.TransientError as exc:
        raise errors.PreflightRefused(
            f"The API of cluster {cluster_profile.name} does not answer ({exc}). If two or more control-plane "
            "hosts are down, etcd has lost quorum and no backup can be taken: recover with the restore-cluster "
            "flow (guide 4.3.2) from the newest verified backup of this cluster's z-stream."
        ) from exc


def _backup_on_one_node(
    cluster_profile: profile.ClusterProfile, *, pre: preflight.BackupPreflight, directory: str, force: bool
) -> tuple[HostBackup, preflight.NodeCandidate]:
    """ONE backup per cluster: on the first healthy candidate; the next only if that one fails."""
    logger = get_run_logger()
    failures = []
    for node in pre.candidates:
        try:
            host = run_cluster_backup(
                cluster_profile, node=node, directory=directory, proxy_env=pre.proxy_env, force=force
            )
            return host, node
        except errors.RemoteCommandFailed as exc:
            if "progressing" in str(exc).lower():
                raise  # the cluster's state, not the node's: another node would refuse the same way
            failures.append(f"{node.name}: {exc}")
        except errors.TransientError as exc:
            failures.append(f"{node.name}: {exc}")
        logger.warning("The backup on %s failed; trying the next healthy control-plane node.", node.name)
        try:
            remove_host_dir(cluster_profile, node=node, directory=directory)
        except errors.EtcdguardError as exc:
            logger.warning("Could not remove %s on %s: %s", directory, node.name, exc)
    raise errors.PermanentError(
        "cluster-backup.sh failed on every healthy control-plane node: " + " | ".join(failures)
    )


def _take_backup(cluster_profile: profile.ClusterProfile, *, force: bool, now: datetime) -> BackupOutcome:
    logger = get_run_logger()
    pre = _preflight(cluster_profile, force=force, now=now)
    directory = f"{cluster_profile.backup.host_dir}/etcdguard-{now:%Y%m%dT%H%M%SZ}"
    uploaded: list[UploadedFile] = []
    host, node = _backup_on_one_node(cluster_profile, pre=pre, directory=directory, force=force)
    try:
        etcd_version = etcd_server_version(cluster_profile, node=node)
        futures = [
            upload_backup_file.submit(cluster_profile, host_backup=host, kind=kind, version=pre.ocp_version)
            for kind in ("snapshot", "static_resources")
        ]
        failures = []
        for future in futures:
            try:
                uploaded.append(future.result())
            except Exception as exc:  # collect both, then fail with the first
                failures.append(exc)
        if failures:
            raise failures[0]
        snapshot_file = uploaded[0]
        backup = manifest.BackupManifest(
            cluster=cluster_profile.name,
            cluster_id=pre.cluster_id,
            ocp_version=pre.ocp_version,
            etcd_version=etcd_version,
            created_at=datetime.now(UTC),
            source_node=node.name,
            flow_run_id=str(runtime.flow_run.id) if runtime.flow_run.id else None,
            encryption=pre.encryption,  # type: ignore[arg-type]  # validated by the model
            files=tuple(f.entry for f in uploaded),
            snapshot=host.status,
            sha256_trailer=snapshot_file.trailer or "absent",
        )
        manifest_key = write_manifest(cluster_profile, backup=backup)
    except BaseException:
        if uploaded:
            logger.warning("Removing the %d file(s) of this failed run from S3.", len(uploaded))
            discard_partial_upload(cluster_profile, uploaded=uploaded)
        raise
    finally:
        try:
            remove_host_dir(cluster_profile, node=node, directory=directory)
        except Exception as exc:  # the backup (or its failure) matters more than the leftover
            logger.warning("Could not remove %s on %s: %s", directory, node.name, exc)
    bucket = cluster_profile.storage.snapshots.bucket
    outcome = BackupOutcome(
        status="completed",
        cluster=cluster_profile.name,
        message=f"Backup {backup.backup_id} stored and verified ({backup.stored_size:,} bytes).",
        backup_id=backup.backup_id,
        manifest_uri=f"s3://{bucket}/{manifest_key}",
        snapshot_uri=f"s3://{uploaded[0].bucket}/{uploaded[0].entry.key}",
        static_resources_uri=f"s3://{uploaded[1].bucket}/{uploaded[1].entry.key}",
        ocp_version=backup.ocp_version,
        source_node=node.name,
    )
    create_markdown_artifact(
        _report(outcome, backup, uploaded, host),
        key=f"etcd-backup-{cluster_profile.name}",
        description=f"etcd backup of {cluster_profile.name}",
    )
    send_event(
        "etcdguard.backup.completed",
        cluster=cluster_profile.name,
        payload={
            "ocp_version": backup.ocp_version,
            "backup_id": backup.backup_id,
            "manifest": outcome.manifest_uri,
        },
    )
    for note in pre.notes:
        logger.warning("%s", note)
    return outcome


@flow(name="etcd-backup", log_prints=False)
def etcd_backup(cluster: str, force: bool = False, prune: bool = False) -> BackupOutcome:
    """Back up one cluster's etcd (guide 4.1): one snapshot from one healthy control-plane node,
    stored in S3 with its static pod resources, verified, catalogued.

    Args:
        cluster: the profile name (`profiles/<cluster>.yaml`).
        force: run outside the off-peak window, on a cluster younger than 24 h, or while operators are
            Progressing (cluster-backup.sh --force: a possibly dirty backup).
        prune: after the backup is stored and verified (never before), apply the cluster's retention
            policy (etcd-retention, not a dry run).
    """
    logger = get_run_logger()
    cluster_profile = profile.load_profile(cluster)  # ConfigError before any side effect
    now = datetime.now(UTC).replace(microsecond=0)
    if cluster_profile.window is not None and not force:
        gate = windows.window_status(cluster_profile.window, now)
        if not gate.inside:
            message = f"Skipped: outside the off-peak window of {cluster}. {gate.reason}"
            logger.warning("%s", message)
            return BackupOutcome(status="skipped", cluster=cluster, message=message)
        logger.info("%s", gate.reason)
    lock = cluster_lock_name("backup", cluster)
    ensure_cluster_lock(lock)
    started = time.monotonic()
    try:
        with concurrency(lock, occupy=1, timeout_seconds=15, strict=True):
            outcome = _take_backup(cluster_profile, force=force, now=now)
    except TimeoutError:
        message = f"Skipped: another etcd-backup run of {cluster} holds the cluster's lock ({lock})."
        logger.warning("%s", message)
        return BackupOutcome(status="skipped", cluster=cluster, message=message)
    except Exception as exc:
        send_event(
            "etcdguard.backup.failed",
            cluster=cluster,
            payload={"error": errors.truncate_remote(str(exc), limit=500), "type": type(exc).__name__},
        )
        raise
    logger.info("%s (%.1f s)", outcome.message, time.monotonic() - started)
    if prune:
        from flows.retention import etcd_retention

        etcd_retention(cluster, dry_run=False)
    return outcome
