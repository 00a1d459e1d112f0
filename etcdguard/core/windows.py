"""Off-peak windows: may a backup start now, and when may it next?

A window is a local wall-clock range in an IANA time zone on chosen weekdays, e.g. 22:00-04:00
Europe/Berlin, Monday to Friday. An end not after the start crosses midnight; the weekday is the
one the window STARTS on (Friday 22:00-04:00 runs into Saturday morning). A run may start only
with at least `min_remaining` of the window left, so a late run (Prefect starts runs that piled
up while no worker was polling) does not begin a backup the window cannot hold.

Daylight-saving days, defined so a window is always one unbroken stretch of time:
- a start or end in the skipped hour of a spring-forward day (Europe/Berlin 2025-03-30
  02:00-03:00 does not exist) is taken as the moment of the jump (03:00 local), so the window
  shrinks: 01:30-03:30 lasts 1 h that day, and 02:15-02:45 does not occur at all;
- on a fall-back day (2025-10-26 02:00-03:00 happens twice) a start in the repeated hour is its
  first occurrence and an end its second, so the window grows: 01:30-03:30 lasts 3 h.
If those rules make two occurrences overlap or touch, they count as one stretch.

Everything here is pure: callers pass an aware `now`.
"""

from __future__ import annotations

import dataclasses
import zoneinfo
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

import pydantic

from etcdguard.core import types

__all__ = ["OffPeakWindow", "Weekday", "WindowStatus", "next_opening", "window_status"]

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY = timedelta(days=1)
_SEARCH_DAYS = 800  # every valid window occurs within a couple of weeks; this bounds bad cases


class OffPeakWindow(pydantic.BaseModel):
    """When backups may start. Times are local wall-clock times in `timezone`."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    timezone: str
    """IANA time zone name, e.g. `Europe/Berlin`, `America/New_York` or `UTC`."""
    days: frozenset[Weekday] = frozenset(_WEEKDAYS)
    """Weekdays on which the window STARTS (`mon` ... `sun`); every day by default."""
    start: time
    """Local time the window opens, e.g. 22:00."""
    end: time
    """Local time the window closes; not after `start` means the next day (22:00-04:00)."""
    min_remaining: timedelta = timedelta(minutes=15)
    """A run starts only if at least this much of the window is left."""

    @pydantic.field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return types.known_zone(value, field="Time zone")

    @pydantic.field_validator("days", mode="before")
    @classmethod
    def _lower_days(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, list | tuple | set | frozenset):
            return frozenset(str(day).strip().lower() for day in value)
        return value

    @pydantic.field_serializer("days")
    def _days_in_week_order(self, days: frozenset[Weekday]) -> list[Weekday]:
        return [day for day in _WEEKDAYS if day in days]

    @pydantic.field_validator("days")
    @classmethod
    def _some_days(cls, value: frozenset[Weekday]) -> frozenset[Weekday]:
        if not value:
            raise ValueError("The window has no days; name at least one of mon, tue, ..., sun.")
        return value

    @pydantic.field_validator("start", "end")
    @classmethod
    def _wall_clock(cls, value: time, info: pydantic.ValidationInfo) -> time:
        if value.tzinfo is not None:
            raise ValueError(
                f"The window's {info.field_name} {value.isoformat()} carries a time zone; give a "
                "local wall-clock time and set the zone in `timezone`."
            )
        if value.microsecond:
            raise ValueError(
                f"The window's {info.field_name} {value.isoformat()} has fractions of a second; "
                "give whole seconds."
            )
        return value

    @pydantic.model_validator(mode="after")
    def _has_length(self) -> OffPeakWindow:
        if self.start == self.end:
            raise ValueError(
                f"The window starts and ends at {self.start:%H:%M}, so it has no length; to allow "
                "backups at any time, configure no window."
            )
        if self.min_remaining < timedelta(0):
            raise ValueError(f"min_remaining is {self.min_remaining}, which is negative; use 0 or more.")
        if self.min_remaining >= self.length:
            raise ValueError(
                f"min_remaining is {self.min_remaining} but the window {self.start:%H:%M}-"
                f"{self.end:%H:%M} lasts only {self.length}; make min_remaining shorter than the window."
            )
        return self

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        """`timezone` as a tzinfo."""
        return zoneinfo.ZoneInfo(self.timezone)

    @property
    def length(self) -> timedelta:
        """The window's wall-clock length on days without a clock change."""
        start = timedelta(hours=self.start.hour, minutes=self.start.minute, seconds=self.start.second)
        end = timedelta(hours=self.end.hour, minutes=self.end.minute, seconds=self.end.second)
        return (end - start) % _DAY

    def describe(self) -> str:
        """E.g. `22:00-04:00 Europe/Berlin on mon,tue,wed,thu,fri` (days omitted when all)."""
        text = f"{self.start:%H:%M}-{self.end:%H:%M} {self.timezone}"
        if len(self.days) < len(_WEEKDAYS):
            text += " on " + ",".join(day for day in _WEEKDAYS if day in self.days)
        return text


