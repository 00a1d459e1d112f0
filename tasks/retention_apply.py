"""Between the catalogue in S3 and the pure retention planner: build the candidates, carry out
a plan.

Candidates: every complete backup (manifest present: verified at upload; the last drill's
result; pinned when the manifest object carries the tag `etcdguard.io/pinned=true`; locked when
S3 Object Lock retains its snapshot), plus every incomplete backup directory (objects but no
manifest), dated by its oldest object. Applying a plan deletes every version of every object of
each doomed backup (snapshot, manifest, static resources) with batched DeleteObjects, reports
what Object Lock refused, and aborts multipart uploads older than the policy's grace.
"""

from __future__ import annotations

import dataclasses
import os
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime

from etcdguard.clients import objectstore
from etcdguard.clients.objectstore import ObjectStore
from etcdguard.core import keys
from etcdguard.core.profile import StorageSettings
from etcdguard.core.retention import BackupCandidate, RetentionPlan
from tasks import catalogue

__all__ = ["ApplyReport", "CatalogueView", "apply_plan", "load_candidates"]

PIN_TAG = "etcdguard.io/pinned"


@dataclasses.dataclass(frozen=True)
class CatalogueView:
    candidates: list[BackupCandidate]
    objects: dict[str, list[tuple[str, str]]]
    """backup_id -> (bucket, key) of every object of that backup."""
    stale_uploads: list[tuple[str, str, str, datetime]]
    """(bucket, key, upload id, initiated)."""


@dataclasses.dataclass(frozen=True)
class ApplyReport:
    deleted_versions: int
    deleted_backups: tuple[str, ...]
    refused: tuple[str, ...]
    aborted_uploads: tuple[str, ...]
    requests: int


def load_candidates(
    store: ObjectStore, settings: StorageSettings, *, cluster: str, now: datetime
) -> CatalogueView:
    complete = catalogue.list_backups(store, settings, cluster=cluster)
    objects: dict[str, list[tuple[str, str]]] = defaultdict(list)
    candidates = []
    for entry in complete:
        m = entry.manifest
        backup_id = m.backup_id
        objects[backup_id].append((settings.snapshots.bucket, entry.manifest_key))
        for file in m.files:
            objects[backup_id].append((catalogue.bucket_for(settings, file), file.key))
        tags = store.get_tags(settings.snapshots.bucket, entry.manifest_key)
        lock = objectstore.locked_until(store, settings.snapshots.bucket, m.snapshot_file.key)
        last_drill = m.drills[-1] if m.drills else None
        candidates.append(
            BackupCandidate(
                backup_id=backup_id,
                cluster=m.cluster,
                ocp_version=m.ocp_version,
                created_at=m.created_at,
                size_bytes=m.stored_size,
                verified=True,
                drill=None if last_drill is None else ("passed" if last_drill.passed else "failed"),
                pinned=tags.get(PIN_TAG) == "true",
                locked=lock is not None and lock > now,
                complete=True,
            )
        )
    known = {c.backup_id for c in candidates}
    partial: dict[str, list[objectstore.ObjectInfo]] = defaultdict(list)
    locations = (
        (settings.snapshots.bucket, settings.snapshots.prefix),
        (settings.static_resources.bucket, settings.static_resources.prefix),
    )
    for bucket, prefix in locations:
        for obj in store.list_objects(bucket, keys.backup_prefix(prefix=prefix, cluster=cluster)):
            try:
                partial_id: str = keys.parse_key(obj.key).backup_id
            except ValueError:
                continue  # not ours: never touched
            if partial_id not in known:
                partial[partial_id].append(obj)
                objects[partial_id].append((bucket, obj.key))
    for partial_id, found in partial.items():
        parsed = keys.parse_key(found[0].key)
        dated = [o.last_modified for o in found if o.last_modified is not None]
        candidates.append(
            BackupCandidate(
                backup_id=partial_id,
                cluster=cluster,
                ocp_version=parsed.ocp_version,
                created_at=min(dated) if dated else parsed.taken_at,
                size_bytes=sum(o.size for o in found),
                verified=False,
                drill=None,
                pinned=False,
                locked=False,
                complete=False,
            )
        )
    uploads = []
    for bucket, prefix in locations:
        for key, upload_id, initiated in objectstore.stale_uploads(
            store, bucket, keys.backup_prefix(prefix=prefix, cluster=cluster)
        ):
            uploads.append((bucket, key, upload_id, initiated))
    return CatalogueView(candidates=candidates, objects=dict(objects), stale_uploads=uploads)


def apply_plan(
    store: ObjectStore,
    view: CatalogueView,
    plan: RetentionPlan,
    *,
    uploads_to_abort: Iterable[tuple[str, str, str]],
) -> ApplyReport:
    """Delete every version of every object of `plan.delete`'s backups; abort the given uploads.
    Manifests go first, so a half-applied plan leaves incomplete backups (cleaned next run), never
    a manifest that points at deleted files."""
    by_bucket: dict[str, list[tuple[str, str | None]]] = defaultdict(list)
    requests = 0
    doomed = [d.backup.backup_id for d in plan.delete]
    ordered: list[tuple[str, str]] = []
    for backup_id in doomed:
        owned = view.objects.get(backup_id, [])
        ordered += sorted(owned, key=lambda item: not item[1].endswith("/manifest.json"))
    # One paginated version listing per bucket (1000 per page) under the doomed directories'
    # common prefix, instead of one listing per object or per directory.
    directories: dict[str, set[str]] = defaultdict(set)
    for bucket, key in ordered:
        directories[bucket].add(key.rsplit("/", 1)[0] + "/")
    for bucket, doomed_dirs in directories.items():
        common = os.path.commonprefix(sorted(doomed_dirs))  # noqa: RUF071 - S3 prefixes are plain strings
        versions = objectstore.list_versions(store, bucket, common)
        requests += max(1, (len(versions) + 999) // 1000)
        by_bucket[bucket] += [(k, v) for k, v in versions if k.rsplit("/", 1)[0] + "/" in doomed_dirs]
    deleted, refused = 0, []
    for bucket, items in by_bucket.items():
        manifests: list[tuple[str, str | None]] = [i for i in items if i[0].endswith("/manifest.json")]
        rest: list[tuple[str, str | None]] = [i for i in items if not i[0].endswith("/manifest.json")]
        for group in (manifests, rest):
            if not group:
                continue
            count, failures = objectstore.delete_versions(store, bucket, group)
            requests += (len(group) + 999) // 1000
            deleted += count
            refused += [f"s3://{bucket}/{key} ({code})" for key, code in failures]
    aborted = []
    for bucket, key, upload_id in uploads_to_abort:
        objectstore.abort_upload(store, bucket, key, upload_id)
        requests += 1
        aborted.append(f"s3://{bucket}/{key}")
    return ApplyReport(
        deleted_versions=deleted,
        deleted_backups=tuple(doomed),
        refused=tuple(refused),
        aborted_uploads=tuple(aborted),
        requests=requests,
    )
