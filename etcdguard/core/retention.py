"""Retention: which etcd backups of a cluster to keep and which to delete, and why.

Pure: `plan_retention(backups, policy, context=..., now=...)` takes the catalogue's view of one
cluster's backups and returns a `RetentionPlan`; the etcd-retention flow carries it out (batched
deletes, all versions, dry run). No I/O and no clock: `now` is a parameter.

Semantics:

keep-rules, over complete backups (manifest present); a backup is kept if any rule keeps it:
    pinned; the newest verified backup; the last `keep_last`; every backup younger than
    `keep_younger_than`; for each of hourly/daily/weekly/monthly, the representative of each of
    the `keep_<period>` most recent calendar buckets (in `timezone`) that hold a backup (as in
    restic and borg: a week without backups does not use up a weekly slot); the representative of
    each z-stream the cluster runs now or ran within `keep_zstreams_within`. A representative is
    the newest *verified* backup of its bucket or z-stream, else the newest one. Hours are wall
    hours with their UTC offset (the hour repeated when clocks go back is two buckets), days are
    local dates, weeks are ISO weeks (Monday start, ISO week-numbering year), months local months.
    (A bucket is taken to be one stretch of time, true unless a zone's clocks go back across
    midnight; the walk stops at the first backup of the bucket after the last one it keeps.)
caps, over what the keep-rules kept, oldest first:
    `max_age` removes kept backups older than it; then `max_total_bytes` removes the oldest kept
    backups until the kept ones fit. Caps never remove a pinned backup, the newest verified
    backup, or the representative of the z-stream the cluster runs now (so one oversize backup
    cannot wipe everything: it stays, and the others go only as far as the cap demands).
floor, which beats caps and rules:
    if fewer than `min_verified` verified backups are kept, the newest verified backups not kept
    are added back until there are `min_verified` (or all of them, if fewer exist); each case is
    reported in `floor_violations` instead of being deleted, as is a cap the floor defeats.

"Verified" means checksums passed and no failed restore drill (`BackupCandidate.counts_as_verified`).
Incomplete uploads (no manifest; the catalogue also reports dangling multipart uploads this way)
are kept while younger than `incomplete_grace` ("upload in progress") and deleted after. Pinned
candidates are always kept. Locked candidates (S3 Object Lock retention in force) are never in
`delete`: what would be deleted goes to `skipped_locked`, and does not count for the floor.

Order is by the manifest's creation time (compared in UTC), never by key name, ties broken by
backup_id; candidates are sorted once, so a plan costs O(n log n).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from operator import attrgetter

from etcdguard.core import _retention_rules
from etcdguard.core.retention_models import (
    BackupCandidate,
    ClusterContext,
    Decision,
    RetentionPlan,
    RetentionPolicy,
)

__all__ = [
    "BackupCandidate",
    "ClusterContext",
    "Decision",
    "RetentionPlan",
    "RetentionPolicy",
    "plan_retention",
]


def plan_retention(
    backups: Iterable[BackupCandidate],
    policy: RetentionPolicy,
    *,
    context: ClusterContext,
    now: dt.datetime,
) -> RetentionPlan:
    """Decide, for one cluster's backups, which to keep and which to delete (see the module docstring).

    Raises ValueError when `now` is naive, when the backups belong to more than one cluster, or
    when a backup_id appears twice. The order of `backups` does not matter.
    """
    if now.utcoffset() is None:
        raise ValueError(
            f"now {now.isoformat()} has no time zone; pass an aware datetime such as one in UTC."
        )
    ordered, utcs = _sorted(backups)
    outcome = _retention_rules.decide(ordered, utcs, policy, context=context, now=now.astimezone(dt.UTC))
    return RetentionPlan(
        keep=tuple(map(Decision._make, outcome.keep)),
        delete=tuple(map(Decision._make, outcome.delete)),
        skipped_locked=tuple(map(Decision._make, outcome.skipped_locked)),
        floor_violations=outcome.floor_violations,
        bytes_freed=outcome.bytes_freed,
    )


def _sorted(backups: Iterable[BackupCandidate]) -> tuple[list[BackupCandidate], list[dt.datetime]]:
    """Newest first by creation time, ties by backup_id ascending: the run's only sort."""
    candidates = list(backups)
    if len({b.backup_id for b in candidates}) != len(candidates):
        seen: set[str] = set()
        for b in candidates:
            if b.backup_id in seen:
                raise ValueError(
                    f"backup_id {b.backup_id!r} is listed more than once; list each backup once "
                    "(de-duplicate the catalogue listing)."
                )
            seen.add(b.backup_id)
    clusters = {b.cluster for b in candidates}
    if len(clusters) > 1:
        raise ValueError(
            "plan_retention plans one cluster at a time, but the backups belong to clusters "
            f"{sorted(clusters)}; group them by cluster and call it once per cluster."
        )
    # Two stable sorts (ties keep the first sort's order): backup_id ascending, then newest first.
    # Aware datetimes compare as instants, whatever their zones.
    candidates.sort(key=attrgetter("backup_id"))
    candidates.sort(key=attrgetter("created_at"), reverse=True)
    return candidates, [b.created_at.astimezone(dt.UTC) for b in candidates]
