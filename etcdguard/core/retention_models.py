"""The retention models: the policy (validated at the edge), the candidates the catalogue
describes, the cluster's versions, and the plan. `etcdguard.core.retention` plans over them;
`etcdguard.core._retention_rules` holds the rules. Semantics: `etcdguard.core.retention`."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Annotated, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from etcdguard.core import types

__all__ = ["BackupCandidate", "ClusterContext", "Decision", "RetentionPlan", "RetentionPolicy"]

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
        return types.known_zone(value, field="timezone")

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
        return self.complete and self.verified and self.drill != "failed"


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
