"""Off-peak windows: validation, exact calendar cases (midnight, weekdays, DST), and the
consistency of `window_status` with `next_opening`."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etcdguard.core import windows

pytestmark = pytest.mark.unit

BERLIN = "Europe/Berlin"


def window(start: str = "22:00", end: str = "04:00", **changes: Any) -> windows.OffPeakWindow:
    data: dict[str, Any] = {"timezone": BERLIN, "start": start, "end": end}
    data.update(changes)
    return windows.OffPeakWindow.model_validate(data)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def test_defaults_and_description() -> None:
    w = window("22:00", "04:00")
    assert w.days == frozenset({"mon", "tue", "wed", "thu", "fri", "sat", "sun"})
    assert w.min_remaining == timedelta(minutes=15)
    assert w.length == timedelta(hours=6)
    assert w.describe() == "22:00-04:00 Europe/Berlin"
    assert window("01:00", "02:00", days=["Fri", "mon"]).describe() == "01:00-02:00 Europe/Berlin on mon,fri"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"timezone": "Mars/Olympus"}, "not an IANA time zone name"),
        ({"timezone": "../etc/passwd"}, "not an IANA time zone name"),
        ({"days": []}, "no days"),
        ({"days": ["funday"]}, "Input should be 'mon'"),
        ({"end": "22:00"}, "starts and ends at 22:00"),
        ({"min_remaining": timedelta(hours=6)}, "lasts only 6:00:00"),
        ({"min_remaining": timedelta(minutes=-1)}, "negative"),
        ({"start": "22:00:00+02:00"}, "carries a time zone"),
        ({"start": "22:00:00.5"}, "fractions of a second"),
        ({"colour": "blue"}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_windows_are_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        window(**changes)


def test_window_serialises_days_in_week_order_and_round_trips() -> None:
    w = window(days="sun,Mon,wed")
    assert w.model_dump(mode="json")["days"] == ["mon", "wed", "sun"]
    assert windows.OffPeakWindow.model_validate_json(w.model_dump_json()) == w


def test_window_is_frozen() -> None:
    w = window("22:00", "04:00")
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        w.start = time(1)


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="naive time"):
        windows.window_status(window("22:00", "04:00"), datetime(2025, 6, 25, 23))


def test_inside_a_window_crossing_midnight() -> None:
    w = window("22:00", "04:00")
    status = windows.window_status(w, utc(2025, 6, 25, 21, 0))  # 23:00 CEST
    assert status.inside
    assert status.opens_at == utc(2025, 6, 25, 20, 0)
    assert status.closes_at == utc(2025, 6, 26, 2, 0)
    assert status.opens_at.tzinfo is UTC
    assert status.reason == (
        "Inside the off-peak window 22:00-04:00 Europe/Berlin: it opened at 2025-06-25 22:00 CEST "
        "and closes at 2025-06-26 04:00 CEST, 5 h from now."
    )
    assert windows.next_opening(w, utc(2025, 6, 25, 21, 0)) == utc(2025, 6, 25, 21, 0)


def test_outside_reports_the_next_opening() -> None:
    w = window("22:00", "04:00")
    now = utc(2025, 6, 25, 12, 0)  # 14:00 CEST
    status = windows.window_status(w, now)
    assert not status.inside
    assert (status.opens_at, status.closes_at) == (utc(2025, 6, 25, 20, 0), utc(2025, 6, 26, 2, 0))
    assert status.reason == (
        "Outside the off-peak window 22:00-04:00 Europe/Berlin. It opens next at 2025-06-25 22:00 CEST, "
        "8 h from now."
    )
    assert windows.next_opening(w, now) == utc(2025, 6, 25, 20, 0)


def test_too_little_left_is_outside_and_says_why() -> None:
    w = window("22:00", "04:00")
    now = utc(2025, 6, 26, 1, 50)  # 03:50 CEST, 10 min left
    status = windows.window_status(w, now)
    assert not status.inside
    assert status.opens_at == utc(2025, 6, 26, 20, 0)
    assert status.reason == (
        "Too little of the off-peak window 22:00-04:00 Europe/Berlin is left: it closes at 2025-06-26 "
        "04:00 CEST, 10 min from now, less than the 15 min a run needs. It opens next at 2025-06-26 "
        "22:00 CEST, 18 h 10 min from now."
    )
    exactly_enough = windows.window_status(w, utc(2025, 6, 26, 1, 45))
    assert exactly_enough.inside


def test_boundaries_open_inclusive_close_exclusive() -> None:
    w = window("22:00", "04:00", min_remaining=timedelta(0))
    assert windows.window_status(w, utc(2025, 6, 25, 20, 0)).inside
    assert not windows.window_status(w, utc(2025, 6, 25, 19, 59, 59)).inside
    assert windows.window_status(w, utc(2025, 6, 26, 1, 59, 59)).inside
    assert not windows.window_status(w, utc(2025, 6, 26, 2, 0)).inside


def test_the_day_is_the_day_the_window_starts() -> None:
    w = window("22:00", "04:00", days=["fri"])
    friday_night = utc(2025, 6, 27, 21, 0)  # Fri 23:00 CEST
    saturday_early = utc(2025, 6, 27, 23, 30)  # Sat 01:30 CEST
    saturday_night = utc(2025, 6, 28, 21, 0)  # Sat 23:00 CEST
    assert windows.window_status(w, friday_night).inside
    assert windows.window_status(w, saturday_early).inside
    status = windows.window_status(w, saturday_night)
    assert not status.inside
    assert status.opens_at == utc(2025, 7, 4, 20, 0)  # next Friday 22:00 CEST
    thursday_late = utc(2025, 6, 26, 23, 0)  # Fri 01:00 CEST: belongs to Thursday's window
    assert not windows.window_status(w, thursday_late).inside


def test_spring_forward_shrinks_a_window_over_the_skipped_hour() -> None:
    w = window("01:30", "03:30")  # 2025-03-30: 02:00 CET jumps to 03:00 CEST
    status = windows.window_status(w, utc(2025, 3, 30, 0, 45))
    assert status.inside
    assert (status.opens_at, status.closes_at) == (utc(2025, 3, 30, 0, 30), utc(2025, 3, 30, 1, 30))
    assert status.closes_at - status.opens_at == timedelta(hours=1)
    assert "closes at 2025-03-30 03:30 CEST" in status.reason


def test_fall_back_grows_a_window_over_the_repeated_hour() -> None:
    w = window("01:30", "03:30")  # 2025-10-26: 03:00 CEST falls back to 02:00 CET
    status = windows.window_status(w, utc(2025, 10, 26, 2, 0))
    assert status.inside
    assert (status.opens_at, status.closes_at) == (utc(2025, 10, 25, 23, 30), utc(2025, 10, 26, 2, 30))
    assert status.closes_at - status.opens_at == timedelta(hours=3)


def test_start_in_the_skipped_hour_opens_at_the_jump() -> None:
    w = window("02:30", "05:00")
    status = windows.window_status(w, utc(2025, 3, 29, 12, 0))
    assert status.opens_at == utc(2025, 3, 30, 1, 0)  # 03:00 CEST, the moment of the jump
    assert status.closes_at == utc(2025, 3, 30, 3, 0)  # 05:00 CEST


def test_window_inside_the_skipped_hour_does_not_occur_that_day() -> None:
    w = window("02:15", "02:45", min_remaining=timedelta(minutes=5))
    status = windows.window_status(w, utc(2025, 3, 29, 23, 0))  # 00:00 CET on the 30th
    assert not status.inside
    assert status.opens_at == utc(2025, 3, 31, 0, 15)  # 02:15 CEST on the 31st
    assert not windows.window_status(w, utc(2025, 3, 30, 1, 0)).inside


def test_start_in_the_repeated_hour_is_its_first_occurrence() -> None:
    w = window("02:30", "04:00")
    status = windows.window_status(w, utc(2025, 10, 26, 0, 30))  # first 02:30 (CEST)
    assert status.inside
    assert (status.opens_at, status.closes_at) == (utc(2025, 10, 26, 0, 30), utc(2025, 10, 26, 3, 0))


def test_end_in_the_repeated_hour_is_its_second_occurrence() -> None:
    w = window("22:00", "02:30")
    status = windows.window_status(w, utc(2025, 10, 26, 1, 0))  # 02:00 CET, second pass
    assert status.inside
    assert (status.opens_at, status.closes_at) == (utc(2025, 10, 25, 20, 0), utc(2025, 10, 26, 1, 30))


def test_other_zone_new_york_spring_forward() -> None:
    w = window("01:00", "04:00", timezone="America/New_York")  # 2025-03-09 02:00 EST -> 03:00 EDT
    status = windows.window_status(w, utc(2025, 3, 9, 6, 30))
    assert status.inside
    assert (status.opens_at, status.closes_at) == (utc(2025, 3, 9, 6, 0), utc(2025, 3, 9, 8, 0))
    assert "EDT" in status.reason


WEEKDAYS: list[windows.Weekday] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
ZONE_NAMES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "America/Santiago",
]
WALL = st.times().map(lambda moment: moment.replace(microsecond=0, second=moment.second % 2 * 30))


def clock_changes(zone_name: str, year: int = 2025) -> list[datetime]:
    """The instants in `year` at which `zone_name`'s UTC offset changes (to the hour)."""
    zone = ZoneInfo(zone_name)
    moment, changes = datetime(year, 1, 1, tzinfo=UTC), []
    while moment.year == year:
        if moment.astimezone(zone).utcoffset() != (moment + timedelta(hours=1)).astimezone(zone).utcoffset():
            changes.append(moment + timedelta(hours=1))
        moment += timedelta(hours=1)
    return changes


