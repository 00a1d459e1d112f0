"""The backup catalogue: what is in S3 for a cluster, read from the manifests.

A backup exists when its `manifest.json` exists (it is written last). Objects without a manifest
are incomplete uploads (`incomplete`), for retention to clean up once old enough. Backups are
ordered by the manifest's instant, never by key strings.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterable
from datetime import datetime

from etcdguard.clients.objectstore import ObjectStore
from etcdguard.core import errors, keys
from etcdguard.core.manifest import BackupManifest, ManifestFile
from etcdguard.core.profile import StorageSettings

__all__ = ["CatalogueEntry", "VerifyReport", "find_backup", "incomplete", "list_backups", "verify_backup"]


@dataclasses.dataclass(frozen=True)
class CatalogueEntry:
    manifest: BackupManifest
    manifest_key: str

    @property
    def taken_at(self) -> datetime:
        return self.manifest.taken_at


@dataclasses.dataclass(frozen=True)
class VerifyReport:
    backup_id: str
    checked: tuple[str, ...]
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def bucket_for(settings: StorageSettings, file: ManifestFile) -> str:
    return settings.snapshots.bucket if file.kind == "snapshot" else settings.static_resources.bucket


def list_backups(
    store: ObjectStore, settings: StorageSettings, *, cluster: str, ocp_version: str | None = None
) -> list[CatalogueEntry]:
    """Complete backups of `cluster` (optionally one z-stream), oldest first."""
    prefix = keys.backup_prefix(prefix=settings.snapshots.prefix, cluster=cluster, ocp_version=ocp_version)
    entries = []
    for obj in store.list_objects(settings.snapshots.bucket, prefix):
        if not obj.key.endswith("/manifest.json"):
            continue
        manifest = BackupManifest.from_json_bytes(store.get_bytes(settings.snapshots.bucket, obj.key))
        entries.append(CatalogueEntry(manifest=manifest, manifest_key=obj.key))
    return sorted(entries, key=lambda e: (e.taken_at, e.manifest_key))


def find_backup(
    store: ObjectStore,
    settings: StorageSettings,
    *,
    cluster: str,
    backup_id: str | None = None,
    ocp_version: str | None = None,
) -> CatalogueEntry:
    """The backup named `backup_id` (`cluster/version/timestamp`), or the newest one (of `ocp_version`)."""
    entries = list_backups(store, settings, cluster=cluster, ocp_version=ocp_version)
    if backup_id is not None:
        for entry in entries:
            if entry.manifest.backup_id == backup_id:
                return entry
        raise errors.NotFoundError(
            f"Backup {backup_id!r} is not in the catalogue of cluster {cluster!r} (s3://"
            f"{settings.snapshots.bucket}/{settings.snapshots.prefix}); "
            "list them with `etcdguard backups list`."
        )
    if not entries:
        scope = f" for z-stream {ocp_version}" if ocp_version else ""
        raise errors.NotFoundError(f"Cluster {cluster!r} has no complete backup{scope} in the catalogue.")
    return entries[-1]


def incomplete(store: ObjectStore, settings: StorageSettings, *, cluster: str) -> list[str]:
    """Snapshot-bucket keys of `cluster` that belong to no manifest (uploads that never finished)."""
    prefix = keys.backup_prefix(prefix=settings.snapshots.prefix, cluster=cluster)
    objects = store.list_objects(settings.snapshots.bucket, prefix)
    complete_dirs = {o.key.rsplit("/", 1)[0] for o in objects if o.key.endswith("/manifest.json")}
    return [o.key for o in objects if o.key.rsplit("/", 1)[0] not in complete_dirs]


def verify_backup(
    store: ObjectStore,
    settings: StorageSettings,
    entry: CatalogueEntry,
    *,
    progress: Callable[[str, int], None] | None = None,
) -> VerifyReport:
    """Download every file of the backup and compare size and sha256 with the manifest."""
    checked, problems = [], []
    for file in entry.manifest.files:
        bucket = bucket_for(settings, file)
        digest = hashlib.sha256()
        size = 0
        try:
            for chunk in store.iter_object(bucket, file.key):
                digest.update(chunk)
                size += len(chunk)
                if progress is not None:
                    progress(file.key, len(chunk))
        except errors.NotFoundError:
            problems.append(f"{file.kind} s3://{bucket}/{file.key} is missing.")
            continue
        if size != file.size:
            problems.append(
                f"{file.kind} s3://{bucket}/{file.key} has {size} bytes, the manifest says {file.size}."
            )
        elif digest.hexdigest() != file.sha256_stored:
            problems.append(
                f"{file.kind} s3://{bucket}/{file.key} has sha256 {digest.hexdigest()}, the manifest says "
                f"{file.sha256_stored}."
            )
        else:
            checked.append(f"{file.kind}: {size} bytes, sha256 {file.sha256_stored} matches")
    return VerifyReport(backup_id=entry.manifest.backup_id, checked=tuple(checked), problems=tuple(problems))


def keys_of(entries: Iterable[CatalogueEntry]) -> list[str]:
    return [e.manifest_key for e in entries]
