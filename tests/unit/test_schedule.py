"""The nightly schedule: cron at the window's start, in its zone, never inside a DST transition."""

from __future__ import annotations

from datetime import date, time

import pytest

from etcdguard.core import errors
from etcdguard.core.schedule import backup_schedule, unsafe_local_times
from etcdguard.core.windows import OffPeakWindow

pytestmark = pytest.mark.unit

TODAY = date(2026, 11, 26)


def window(zone: str, start: time, end: time, **extra: object) -> OffPeakWindow:
    return OffPeakWindow.model_validate({"timezone": zone, "start": start, "end": end, **extra})


def test_berlin_transition_hour_is_found() -> None:
    assert unsafe_local_times("Europe/Berlin", start=TODAY) == [(time(2), time(3))]


def test_new_york_has_a_skipped_and_a_repeated_hour() -> None:
    assert unsafe_local_times("America/New_York", start=TODAY) == [(time(1), time(2)), (time(2), time(3))]


def test_utc_has_no_transitions() -> None:
    assert unsafe_local_times("UTC", start=TODAY) == []


def test_plain_start_becomes_the_cron_in_the_windows_zone() -> None:
    plan = backup_schedule(window("Europe/Berlin", time(1, 15), time(4)), today=TODAY)
    assert (plan.cron, plan.timezone, plan.note) == ("15 1 * * *", "Europe/Berlin", None)


def test_days_become_cron_weekdays() -> None:
    plan = backup_schedule(window("UTC", time(22), time(4), days=["sat", "mon", "sun"]), today=TODAY)
    assert plan.cron == "0 22 * * 0,1,6"


def test_start_inside_the_transition_moves_after_it() -> None:
    plan = backup_schedule(window("Europe/Berlin", time(2, 30), time(5)), today=TODAY)
    assert plan.cron == "0 3 * * *"
    assert plan.note is not None
    assert "02:00-03:00" in plan.note


def test_new_york_fall_back_hour_moves_past_both_transitions() -> None:
    plan = backup_schedule(window("America/New_York", time(1, 30), time(5)), today=TODAY)
    assert plan.cron == "0 3 * * *"


def test_too_short_a_window_after_the_move_is_refused() -> None:
    with pytest.raises(errors.ConfigError, match=r"window\.start 02:00 .* too short"):
        backup_schedule(window("Europe/Berlin", time(2), time(3, 10)), today=TODAY)
