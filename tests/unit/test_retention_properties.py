"""Invariants of the retention planner, checked with hypothesis over random catalogues and policies."""

from __future__ import annotations

import datetime as dt
import random
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etcdguard.core import retention

pytestmark = pytest.mark.unit

UTC = dt.UTC
# Zones with DST, a half-hour offset, a half-hour DST shift and a southern-hemisphere DST.
ZONES = (
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Asia/Kolkata",
    "Australia/Lord_Howe",
    "America/Santiago",
)
# Moments near DST changes and a year boundary, so buckets straddle them.
NOWS = (
    dt.datetime(2025, 3, 31, 12, 0, tzinfo=UTC),
    dt.datetime(2025, 10, 27, 1, 30, tzinfo=UTC),
    dt.datetime(2026, 1, 1, 0, 30, tzinfo=UTC),
    dt.datetime(2024, 3, 1, 0, 0, tzinfo=UTC),
)
VERSIONS = ("4.8.10", "4.8.11", "4.8.12", "4.8.13")
SETTINGS = settings(max_examples=200, deadline=None)


@st.composite
def catalogues(draw: st.DrawFn) -> tuple[list[retention.BackupCandidate], dt.datetime]:
    now = draw(st.sampled_from(NOWS))
    count = draw(st.integers(min_value=0, max_value=24))
    backups = []
    for number in range(count):
        # Half-hour steps over ~100 days, a little in the future too; collisions give equal times.
        steps = draw(st.integers(min_value=-2, max_value=48 * 100))
        zone = draw(st.sampled_from(("UTC", "Europe/Berlin", "Asia/Tokyo")))
        created = (now - dt.timedelta(minutes=30 * steps)).astimezone(UTC)
        if zone != "UTC":
            created = created.astimezone(ZoneInfo(zone))
        backups.append(
            retention.BackupCandidate(
                backup_id=f"c1/{draw(st.sampled_from(VERSIONS))}/b{number}",
                cluster="c1",
                ocp_version=draw(st.sampled_from(VERSIONS)),
                created_at=created,
                size_bytes=draw(st.integers(min_value=0, max_value=40)),
                verified=draw(st.booleans()),
                drill=draw(st.sampled_from((None, "passed", "failed"))),
                pinned=draw(st.integers(0, 7)) == 0,
                locked=draw(st.integers(0, 4)) == 0,
                complete=draw(st.integers(0, 6)) != 0,
            )
        )
    return backups, now


@st.composite
def policies(draw: st.DrawFn) -> retention.RetentionPolicy:
    small = st.integers(min_value=0, max_value=4)
    hours = st.integers(min_value=1, max_value=24 * 120).map(lambda h: dt.timedelta(hours=h))
    young = draw(st.none() | st.integers(1, 96).map(lambda h: dt.timedelta(hours=h)))
    max_age = draw(st.none() | hours)
    if young is not None and max_age is not None and young > max_age:
        young, max_age = max_age, young
    return retention.RetentionPolicy(
        keep_last=draw(small),
        keep_hourly=draw(small),
        keep_daily=draw(small),
        keep_weekly=draw(small),
        keep_monthly=draw(small),
        timezone=draw(st.sampled_from(ZONES)),
        keep_younger_than=young,
        keep_zstreams_within=dt.timedelta(days=draw(st.integers(0, 60))),
        max_age=max_age,
        max_total_bytes=draw(st.none() | st.integers(min_value=1, max_value=150)),
        min_verified=draw(st.integers(min_value=1, max_value=5)),
        incomplete_grace=dt.timedelta(minutes=draw(st.integers(15, 24 * 60))),
    )


@st.composite
def contexts(draw: st.DrawFn, now: dt.datetime) -> retention.ClusterContext:
    versions = draw(st.lists(st.sampled_from(VERSIONS), min_size=1, max_size=4, unique=True))
    ages = sorted(draw(st.lists(st.integers(1, 24 * 90), min_size=len(versions), max_size=len(versions))))
    history = tuple((v, now - dt.timedelta(hours=age)) for v, age in zip(versions, ages, strict=True))
    return retention.ClusterContext(current_version=versions[0], version_history=history)


Scenario = tuple[
    list[retention.BackupCandidate], retention.RetentionPolicy, retention.ClusterContext, dt.datetime
]


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    backups, now = draw(catalogues())
    return backups, draw(policies()), draw(contexts(now)), now


