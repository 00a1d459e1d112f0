"""`restore-drill`: proof, every day, that a backup restores.

Fetch the backup (the newest, or a named one), check every checksum against the manifest,
`etcdctl snapshot restore` it into a scratch directory, start a throwaway etcd on loopback, check
the revision, the key count and the critical keys, and record the result in the manifest. A
failed drill fails the run loudly and emits `etcdguard.drill.failed`.
"""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import pydantic
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from etcdguard.core import errors, manifest, profile
from flows._prefect import send_event
from tasks.drill import fetch_and_verify, find_backup_to_drill, record_drill, restore_and_check

__all__ = ["DrillOutcome", "restore_drill"]


class DrillOutcome(pydantic.BaseModel):
    cluster: str
    backup_id: str
    passed: bool
    key_count: int
    durations: dict[str, float]
    message: str


@flow(name="restore-drill")
def restore_drill(cluster: str, backup: str | None = None) -> DrillOutcome:
    """Restore a backup of `cluster` into a throwaway etcd and check it.

    Args:
        cluster: the profile name.
        backup: a backup id `<cluster>/<ocp-version>/<yyyy-mm-ddTHHMMSSZ>`; the newest backup when empty.
    """
    logger = get_run_logger()
    cluster_profile = profile.load_profile(cluster)
    if backup is not None and not backup.startswith(f"{cluster}/"):
        raise errors.ConfigError(
            f"Parameter backup {backup!r} is not a backup of {cluster}: ids look like '{cluster}/4.8.12/2026-01-31T013000Z'."
        )
    entry = find_backup_to_drill(cluster_profile, backup_id=backup)
    durations: dict[str, float] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="etcdguard-drill-") as scratch_name:
            scratch = Path(scratch_name)
            started = time.monotonic()
            snapshot = fetch_and_verify(cluster_profile, entry=entry, scratch=scratch)
            durations["download_and_verify"] = round(time.monotonic() - started, 3)
            count, timings = restore_and_check(backup=entry.manifest, snapshot_path=snapshot, scratch=scratch)
            durations.update({k: round(v, 3) for k, v in timings.items()})
    except Exception as exc:
        message = f"Drill of {entry.manifest.backup_id} FAILED: {errors.truncate_remote(str(exc), limit=600)}"
        failed = manifest.DrillResult(
            ran_at=datetime.now(UTC), passed=False, key_count=0, durations=durations, message=message
        )
        try:
            record_drill(cluster_profile, entry=entry, result=failed)
        except Exception as record_exc:  # the drill's failure is the news; say the record failed too
            logger.error("Could not record the failed drill: %s", record_exc)
        send_event(
            "etcdguard.drill.failed",
            cluster=cluster,
            payload={"backup_id": entry.manifest.backup_id, "error": message},
        )
        raise
    message = (
        f"Drill of {entry.manifest.backup_id} passed: checksums match the manifest, the snapshot restored, etcd started "
        f"at revision {entry.manifest.snapshot.revision} with {count} live keys and the critical keys."
    )
    result = manifest.DrillResult(
        ran_at=datetime.now(UTC), passed=True, key_count=count, durations=durations, message=message
    )
    record_drill(cluster_profile, entry=entry, result=result)
    create_markdown_artifact(
        f"# Restore drill of `{entry.manifest.backup_id}`\n\n{message}\n\n"
        + "| step | seconds |\n|---|---:|\n"
        + "\n".join(f"| {k} | {v:.2f} |" for k, v in durations.items()),
        key=f"restore-drill-{cluster}",
        description=f"restore drill of {cluster}",
    )
    send_event("etcdguard.drill.passed", cluster=cluster, payload={"backup_id": entry.manifest.backup_id})
    logger.info("%s", message)
    return DrillOutcome(
        cluster=cluster,
        backup_id=entry.manifest.backup_id,
        passed=True,
        key_count=count,
        durations=durations,
        message=message,
    )
