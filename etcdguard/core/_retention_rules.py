"""The retention planner's rules, private to `etcdguard.core.retention` (read its docstring first).

`decide` works on the candidates already sorted newest first (the one sort of the run) and on
their creation times in UTC. Every rule walks that order, or a prefix of it, by index: nothing
is sorted again, so a run is O(n log n) for the sort plus O(n) for the rules.

Steps, each reading what the previous ones left:
1. keep-rules over complete backups build `reasons` (index -> why it is kept);
2. caps (max_age, then max_total_bytes) move kept indices to `removed`, oldest first, never a
   protected one (pinned, newest verified, newest backup of the current z-stream);
3. the floor adds back the newest verified backups until `min_verified` of them are kept;
4. every candidate lands in keep, delete or skipped_locked.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Hashable, Sequence
from zoneinfo import ZoneInfo

from etcdguard.core.retention_models import BackupCandidate, ClusterContext, RetentionPolicy

__all__ = ["Outcome", "decide", "format_bytes", "format_duration", "is_good"]

Verdict = tuple[BackupCandidate, tuple[str, ...]]

_LOCKED = "locked: S3 Object Lock retention in force"
_IN_PROGRESS = "upload in progress"
_NO_RULE = "no keep-rule applies"
_NO_RULE_REASONS = (_NO_RULE,)
_BYTE_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def format_duration(value: dt.timedelta) -> str:
    """`2d`, `6h`, `1d12h`, `90m`-style text: days, hours, minutes, seconds, zero parts left out."""
    if value < dt.timedelta(0):
        return "-" + format_duration(-value)
    minutes, seconds = divmod(value.seconds, 60)
    hours, minutes = divmod(minutes, 60)
    parts = [
        f"{n}{unit}" for n, unit in ((value.days, "d"), (hours, "h"), (minutes, "m"), (seconds, "s")) if n
    ]
    if not parts:
        return f"{value.total_seconds():g}s"
    return "".join(parts)


def format_bytes(size: int) -> str:
    """Binary units with one decimal: `512 B`, `1.5 KiB`, `12.0 GiB`."""
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in _BYTE_UNITS:
        value /= 1024
        if value < 1024 or unit == _BYTE_UNITS[-1]:
            break
    return f"{value:.1f} {unit}"


def is_good(backup: BackupCandidate) -> bool:
    """Counts as verified: complete, checksums passed and no failed restore drill."""
    return backup.counts_as_verified


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """What `decide` returns; `etcdguard.core.retention` wraps it into a `RetentionPlan`."""

    keep: tuple[Verdict, ...]
    delete: tuple[Verdict, ...]
    skipped_locked: tuple[Verdict, ...]
    floor_violations: tuple[str, ...]
    bytes_freed: int


def decide(
    ordered: Sequence[BackupCandidate],
    utcs: Sequence[dt.datetime],
    policy: RetentionPolicy,
    *,
    context: ClusterContext,
    now: dt.datetime,
) -> Outcome:
    """Plan one cluster. `ordered` is newest first, `utcs[i]` is `ordered[i].created_at` in UTC, `now`
    is in UTC, and every candidate belongs to the same cluster with a unique backup_id."""
    if not ordered:
        return Outcome((), (), (), (), 0)
    run = _Run(ordered, utcs, policy, context=context, now=now)
    run.apply_keep_rules()
    run.apply_max_age()
    run.apply_max_total_bytes()
    run.apply_floor()
    return run.outcome()


def zstreams_to_keep(context: ClusterContext, *, window: dt.timedelta, now: dt.datetime) -> list[str]:
    """The current version, then every version the cluster ran at some time within `window`
    before `now`: a history entry stopped running when the next newer one completed."""
    versions = [context.current_version]
    ended = now
    for version, completed in context.version_history:
        if ended < now - window:
            break
        if version not in versions:
            versions.append(version)
        ended = completed
    return versions


def newest_per_bucket(
    order: Sequence[int], *, count: int, key_of: Callable[[int], Hashable], good: Callable[[int], bool]
) -> list[int]:
    """The representative of each of the `count` most recent buckets that hold a backup (the
    newest verified one in the bucket, else the newest), walking `order` newest first and
    stopping at the first backup of the next bucket. Returns indices, newest bucket first."""
    newest: dict[Hashable, int] = {}
    newest_good: dict[Hashable, int] = {}
    for i in order:
        key = key_of(i)
        if key not in newest:
            if len(newest) == count:
                break
            newest[key] = i
        if key not in newest_good and good(i):
            newest_good[key] = i
    return [newest_good.get(key, i) for key, i in newest.items()]


# Per period: the bucket key of a local time (cheap, compared often) and the bucket's label.
# The hour's key holds the UTC offset: the hour repeated when clocks go back is two buckets.
_PERIODS: tuple[tuple[str, Callable[[dt.datetime], Hashable], Callable[[dt.datetime], str]], ...] = (
    (
        "hourly",
        lambda local: (local.toordinal(), local.hour, local.utcoffset()),
        lambda local: f"{local:%Y-%m-%d %H}:00{_offset(local)}",
    ),
    ("daily", lambda local: local.toordinal(), lambda local: local.date().isoformat()),
    (
        "weekly",
        lambda local: local.toordinal() - local.weekday(),  # the ordinal of the ISO week's Monday
        lambda local: f"{local:%G-W%V}",
    ),
    ("monthly", lambda local: local.year * 12 + local.month, lambda local: f"{local:%Y-%m}"),
)


def _offset(local: dt.datetime) -> str:
    text = local.strftime("%z")  # +0200
    return f"{text[:3]}:{text[3:]}"


class _Run:
    """The state of one planning run over index positions in `ordered`."""

    def __init__(
        self,
        ordered: Sequence[BackupCandidate],
        utcs: Sequence[dt.datetime],
        policy: RetentionPolicy,
        *,
        context: ClusterContext,
        now: dt.datetime,
    ) -> None:
        self.b = ordered
        self.utc = utcs
        self.policy = policy
        self.context = context
        self.now = now
        self.zone = ZoneInfo(policy.timezone)
        self.cluster = ordered[0].cluster
        self.complete = [i for i, backup in enumerate(ordered) if backup.complete]
        self.good = [is_good(backup) for backup in ordered]
        self.reasons: dict[int, list[str]] = {}
        self.protected: dict[int, str] = {}  # index -> what protects it from caps
        self.removed: dict[int, str] = {}  # index -> the cap that removed it
        self.floor: dict[int, str] = {}  # index -> floor reason (added back)
        self.violations: list[str] = []
        self._local: dict[int, dt.datetime] = {}

    def keep(self, i: int, reason: str) -> None:
        self.reasons.setdefault(i, []).append(reason)

    def local(self, i: int) -> dt.datetime:
        value = self._local.get(i)
        if value is None:
            value = self._local[i] = self.utc[i].astimezone(self.zone)
        return value

    def _bucket_key(self, key: Callable[[dt.datetime], Hashable]) -> Callable[[int], Hashable]:
        return lambda i: key(self.local(i))

    # -- 1. keep-rules -------------------------------------------------------------------------

    def apply_keep_rules(self) -> None:
        policy = self.policy
        versions = zstreams_to_keep(self.context, window=policy.keep_zstreams_within, now=self.now)
        wanted = set(versions)
        newest_of: dict[str, int] = {}
        newest_good_of: dict[str, int] = {}
        newest_good: int | None = None
        for i in self.complete:  # the one full pass: pins, newest verified, z-streams
            backup = self.b[i]
            if backup.pinned:
                self.keep(i, "pinned")
                self.protected[i] = "pinned"
            if self.good[i] and newest_good is None:
                newest_good = i
            if backup.ocp_version in wanted:
                newest_of.setdefault(backup.ocp_version, i)
                if self.good[i]:
                    newest_good_of.setdefault(backup.ocp_version, i)
        if newest_good is not None:
            self.keep(newest_good, "newest verified")
            self.protected.setdefault(newest_good, "the newest verified backup")
        for rank, i in enumerate(self.complete[: policy.keep_last], start=1):
            self.keep(i, f"keep_last {rank}/{policy.keep_last}")
        if policy.keep_younger_than is not None:
            text = f"younger than {format_duration(policy.keep_younger_than)}"
            for i in self.complete:
                if self.now - self.utc[i] >= policy.keep_younger_than:
                    break
                self.keep(i, text)
        for period, key, label in _PERIODS:
            count: int = getattr(policy, f"keep_{period}")
            if count:
                chosen = newest_per_bucket(
                    self.complete, count=count, key_of=self._bucket_key(key), good=self.good.__getitem__
                )
                for i in chosen:
                    self.keep(i, f"{period} {label(self.local(i))} ({policy.timezone})")
        for version in versions:
            rep = newest_good_of.get(version, newest_of.get(version))
            if rep is None:
                continue
            self.keep(rep, f"newest of z-stream {version}")
            if version == self.context.current_version:
                self.protected.setdefault(
                    rep, f"the newest backup of z-stream {version}, which the cluster runs"
                )

    # -- 2. caps -------------------------------------------------------------------------------

    def apply_max_age(self) -> None:
        limit = self.policy.max_age
        if limit is None:
            return
        text = f"max_age {format_duration(limit)} exceeded"
        for i in reversed(self.complete):  # oldest first
            if self.now - self.utc[i] <= limit:
                break
            if i not in self.reasons:
                continue
            guard = self.protected.get(i)
            if guard is None:
                self.removed[i] = text
            elif guard != "pinned":
                self.violations.append(
                    f"max_age {format_duration(limit)} would delete {self.b[i].backup_id}, {guard}; kept it."
                )

    def kept_bytes(self) -> int:
        return sum(self.b[i].size_bytes for i in self.reasons if i not in self.removed) + sum(
            self.b[i].size_bytes for i in self.floor
        )

    def apply_max_total_bytes(self) -> None:
        cap = self.policy.max_total_bytes
        if cap is None:
            return
        total = self.kept_bytes()
        for i in reversed(self.complete):  # oldest first
            if total <= cap:
                break
            if i in self.reasons and i not in self.removed and i not in self.protected:
                self.removed[i] = f"max_total_bytes: {format_bytes(total)} over {format_bytes(cap)}"
                total -= self.b[i].size_bytes

    # -- 3. floor ------------------------------------------------------------------------------

    def is_kept(self, i: int) -> bool:
        return (i in self.reasons and i not in self.removed) or i in self.floor

    def apply_floor(self) -> None:
        need = self.policy.min_verified
        kept_good = sum(1 for i in self.reasons if i not in self.removed and self.good[i])
        before = kept_good
        added: list[int] = []
        if kept_good < need:
            for i in self.complete:  # newest first
                if kept_good >= need:
                    break
                if self.good[i] and not self.is_kept(i):
                    added.append(i)
                    kept_good += 1
        if added:
            rank = 0
            pending = set(added)
            for i in self.complete:
                if not pending:
                    break
                if self.good[i] and (self.is_kept(i) or i in pending):
                    rank += 1
                    if i in pending:
                        self.floor[i] = f"floor: verified {rank}/{need}"
                        pending.discard(i)
            ids = ", ".join(self.b[i].backup_id for i in added)
            them = "it" if len(added) == 1 else "them"
            self.violations.append(
                f"The policy would leave {_plural(before, 'verified backup')} of cluster {self.cluster} "
                f"where min_verified is {need}; kept back {ids} instead of deleting {them}."
            )
        if kept_good == 0:
            self.violations.append(
                f"Cluster {self.cluster} has no verified backup (min_verified is {need}); "
                "take a backup and verify it."
            )
        elif kept_good < need:
            self.violations.append(
                f"Cluster {self.cluster} has only {_plural(kept_good, 'verified backup')}, fewer than "
                f"min_verified {need}; none of them is deleted."
            )
        cap = self.policy.max_total_bytes
        if cap is not None and (total := self.kept_bytes()) > cap:
            self.violations.append(
                f"The backups kept for cluster {self.cluster} hold {format_bytes(total)}, over "
                f"max_total_bytes {format_bytes(cap)}: pinned and floor-protected backups alone exceed it."
            )

    # -- 4. verdicts ---------------------------------------------------------------------------

    def outcome(self) -> Outcome:
        keep: list[Verdict] = []
        delete: list[Verdict] = []
        skipped: list[Verdict] = []
        freed = 0
        grace = self.policy.incomplete_grace
        expired = (f"incomplete upload older than {format_duration(grace)}",)
        for i, backup in enumerate(self.b):
            if backup.complete:
                if i in self.reasons or i in self.floor:
                    kept = self.is_kept(i)
                    reasons = self._complete_reasons(i, kept=kept)
                else:
                    kept, reasons = False, _NO_RULE_REASONS
            elif backup.pinned:
                kept = True
                reasons = ("pinned",) if self.now - self.utc[i] > grace else ("pinned", _IN_PROGRESS)
            else:
                kept = self.now - self.utc[i] <= grace
                reasons = (_IN_PROGRESS,) if kept else expired
            if kept:
                keep.append((backup, reasons))
            elif backup.locked:
                skipped.append((backup, (*reasons, _LOCKED)))
            else:
                delete.append((backup, reasons))
                freed += backup.size_bytes
        return Outcome(tuple(keep), tuple(delete), tuple(skipped), tuple(self.violations), freed)

    def _complete_reasons(self, i: int, *, kept: bool) -> tuple[str, ...]:
        rules = self.reasons.get(i, [])
        cap = self.removed.get(i)
        if kept:
            extra = [self.floor[i]] if i in self.floor else []
            if cap is not None:
                extra.append(f"floor overrides {cap}")
            return (*rules, *extra)
        if cap is not None:
            return (cap, *(f"cap overrides {rule}" for rule in rules))
        return (_NO_RULE,)
