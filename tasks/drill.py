"""Tasks of the restore-drill flow: fetch and verify a backup, restore it into a throwaway etcd,
record the result next to the backup."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import zstandard
from prefect import get_run_logger

from etcdguard.clients import scratch_etcd
from etcdguard.clients.objectstore import ObjectStore
from etcdguard.core import errors, manifest
from etcdguard.core.profile import ClusterProfile
from tasks import _policy as policy
from tasks import catalogue

__all__ = ["CRITICAL_KEYS", "fetch_and_verify", "find_backup_to_drill", "record_drill", "restore_and_check"]

CRITICAL_KEYS = (
    "/kubernetes.io/config.openshift.io/clusterversions/version",
    "/kubernetes.io/namespaces/openshift-etcd",
    "/kubernetes.io/namespaces/kube-system",
    "/kubernetes.io/operator.openshift.io/etcds/cluster",
)


@policy.task("find-backup", timeout_s=300)
def find_backup_to_drill(profile: ClusterProfile, *, backup_id: str | None) -> catalogue.CatalogueEntry:
    """The named backup, or the newest one; a backup whose manifest is missing is not a backup."""
    with ObjectStore(profile.storage) as store:
        try:
            return catalogue.find_backup(store, profile.storage, cluster=profile.name, backup_id=backup_id)
        except errors.NotFoundError:
            if backup_id is None:
                raise
            parts = backup_id.split("/")
            leftovers = []
            if len(parts) == 3:
                prefix = f"{profile.storage.snapshots.prefix}/{backup_id}/".lstrip("/")
                leftovers = [o.key for o in store.list_objects(profile.storage.snapshots.bucket, prefix)]
            if leftovers:
                raise errors.IntegrityError(
                    f"Backup {backup_id} has no manifest.json in s3://{profile.storage.snapshots.bucket}/{prefix} "
                    f"(found only {', '.join(k.rsplit('/', 1)[-1] for k in leftovers)}): it is an incomplete "
                    "upload, not a backup, and cannot be trusted for a restore."
                ) from None
            raise


@policy.task("fetch-and-verify", timeout_s=7200)
def fetch_and_verify(profile: ClusterProfile, *, entry: catalogue.CatalogueEntry, scratch: Path) -> Path:
    """Download every file, check size and sha256 (stored and original) against the manifest;
    returns the local snapshot (decompressed)."""
    snapshot_path = scratch / "snapshot.db"
    with ObjectStore(profile.storage) as store:
        for file in entry.manifest.files:
            bucket = catalogue.bucket_for(profile.storage, file)
            where = f"s3://{bucket}/{file.key}"
            stored, original, size = hashlib.sha256(), hashlib.sha256(), 0
            target = snapshot_path if file.kind == "snapshot" else scratch / "static_resources.tar.gz"
            decompressor = zstandard.ZstdDecompressor().decompressobj() if file.compressed == "zstd" else None
            with open(target, "wb") as out:
                for chunk in store.iter_object(bucket, file.key):
                    stored.update(chunk)
                    size += len(chunk)
                    plain = decompressor.decompress(chunk) if decompressor is not None else chunk
                    original.update(plain)
                    out.write(plain)
            if size != file.size:
                raise errors.IntegrityError(f"{where} has {size} bytes; the manifest says {file.size}.")
            if stored.hexdigest() != file.sha256_stored:
                raise errors.IntegrityError(
                    f"{where} has sha256 {stored.hexdigest()}; the manifest says {file.sha256_stored}: "
                    "the stored object was altered or damaged."
                )
            if original.hexdigest() != file.sha256_original:
                raise errors.IntegrityError(
                    f"{where} decompresses to sha256 {original.hexdigest()}; the manifest says "
                    f"{file.sha256_original}."
                )
    return snapshot_path


@policy.task("restore-and-check", timeout_s=7200, retries=0)
def restore_and_check(
    *, backup: manifest.BackupManifest, snapshot_path: Path, scratch: Path
) -> tuple[int, dict[str, float]]:
    """`etcdctl snapshot restore` + a throwaway etcd: revision, key count and critical keys.
    Returns the live key count and the timings."""
    logger = get_run_logger()
    timings: dict[str, float] = {}
    started = time.monotonic()
    status = manifest.parse_snapshot_status(scratch_etcd.snapshot_status(snapshot_path))
    if status != backup.snapshot:
        raise errors.IntegrityError(
            f"etcdctl snapshot status of the downloaded snapshot ({status}) differs from the manifest's "
            f"({backup.snapshot})."
        )
    data_dir = scratch / "restored.etcd"
    scratch_etcd.restore_snapshot(snapshot_path, data_dir)
    timings["restore"] = time.monotonic() - started
    started = time.monotonic()
    with scratch_etcd.ThrowawayEtcd(data_dir) as etcd:
        timings["start"] = time.monotonic() - started
        started = time.monotonic()
        revision = etcd.revision()
        count = etcd.key_count("/")
        missing = etcd.missing(list(CRITICAL_KEYS))
        timings["check"] = time.monotonic() - started
    # `snapshot status` reports the newest key's revision; the store's revision can be higher
    # (writes since removed by compaction), never lower.
    if revision < backup.snapshot.revision:
        raise errors.IntegrityError(
            f"The restored etcd is at revision {revision}, older than the snapshot's newest key "
            f"(revision {backup.snapshot.revision} in the manifest): the restore lost data."
        )
    if not 0 < count <= backup.snapshot.total_key:
        raise errors.IntegrityError(
            f"The restored etcd holds {count} live keys; the snapshot has {backup.snapshot.total_key} keys in all "
            "(live keys must be between 1 and that)."
        )
    if missing:
        raise errors.IntegrityError(f"The restored etcd lacks critical keys: {', '.join(missing)}.")
    logger.info("Restored etcd at revision %d with %d live keys; critical keys present.", revision, count)
    return count, timings


@policy.task("record-drill", timeout_s=300)
def record_drill(
    profile: ClusterProfile, *, entry: catalogue.CatalogueEntry, result: manifest.DrillResult
) -> None:
    """Append the drill's result to the backup's manifest (a new version of manifest.json)."""
    with ObjectStore(profile.storage) as store:
        current = manifest.BackupManifest.from_json_bytes(
            store.get_bytes(profile.storage.snapshots.bucket, entry.manifest_key)
        )
        updated = current.with_drill(result)
        store.put_bytes(
            profile.storage.snapshots.bucket,
            entry.manifest_key,
            updated.to_json_bytes(),
            kms_key_id=profile.storage.snapshots.kms_key_id,
            tags={
                "etcdguard.io/cluster": profile.name,
                "etcdguard.io/ocp-version": current.ocp_version,
                "etcdguard.io/kind": "manifest",
            },
            content_type="application/json",
        )
