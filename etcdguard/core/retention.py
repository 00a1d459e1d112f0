"""Retention: which etcd backups of a cluster to keep and which to delete, and why.

Pure: `plan_retention(backups, policy, context=..., now=...)` takes the catalogue's view of one
cluster's backups and returns a `RetentionPlan`; the etcd-retention flow carries it out (batched
deletes, all versions, dry run). No I/O and no clock: `now` is a parameter.

Semantics (DESIGN.md "Retention"):

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

import dataclasses
import datetime as dt
import zoneinfo
from collections.abc import Iterable
from operator import attrgetter
from typing import Annotated, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from etcdguard.core import _retention_rules

__all__ = [
    "BackupCandidate",
    "ClusterContext",
    "Decision",
    "RetentionPlan",
    "RetentionPolicy",
    "plan_retention",
]

_MAX_COUNT = 100_000
_Positive = Annotated[dt.timedelta, Field(gt=dt.timedelta(0))]


class RetentionPolicy(BaseModel):
    """One cluster's retention policy. Keep-rules are unioned, then caps apply, never below the floor."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    keep_last: int = Field(
        default=3, ge=0, le=_MAX_COUNT, description="Keep the N newest complete backups (0: rule off)."
    )
    keep_hourly: int = Field(
        default=0,
        ge=0,
        le=_MAX_COUNT,
        description="Keep one backup per hour for the N most recent local hours that have a backup.",
    )
    keep_daily: int = Field(
        default=7,
        ge=0,
        le=_MAX_COUNT,
        description="Keep one backup per day for the N most recent local days that have a backup.",
    )
    keep_weekly: int = Field(
        default=4,
        ge=0,
        le=_MAX_COUNT,
        description="Keep one backup per ISO week (Monday start) for the N most recent weeks that have one.",
    )
    keep_monthly: int = Field(
        default=6,
        ge=0,
        le=_MAX_COUNT,
        description="Keep one backup per calendar month for the N most recent months that have one.",
    )
    timezone: str = Field(
        default="UTC",
        min_length=1,
        description="IANA time zone of the hour/day/week/month buckets, e.g. 'Europe/Berlin' or 'UTC'.",
    )
    keep_younger_than: _Positive | None = Field(
        default=None, description="Keep every complete backup younger than this (None: rule off)."
    )
    keep_zstreams_within: dt.timedelta = Field(
        default=dt.timedelta(days=30),
        ge=dt.timedelta(0),
        description=(
            "Keep the newest backup of the z-stream the cluster runs and of every z-stream it ran within "
            "this window (the versions it was upgraded from), so a rollback target survives an upgrade."
        ),
    )
    max_age: _Positive | None = Field(
        default=None,
        description="Cap: delete kept backups older than this, oldest first, floor permitting (None: off).",
    )
    max_total_bytes: int | None = Field(
        default=None,
        ge=1,
        description="Cap: delete the oldest kept backups until the kept ones fit in this many bytes, "
        "floor permitting (None: off).",
    )
    min_verified: int = Field(
        default=3,
        ge=1,
        le=1000,
        description="Floor: never keep fewer than this many verified backups (checksums and drills passed).",
    )
    incomplete_grace: dt.timedelta = Field(
        default=dt.timedelta(hours=6),
        ge=dt.timedelta(minutes=15),
        description="Delete incomplete uploads (no manifest) once older than this; longer than any upload.",
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(
                f"timezone {value!r} is not an IANA time zone name; use one like 'Europe/Berlin' or 'UTC'."
            ) from exc
        return value

    @model_validator(mode="after")
    def _consistent(self) -> RetentionPolicy:
        if (
            self.keep_younger_than is not None
            and self.max_age is not None
            and self.keep_younger_than > self.max_age
        ):
            raise ValueError(
                f"keep_younger_than {self.keep_younger_than} is longer than max_age {self.max_age}, so "
                "the cap would delete what the rule keeps; make keep_younger_than at most max_age."
            )
        return self


@dataclasses.dataclass(frozen=True, slots=True)
class BackupCandidate:
    """One backup as the catalogue sees it. `created_at` is the manifest's creation time (aware); for
    an incomplete upload, the time of its oldest object (or the multipart upload's initiation)."""

    backup_id: str  # the backup's S3 prefix
    cluster: str
    ocp_version: str
    created_at: dt.datetime
    size_bytes: int
    verified: bool  # checksums passed
    drill: Literal["passed", "failed"] | None  # last restore drill, None when never drilled
    pinned: bool
    locked: bool  # S3 Object Lock retention in force: cannot be deleted now
    complete: bool  # manifest.json present

    def __post_init__(self) -> None:
        if self.created_at.utcoffset() is None:
            raise ValueError(
                f"created_at {self.created_at.isoformat()} of backup {self.backup_id!r} has no time zone; "
                "pass an aware datetime (the manifest's time is UTC)."
            )
        if self.size_bytes < 0:
            raise ValueError(f"size_bytes {self.size_bytes} of backup {self.backup_id!r} is negative.")

    @property
    def counts_as_verified(self) -> bool:
        """Complete, checksums passed, and no failed restore drill: what the floor counts."""
        return _retention_rules.is_good(self)


@dataclasses.dataclass(frozen=True, slots=True)
class ClusterContext:
    """The cluster's versions: `current_version` (first Completed history entry) and
    `version_history`, (version, completion time) pairs newest first as in ClusterVersion."""

    current_version: str
    version_history: tuple[tuple[str, dt.datetime], ...] = ()

    def __post_init__(self) -> None:
        previous: dt.datetime | None = None
        for version, completed in self.version_history:
            if completed.utcoffset() is None:
                raise ValueError(
                    f"version_history time {completed.isoformat()} of {version} has no time zone; "
                    "pass aware datetimes."
                )
            if previous is not None and completed > previous:
                raise ValueError(
                    f"version_history must be newest first, but {version} completed at "
                    f"{completed.isoformat()}, after the entry before it ({previous.isoformat()}); "
                    "pass ClusterVersion's history order."
                )
            previous = completed


class Decision(NamedTuple):
    """A candidate and why it is kept or deleted, e.g. ("keep_last 1/5", "daily 2025-03-30 (UTC)").
    (A named tuple: a plan of a million backups builds a million of them.)"""

    backup: BackupCandidate
    reasons: tuple[str, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class RetentionPlan:
    """Every candidate lands in exactly one of keep, delete, skipped_locked (each newest first, ties by
    backup_id). `floor_violations` are sentences for where the floor (or a pin) beat the policy or cannot
    hold; `bytes_freed` is the size of `delete`."""

    keep: tuple[Decision, ...]
    delete: tuple[Decision, ...]
    skipped_locked: tuple[Decision, ...]
    floor_violations: tuple[str, ...]
    bytes_freed: int


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