@dataclasses.dataclass(frozen=True)
class WindowStatus:
    """Whether a run may start at the instant asked about.

    When `inside`, `opens_at`/`closes_at` bound the current stretch of the window; otherwise
    they bound the next stretch in which a run may start (`opens_at` is `next_opening`). Both
    are in UTC, so subtracting them is exact (two datetimes sharing a ZoneInfo subtract as wall
    times, wrong across a clock change). `reason` is a sentence with local times, for logs and
    skipped-run messages.
    """

    inside: bool
    opens_at: datetime
    closes_at: datetime
    reason: str


def _wall(moment: datetime, zone: zoneinfo.ZoneInfo) -> datetime:
    return moment.astimezone(zone).replace(tzinfo=None)


def _resolve(wall: datetime, zone: zoneinfo.ZoneInfo, *, latest: bool) -> datetime:
    """The UTC instant of local wall time `wall`: for a repeated wall time the first (or, with
    `latest`, the second) occurrence; for a skipped one the moment of the jump."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if first == second:
        return first
    low, high = sorted((first, second))
    exists = [moment for moment in (low, high) if _wall(moment, zone) == wall]
    if exists:
        return exists[-1] if latest else exists[0]
    # Skipped: find the first second whose wall time is past `wall` (the clock jumped over it).
    low_ts, high_ts = int(low.timestamp()), int(high.timestamp())
    while high_ts - low_ts > 1:
        middle = (low_ts + high_ts) // 2
        if _wall(datetime.fromtimestamp(middle, UTC), zone) > wall:
            high_ts = middle
        else:
            low_ts = middle
    return datetime.fromtimestamp(high_ts, UTC)


def _occurrence(window: OffPeakWindow, day: date) -> tuple[datetime, datetime] | None:
    if _WEEKDAYS[day.weekday()] not in window.days:
        return None
    zone = window.zone
    end_day = day if window.end > window.start else day + _DAY
    opens = _resolve(datetime.combine(day, window.start), zone, latest=False)
    closes = _resolve(datetime.combine(end_day, window.end), zone, latest=True)
    return (opens, closes) if closes > opens else None


def _stretches(window: OffPeakWindow, now: datetime) -> Iterator[tuple[datetime, datetime]]:
    """Stretches of the window in time order, merged where occurrences overlap or touch, from
    the one that may contain `now` onwards (an occurrence lasts less than two days)."""
    first_day = _wall(now, window.zone).date() - 2 * _DAY
    pending: tuple[datetime, datetime] | None = None
    for offset in range(_SEARCH_DAYS):
        occurrence = _occurrence(window, first_day + offset * _DAY)
        if occurrence is None:
            continue
        if pending is not None and occurrence[0] <= pending[1]:
            pending = (pending[0], max(pending[1], occurrence[1]))
            continue
        if pending is not None:
            yield pending
        pending = occurrence
    if pending is not None:
        yield pending


def _duration(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    if seconds < 60:
        return f"{seconds} s"
    hours, minutes = divmod(seconds // 60, 60)
    if hours and minutes:
        return f"{hours} h {minutes} min"
    return f"{hours} h" if hours else f"{minutes} min"


def window_status(window: OffPeakWindow, now: datetime) -> WindowStatus:
    """Whether a run may start at `now` (timezone-aware): `now` lies in a stretch of the window
    with at least `window.min_remaining` of it left. See `WindowStatus` for the other fields."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(
            f"window_status() was given the naive time {now.isoformat()}; pass a timezone-aware "
            "`now` (e.g. datetime.now(UTC))."
        )
    zone = window.zone

    def local(moment: datetime) -> str:
        return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")

    too_late: str | None = None
    for opens, closes in _stretches(window, now):
        if closes <= now:
            continue
        usable_until = closes - window.min_remaining
        if opens <= now <= usable_until:
            return WindowStatus(
                inside=True,
                opens_at=opens,
                closes_at=closes,
                reason=(
                    f"Inside the off-peak window {window.describe()}: it opened at {local(opens)} "
                    f"and closes at {local(closes)}, {_duration(closes - now)} from now."
                ),
            )
        if opens <= now:
            too_late = (
                f"Too little of the off-peak window {window.describe()} is left: it closes at "
                f"{local(closes)}, {_duration(closes - now)} from now, less than the "
                f"{_duration(window.min_remaining)} a run needs."
            )
        elif opens <= usable_until:
            situation = too_late or f"Outside the off-peak window {window.describe()}."
            return WindowStatus(
                inside=False,
                opens_at=opens,
                closes_at=closes,
                reason=f"{situation} It opens next at {local(opens)}, {_duration(opens - now)} from now.",
            )
    raise ValueError(
        f"The off-peak window {window.describe()} has no usable opening within {_SEARCH_DAYS} days "
        f"of {now.isoformat()}; widen the window or lower min_remaining."
    )


def next_opening(window: OffPeakWindow, now: datetime) -> datetime:
    """The earliest instant at or after `now` at which a run may start, in UTC: `now` itself
    when `window_status(window, now).inside`, else the next stretch's opening."""
    status = window_status(window, now)
    return now.astimezone(UTC) if status.inside else status.opens_at
