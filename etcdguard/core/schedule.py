"""The cron schedule of a cluster's nightly backup: the start of its off-peak window, DST-safe.

Prefect evaluates cron schedules in the window's time zone. A start time inside a daylight-
saving transition misbehaves: on the spring-forward night 02:30 does not exist (the run is
skipped or moved), and on the fall-back night 02:30 happens twice (two runs). So when the
window's start is skipped or repeated on any day of the coming year, the schedule starts at
the first wall-clock minute after the transition that is never ambiguous, provided the window
is still open long enough then; otherwise the profile is refused with a fix to apply.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, time, timedelta

from etcdguard.core import errors
from etcdguard.core.windows import OffPeakWindow

__all__ = ["BackupSchedule", "backup_schedule", "unsafe_local_times"]

_CRON_DAYS = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}


@dataclasses.dataclass(frozen=True)
class BackupSchedule:
    cron: str
    timezone: str
    note: str | None
    """Set when the start was moved away from a DST transition."""


def unsafe_local_times(zone_name: str, *, start: date, days: int = 400) -> list[tuple[time, time]]:
    """Local wall-clock spans [from, to) that are skipped or repeated on some day in `days` days."""
    window = OffPeakWindow(timezone=zone_name, start=time(0), end=time(1))  # validates the zone name
    zone = window.zone
    spans = set()
    moment = datetime.combine(start, time(0), tzinfo=UTC)
    end = moment + timedelta(days=days)
    step = timedelta(minutes=30)
    previous = moment.astimezone(zone).utcoffset()
    while moment < end:
        moment += step
        offset = moment.astimezone(zone).utcoffset()
        if offset != previous and offset is not None and previous is not None:
            # Find the exact transition instant to the minute.
            low = moment - step
            while moment - low > timedelta(minutes=1):
                mid = low + (moment - low) / 2
                if mid.astimezone(zone).utcoffset() == previous:
                    low = mid
                else:
                    moment = mid
            wall_after = moment.astimezone(zone).replace(tzinfo=None)
            wall_before = wall_after - (offset - previous)
            first, last = sorted((wall_before, wall_after))
            spans.add((first.time().replace(fold=0), last.time().replace(fold=0)))
            moment = low + step
            previous = offset
    return sorted(spans)


def _inside(value: time, span: tuple[time, time]) -> bool:
    return span[0] <= value < span[1]


def backup_schedule(window: OffPeakWindow, *, today: date) -> BackupSchedule:
    """The cron (in `window.timezone`) that starts the backup when the window opens."""
    start = window.start
    note = None
    for span in unsafe_local_times(window.timezone, start=today):
        if _inside(start, span):
            moved = span[1]
            shift = datetime.combine(today, moved) - datetime.combine(today, start)
            if shift + window.min_remaining >= window.length:
                raise errors.ConfigError(
                    f"window.start {start:%H:%M} falls in the daylight-saving transition {span[0]:%H:%M}-"
                    f"{span[1]:%H:%M} of {window.timezone}, and the window {window.describe()} is too short to "
                    "start after it. Start the window outside that hour (e.g. 01:00 or 03:00)."
                )
            note = (
                f"The window opens at {start:%H:%M}, inside the daylight-saving transition "
                f"{span[0]:%H:%M}-{span[1]:%H:%M} of {window.timezone}; backups are scheduled at "
                f"{moved:%H:%M} so that no night gets zero or two runs."
            )
            start = moved
    days = ",".join(str(_CRON_DAYS[d]) for d in sorted(window.days, key=lambda d: _CRON_DAYS[d]))
    day_field = "*" if len(window.days) == 7 else days
    return BackupSchedule(
        cron=f"{start.minute} {start.hour} * * {day_field}", timezone=window.timezone, note=note
    )