def plan(
    backups: list[retention.BackupCandidate],
    policy: retention.RetentionPolicy,
    context: retention.ClusterContext,
    now: dt.datetime,
) -> retention.RetentionPlan:
    return retention.plan_retention(backups, policy, context=context, now=now)


def ids(decisions: tuple[retention.Decision, ...]) -> set[str]:
    return {d.backup.backup_id for d in decisions}


@SETTINGS
@given(scenarios())
def test_every_backup_lands_in_exactly_one_list_newest_first(scenario: Scenario) -> None:
    backups, policy, context, now = scenario
    result = plan(backups, policy, context, now)
    lists = (result.keep, result.delete, result.skipped_locked)
    assert sum(len(x) for x in lists) == len(backups)
    assert set.union(*(ids(x) for x in lists)) == {b.backup_id for b in backups}
    for decisions in lists:
        keys = [(-d.backup.created_at.timestamp(), d.backup.backup_id) for d in decisions]
        assert keys == sorted(keys)
        assert all(d.reasons for d in decisions)
    assert result.bytes_freed == sum(d.backup.size_bytes for d in result.delete)


@SETTINGS
@given(scenarios())
def test_floor_holds_when_enough_verified_backups_exist(scenario: Scenario) -> None:
    backups, policy, context, now = scenario
    result = plan(backups, policy, context, now)
    available = sum(b.counts_as_verified for b in backups)
    kept = sum(d.backup.counts_as_verified for d in result.keep)
    assert kept >= min(policy.min_verified, available)
    if available < policy.min_verified:
        assert kept == available
    if backups and available < policy.min_verified:  # an empty catalogue names no cluster to report
        assert any("verified backup" in s and "min_verified" in s for s in result.floor_violations)


@SETTINGS
@given(scenarios())
def test_newest_verified_pinned_and_current_zstream_survive(scenario: Scenario) -> None:
    backups, policy, context, now = scenario
    result = plan(backups, policy, context, now)
    kept = ids(result.keep)
    good = [b for b in backups if b.counts_as_verified]
    if good:  # newest first, equal times by backup_id: the planner's order
        newest = min(good, key=lambda b: (-b.created_at.timestamp(), b.backup_id))
        assert newest.backup_id in kept
    assert {b.backup_id for b in backups if b.pinned} <= kept
    current = [b for b in backups if b.complete and b.ocp_version == context.current_version]
    if current:
        assert any(b.backup_id in kept for b in current)


@SETTINGS
@given(scenarios())
def test_locked_backups_are_never_deleted(scenario: Scenario) -> None:
    backups, policy, context, now = scenario
    result = plan(backups, policy, context, now)
    assert not any(d.backup.locked for d in result.delete)
    assert all(d.backup.locked for d in result.skipped_locked)


@SETTINGS
@given(scenarios(), st.randoms(use_true_random=False))
def test_plan_does_not_depend_on_input_order(scenario: Scenario, rng: random.Random) -> None:
    backups, policy, context, now = scenario
    shuffled = list(backups)
    rng.shuffle(shuffled)
    assert plan(shuffled, policy, context, now) == plan(backups, policy, context, now)


@SETTINGS
@given(scenarios())
def test_applying_the_plan_twice_deletes_nothing_more(scenario: Scenario) -> None:
    backups, policy, context, now = scenario
    first = plan(backups, policy, context, now)
    remaining = [d.backup for d in (*first.keep, *first.skipped_locked)]
    second = plan(remaining, policy, context, now)
    assert second.delete == ()
    # A locked backup skipped the first time may now be kept (it took the place of a deleted one).
    assert ids(first.keep) <= ids(second.keep)


@SETTINGS
@given(scenarios())
def test_floor_keeps_back_and_reports_instead_of_deleting(scenario: Scenario) -> None:
    backups, policy, context, now = scenario
    result = plan(backups, policy, context, now)
    held = [d for d in result.keep if any(r.startswith("floor: verified") for r in d.reasons)]
    for decision in held:
        assert decision.backup.counts_as_verified
        assert any(decision.backup.backup_id in s for s in result.floor_violations)
    without_floor = [d for d in result.keep if d not in held]
    if held:
        assert sum(d.backup.counts_as_verified for d in without_floor) < policy.min_verified