CLOCK_CHANGES = {name: clock_changes(name) for name in ZONE_NAMES}
UNIFORM_NOW = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2030, 12, 31), timezones=st.just(UTC)
)


@st.composite
def cases(draw: st.DrawFn) -> tuple[windows.OffPeakWindow, datetime]:
    """A window and a `now`, half of the time within two days of one of the zone's clock changes."""
    zone = draw(st.sampled_from(ZONE_NAMES))
    start = draw(WALL)
    end = draw(WALL.filter(lambda moment: moment != start))
    days: set[windows.Weekday] = draw(st.sets(st.sampled_from(WEEKDAYS), min_size=1))
    length = (datetime.combine(datetime.min, end) - datetime.combine(datetime.min, start)) % timedelta(days=1)
    minutes = (
        draw(st.integers(0, int(length.total_seconds() // 60) - 1)) if length >= timedelta(minutes=1) else 0
    )
    w = windows.OffPeakWindow(
        timezone=zone, days=frozenset(days), start=start, end=end, min_remaining=timedelta(minutes=minutes)
    )
    near_a_clock_change = draw(st.booleans())
    if near_a_clock_change and CLOCK_CHANGES[zone]:
        change = draw(st.sampled_from(CLOCK_CHANGES[zone]))
        return w, change + timedelta(seconds=draw(st.integers(-2 * 86400, 2 * 86400)))
    return w, draw(UNIFORM_NOW)


def test_the_property_tests_see_clock_changes() -> None:
    assert len(CLOCK_CHANGES["Europe/Berlin"]) == 2
    assert CLOCK_CHANGES["Europe/Berlin"][0] == utc(2025, 3, 30, 1, 0)
    assert len(CLOCK_CHANGES["Australia/Lord_Howe"]) == 2  # a 30-minute shift
    assert CLOCK_CHANGES["UTC"] == []


@settings(deadline=None, max_examples=150)
@given(case=cases())
def test_status_is_consistent_with_next_opening(case: tuple[windows.OffPeakWindow, datetime]) -> None:
    w, now = case
    status = windows.window_status(w, now)
    opening = windows.next_opening(w, now)
    assert opening >= now
    assert status.inside == (opening == now)
    assert status.opens_at < status.closes_at
    if status.inside:
        assert status.opens_at <= now < status.closes_at
        assert status.closes_at - now >= w.min_remaining
    else:
        assert status.opens_at == opening
        assert status.closes_at - opening >= w.min_remaining
        assert windows.window_status(w, opening).inside
        just_before = opening - timedelta(seconds=1)
        if just_before >= now:
            assert not windows.window_status(w, just_before).inside
        later_local = now.astimezone(ZoneInfo(w.timezone))
        assert windows.next_opening(w, later_local) == opening  # the zone of `now` does not matter


@settings(deadline=None, max_examples=60)
@given(case=cases())
def test_openings_fall_on_a_chosen_day_at_the_start_time(
    case: tuple[windows.OffPeakWindow, datetime],
) -> None:
    w, now = case
    status = windows.window_status(w, now)
    zone = ZoneInfo(w.timezone)
    local_open = status.opens_at.astimezone(zone)
    assert WEEKDAYS[local_open.weekday()] in w.days
    if local_open.time() != w.start:
        # only when the clock jumped over the start time that day: it opened at the jump
        assert local_open.time() > w.start
        skipped = datetime.combine(local_open.date(), w.start, tzinfo=zone)
        assert skipped.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != skipped.replace(tzinfo=None)
        just_before = (status.opens_at - timedelta(seconds=1)).astimezone(zone)
        assert just_before.replace(tzinfo=None) < skipped.replace(tzinfo=None)
