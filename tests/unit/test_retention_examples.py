"""The retention planner on hand-made catalogues: each keep-rule, cap and floor, calendar edge cases."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Literal

import pydantic
import pytest

from etcdguard.core import retention

pytestmark = pytest.mark.unit

GIB = 1024**3
NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)
# The cluster runs 4.9.0 and no backup is of it, so the z-stream rule keeps nothing unless asked.
ELSEWHERE = retention.ClusterContext(current_version="4.9.0")
ALL_OFF = {
    "keep_last": 0,
    "keep_hourly": 0,
    "keep_daily": 0,
    "keep_weekly": 0,
    "keep_monthly": 0,
    "keep_zstreams_within": dt.timedelta(0),
    "min_verified": 1,
}


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def backup(
    created: str | dt.datetime,
    *,
    name: str | None = None,
    version: str = "4.8.12",
    size: int = 1,
    verified: bool = False,
    drill: Literal["passed", "failed"] | None = None,
    pinned: bool = False,
    locked: bool = False,
    complete: bool = True,
) -> retention.BackupCandidate:
    when = at(created) if isinstance(created, str) else created
    return retention.BackupCandidate(
        backup_id=name or f"c1/{version}/{when.astimezone(dt.UTC):%Y-%m-%dT%H%M%SZ}",
        cluster="c1",
        ocp_version=version,
        created_at=when,
        size_bytes=size,
        verified=verified,
        drill=drill,
        pinned=pinned,
        locked=locked,
        complete=complete,
    )


def policy(**fields: object) -> retention.RetentionPolicy:
    return retention.RetentionPolicy.model_validate({**ALL_OFF, **fields})


def plan(
    backups: list[retention.BackupCandidate],
    rules: retention.RetentionPolicy,
    *,
    context: retention.ClusterContext = ELSEWHERE,
    now: dt.datetime = NOW,
) -> retention.RetentionPlan:
    return retention.plan_retention(backups, rules, context=context, now=now)


def reasons(decisions: tuple[retention.Decision, ...]) -> dict[str, tuple[str, ...]]:
    return {d.backup.backup_id: d.reasons for d in decisions}


def ago(**delta: float) -> dt.datetime:
    return NOW - dt.timedelta(**delta)


# -- keep-rules, one at a time (unverified backups, so the floor keeps nothing) -------------------


def test_keep_last_keeps_the_newest_n() -> None:
    backups = [backup(ago(days=d)) for d in (3, 1, 4, 2, 5)]
    result = plan(backups, policy(keep_last=2))
    assert [d.reasons for d in result.keep] == [("keep_last 1/2",), ("keep_last 2/2",)]
    assert [d.backup.created_at for d in result.keep] == [ago(days=1), ago(days=2)]
    assert [d.reasons for d in result.delete] == [("no keep-rule applies",)] * 3
    assert result.bytes_freed == 3


def test_order_comes_from_created_at_not_from_key_names() -> None:
    # Lexicographically "2025-1-9" sorts after "2025-1-10": etcd-operator #2113 deleted the newest so.
    nine = backup("2025-01-09T03:00:00+00:00", name="c1/4.8.12/2025-1-9")
    ten = backup("2025-01-10T03:00:00+00:00", name="c1/4.8.12/2025-1-10")
    eleven = backup("2025-01-11T03:00:00+00:00", name="c1/4.8.12/2025-1-11")
    for order in ([nine, ten, eleven], [eleven, nine, ten], [ten, eleven, nine]):
        result = plan(order, policy(keep_last=2))
        assert [d.backup.backup_id for d in result.keep] == ["c1/4.8.12/2025-1-11", "c1/4.8.12/2025-1-10"]
        assert [d.backup.backup_id for d in result.delete] == ["c1/4.8.12/2025-1-9"]


def test_equal_times_are_ordered_by_backup_id() -> None:
    same = "2025-05-01T00:00:00+00:00"
    result = plan(
        [backup(same, name="b"), backup(same, name="a"), backup(same, name="c")], policy(keep_last=1)
    )
    assert [d.backup.backup_id for d in result.keep] == ["a"]
    assert [d.backup.backup_id for d in result.delete] == ["b", "c"]


def test_keep_younger_than_keeps_everything_younger_and_nothing_at_the_limit() -> None:
    backups = [backup(ago(hours=h)) for h in (1, 35, 36, 50)]
    result = plan(backups, policy(keep_younger_than=dt.timedelta(hours=36)))
    assert [d.backup.created_at for d in result.keep] == [ago(hours=1), ago(hours=35)]
    assert {d.reasons for d in result.keep} == {("younger than 1d12h",)}
    assert [d.backup.created_at for d in result.delete] == [ago(hours=36), ago(hours=50)]


def test_pinned_backups_are_kept_whatever_their_age() -> None:
    old = backup(ago(days=400), pinned=True)
    result = plan([backup(ago(days=1)), old], policy(max_age=dt.timedelta(days=30)))
    assert reasons(result.keep) == {old.backup_id: ("pinned",)}
    assert result.floor_violations == (
        "Cluster c1 has no verified backup (min_verified is 1); take a backup and verify it.",
    )


def test_hourly_counts_the_repeated_dst_hour_twice() -> None:
    # 2025-10-26 in Berlin: 02:00-03:00 happens twice, first CEST (+02:00), then CET (+01:00).
    backups = [backup(f"2025-10-26T{t}:00+00:00") for t in ("00:10", "00:50", "01:10", "01:40")]
    result = plan(
        backups, policy(keep_hourly=2, timezone="Europe/Berlin"), now=at("2025-10-26T03:00:00+00:00")
    )
    assert [(d.backup.created_at.strftime("%H:%M"), d.reasons) for d in result.keep] == [
        ("01:40", ("hourly 2025-10-26 02:00+01:00 (Europe/Berlin)",)),
        ("00:50", ("hourly 2025-10-26 02:00+02:00 (Europe/Berlin)",)),
    ]


def test_daily_uses_local_days_across_spring_forward() -> None:
    # 2025-03-30 in Berlin has 23 hours; near midnight the UTC day and the local day differ.
    times = ("2025-03-29T22:30", "2025-03-29T23:30", "2025-03-30T21:30", "2025-03-30T22:30")
    backups = [backup(t + ":00+00:00") for t in times]
    now = at("2025-03-31T06:00:00+00:00")
    berlin = plan(backups, policy(keep_daily=3, timezone="Europe/Berlin"), now=now)
    assert [(d.backup.created_at.strftime("%dT%H:%M"), d.reasons) for d in berlin.keep] == [
        ("30T22:30", ("daily 2025-03-31 (Europe/Berlin)",)),  # 00:30 CEST on the 31st
        ("30T21:30", ("daily 2025-03-30 (Europe/Berlin)",)),  # 23:30 CEST on the 30th
        ("29T22:30", ("daily 2025-03-29 (Europe/Berlin)",)),  # 23:30 CET on the 29th
    ]
    assert [d.backup.created_at.strftime("%dT%H:%M") for d in berlin.delete] == ["29T23:30"]
    utc = plan(backups, policy(keep_daily=3), now=now)
    assert [(d.backup.created_at.strftime("%dT%H:%M"), d.reasons) for d in utc.keep] == [
        ("30T22:30", ("daily 2025-03-30 (UTC)",)),
        ("29T23:30", ("daily 2025-03-29 (UTC)",)),
    ]


def test_daily_uses_local_days_across_fall_back() -> None:
    # 2025-10-26 in Berlin has 25 hours: 22:30Z on the 25th and 22:30Z on the 26th are the same local day.
    times = ("2025-10-25T22:30", "2025-10-26T22:30", "2025-10-26T23:30")
    backups = [backup(t + ":00+00:00") for t in times]
    now = at("2025-10-27T06:00:00+00:00")
    berlin = plan(backups, policy(keep_daily=2, timezone="Europe/Berlin"), now=now)
    assert [d.backup.created_at.strftime("%dT%H:%M") for d in berlin.keep] == ["26T23:30", "26T22:30"]
    assert [d.reasons for d in berlin.keep] == [
        ("daily 2025-10-27 (Europe/Berlin)",),
        ("daily 2025-10-26 (Europe/Berlin)",),
    ]
    utc = plan(backups, policy(keep_daily=2), now=now)
    assert [d.backup.created_at.strftime("%dT%H:%M") for d in utc.keep] == ["26T23:30", "25T22:30"]


def test_a_bucket_keeps_its_newest_verified_backup_rather_than_its_newest() -> None:
    backups = [
        backup("2025-05-31T20:00:00+00:00"),
        backup("2025-05-31T10:00:00+00:00", verified=True),
        backup("2025-05-30T20:00:00+00:00"),
        backup("2025-05-30T10:00:00+00:00", verified=True),
        backup("2025-05-29T10:00:00+00:00"),  # a bucket with no verified backup keeps its newest
    ]
    result = plan(backups, policy(keep_daily=3))
    assert reasons(result.keep) == {
        "c1/4.8.12/2025-05-31T100000Z": ("newest verified", "daily 2025-05-31 (UTC)"),
        "c1/4.8.12/2025-05-30T100000Z": ("daily 2025-05-30 (UTC)",),
        "c1/4.8.12/2025-05-29T100000Z": ("daily 2025-05-29 (UTC)",),
    }


def test_weekly_uses_iso_weeks_across_the_year_boundary() -> None:
    # ISO week 1 of 2026 starts on Monday 2025-12-29.
    days = ("2025-12-28", "2025-12-29", "2026-01-02", "2026-01-05")
    backups = [backup(d + "T12:00:00+00:00") for d in days]
    result = plan(backups, policy(keep_weekly=3), now=at("2026-01-06T00:00:00+00:00"))
    assert [(d.backup.created_at.date().isoformat(), d.reasons) for d in result.keep] == [
        ("2026-01-05", ("weekly 2026-W02 (UTC)",)),
        ("2026-01-02", ("weekly 2026-W01 (UTC)",)),
        ("2025-12-28", ("weekly 2025-W52 (UTC)",)),
    ]
    assert [d.backup.created_at.date().isoformat() for d in result.delete] == ["2025-12-29"]


def test_monthly_across_january_31_and_a_leap_february() -> None:
    times = ("2024-01-31T22:30", "2024-01-31T23:30", "2024-02-29T12:00", "2024-02-29T23:30")
    backups = [backup(t + ":00+00:00") for t in times]
    now = at("2024-03-02T00:00:00+00:00")
    berlin = plan(backups, policy(keep_monthly=3, timezone="Europe/Berlin"), now=now)
    assert [(d.backup.created_at.strftime("%m-%dT%H:%M"), d.reasons) for d in berlin.keep] == [
        ("02-29T23:30", ("monthly 2024-03 (Europe/Berlin)",)),  # 00:30 on 1 March in Berlin
        ("02-29T12:00", ("monthly 2024-02 (Europe/Berlin)",)),
        ("01-31T22:30", ("monthly 2024-01 (Europe/Berlin)",)),
    ]
    assert [d.backup.created_at.strftime("%m-%dT%H:%M") for d in berlin.delete] == ["01-31T23:30"]
    utc = plan(backups, policy(keep_monthly=3), now=now)
    assert [d.backup.created_at.strftime("%m-%dT%H:%M") for d in utc.keep] == ["02-29T23:30", "01-31T23:30"]


def test_monthly_february_28_and_months_without_backups() -> None:
    # No backup in April: the rule keeps the 3 most recent months that have one.
    times = ("2025-02-28T23:30", "2025-02-27T12:00", "2025-03-15T12:00", "2025-05-01T12:00")
    backups = [backup(t + ":00+00:00") for t in times]
    result = plan(backups, policy(keep_monthly=3, timezone="Europe/Berlin"))
    assert [d.reasons for d in result.keep] == [
        ("monthly 2025-05 (Europe/Berlin)",),
        ("monthly 2025-03 (Europe/Berlin)",),  # 2025-02-28T23:30Z is 1 March in Berlin: newest of March
        ("monthly 2025-02 (Europe/Berlin)",),
    ]
    assert [d.backup.created_at.strftime("%m-%dT%H:%M") for d in result.keep] == [
        "05-01T12:00",
        "03-15T12:00",
        "02-27T12:00",
    ]


def test_zstreams_the_cluster_ran_within_the_window_keep_their_newest_backup() -> None:
    context = retention.ClusterContext(
        current_version="4.8.12",
        version_history=(("4.8.12", ago(days=5)), ("4.8.11", ago(days=40)), ("4.8.10", ago(days=100))),
    )
    backups = [
        backup(ago(days=1), version="4.8.12"),
        backup(ago(days=2), version="4.8.12"),
        backup(ago(days=6), version="4.8.11"),
        backup(ago(days=7), version="4.8.11", verified=True),  # verified wins over newer
        backup(ago(days=41), version="4.8.10"),  # 4.8.10 stopped running 40 days ago
    ]
    result = plan(
        backups, policy(keep_zstreams_within=dt.timedelta(days=30), min_verified=1), context=context
    )
    assert [(d.backup.ocp_version, d.reasons) for d in result.keep] == [
        ("4.8.12", ("newest of z-stream 4.8.12",)),
        ("4.8.11", ("newest verified", "newest of z-stream 4.8.11")),
    ]
    assert result.keep[1].backup.created_at == ago(days=7)
    wider = plan(backups, policy(keep_zstreams_within=dt.timedelta(days=45)), context=context)
    assert ("newest of z-stream 4.8.10",) in [d.reasons for d in wider.keep]


# -- caps -------------------------------------------------------------------------------------------


def test_max_age_removes_older_backups_the_rules_kept() -> None:
    backups = [backup(ago(days=d), verified=True) for d in (10, 50, 100, 200)]
    result = plan(backups, policy(keep_last=10, max_age=dt.timedelta(days=90)))
    assert [d.backup.created_at for d in result.keep] == [ago(days=10), ago(days=50)]
    assert [d.reasons for d in result.delete] == [
        ("max_age 90d exceeded", "cap overrides keep_last 3/10"),
        ("max_age 90d exceeded", "cap overrides keep_last 4/10"),
    ]
    assert result.floor_violations == ()


def test_max_age_never_removes_the_newest_verified_backup_and_says_so() -> None:
    old = backup(ago(days=100), verified=True)
    result = plan([backup(ago(days=1)), old], policy(keep_last=2, max_age=dt.timedelta(days=90)))
    assert old.backup_id in reasons(result.keep)
    assert result.floor_violations == (
        f"max_age 90d would delete {old.backup_id}, the newest verified backup; kept it.",
    )


def test_max_total_bytes_removes_the_oldest_first() -> None:
    sizes = [2, 2, 2, 7]  # newest first: the oversize backup is the oldest
    backups = [backup(ago(days=i + 1), size=s * GIB, verified=True) for i, s in enumerate(sizes)]
    result = plan(backups, policy(keep_last=4, max_total_bytes=10 * GIB))
    assert [d.backup.size_bytes for d in result.keep] == [2 * GIB] * 3
    assert [d.reasons for d in result.delete] == [
        ("max_total_bytes: 13.0 GiB over 10.0 GiB", "cap overrides keep_last 4/4"),
    ]
    assert result.bytes_freed == 7 * GIB


def test_one_oversize_new_backup_does_not_wipe_everything() -> None:
    # OpenShift's RetentionSize deleted every backup, the new one too, when one backup exceeded it.
    big = backup(ago(hours=1), size=15 * GIB, verified=True)
    small = [backup(ago(days=d), size=GIB, verified=True) for d in (1, 2, 3, 4, 5)]
    result = plan([big, *small], policy(keep_last=6, max_total_bytes=10 * GIB, min_verified=3))
    assert [d.backup for d in result.keep] == [big, small[0], small[1]]
    assert reasons(result.keep)[small[1].backup_id] == (
        "keep_last 3/6",
        "floor: verified 3/3",
        "floor overrides max_total_bytes: 17.0 GiB over 10.0 GiB",
    )
    assert result.delete[-1].reasons[0] == "max_total_bytes: 20.0 GiB over 10.0 GiB"
    assert result.floor_violations == (
        "The policy would leave 1 verified backup of cluster c1 where min_verified is 3; "
        f"kept back {small[0].backup_id}, {small[1].backup_id} instead of deleting them.",
        "The backups kept for cluster c1 hold 17.0 GiB, over max_total_bytes 10.0 GiB: "
        "pinned and floor-protected backups alone exceed it.",
    )


# -- floor ------------------------------------------------------------------------------------------


def test_floor_beats_caps_and_failed_drills_do_not_count() -> None:
    newest = backup(ago(days=40), verified=True)
    failed = backup(ago(days=45), verified=True, drill="failed")
    second = backup(ago(days=50), verified=True, drill="passed")
    oldest = backup(ago(days=60), verified=True)
    result = plan(
        [oldest, failed, second, newest], policy(keep_last=4, max_age=dt.timedelta(days=30), min_verified=2)
    )
    assert reasons(result.keep) == {
        newest.backup_id: ("newest verified", "keep_last 1/4"),
        second.backup_id: ("keep_last 3/4", "floor: verified 2/2", "floor overrides max_age 30d exceeded"),
    }
    assert [d.backup for d in result.delete] == [failed, oldest]
    assert (
        "The policy would leave 1 verified backup of cluster c1 where min_verified is 2; "
        f"kept back {second.backup_id} instead of deleting it."
    ) in result.floor_violations


def test_too_few_verified_backups_are_all_kept_and_reported() -> None:
    good = backup(ago(days=3), verified=True)
    result = plan([backup(ago(days=1)), good], policy(min_verified=3))
    assert reasons(result.keep) == {good.backup_id: ("newest verified",)}
    assert result.floor_violations == (
        "Cluster c1 has only 1 verified backup, fewer than min_verified 3; none of them is deleted.",
    )


def test_the_current_zstreams_only_backup_survives_the_caps() -> None:
    context = retention.ClusterContext(current_version="4.8.13", version_history=(("4.8.13", ago(days=80)),))
    only = backup(ago(days=70), version="4.8.13", size=5 * GIB)
    verified = backup(ago(days=1), version="4.8.12", verified=True)
    rules = policy(max_total_bytes=GIB, max_age=dt.timedelta(days=60))
    result = plan([verified, only], rules, context=context)
    assert reasons(result.keep) == {
        verified.backup_id: ("newest verified",),
        only.backup_id: ("newest of z-stream 4.8.13",),
    }
    assert any(only.backup_id in s and "z-stream 4.8.13" in s for s in result.floor_violations)


# -- locks, incomplete uploads ----------------------------------------------------------------------


def test_locked_backups_are_skipped_not_deleted() -> None:
    locked_old = backup(ago(days=9), locked=True, size=5)
    locked_kept = backup(ago(days=1), locked=True)
    plain_old = backup(ago(days=10), size=7)
    result = plan([plain_old, locked_old, locked_kept], policy(keep_last=1))
    assert [d.backup for d in result.keep] == [locked_kept]
    assert [(d.backup, d.reasons) for d in result.skipped_locked] == [
        (locked_old, ("no keep-rule applies", "locked: S3 Object Lock retention in force"))
    ]
    assert [d.backup for d in result.delete] == [plain_old]
    assert result.bytes_freed == 7


def test_incomplete_uploads_are_cleaned_up_after_the_grace_period() -> None:
    running = backup(ago(hours=5), complete=False, size=3)
    stale = backup(ago(hours=7), complete=False, size=4)
    stale_locked = backup(ago(hours=8), complete=False, locked=True)
    done = backup(ago(hours=9))
    result = plan([done, stale, running, stale_locked], policy(keep_last=1))
    assert reasons(result.keep) == {
        running.backup_id: ("upload in progress",),
        done.backup_id: ("keep_last 1/1",),
    }
    assert reasons(result.delete) == {stale.backup_id: ("incomplete upload older than 6h",)}
    assert [d.backup for d in result.skipped_locked] == [stale_locked]
    assert result.bytes_freed == 4


# -- input validation -------------------------------------------------------------------------------


def test_empty_catalogue_gives_an_empty_plan() -> None:
    assert plan([], policy()) == retention.RetentionPlan((), (), (), (), 0)


def test_one_cluster_at_a_time() -> None:
    other = dataclasses.replace(backup(ago(days=1)), cluster="c2", backup_id="c2/x")
    with pytest.raises(ValueError, match=r"clusters \['c1', 'c2'\]"):
        plan([backup(ago(days=2)), other], policy())


def test_duplicate_backup_ids_are_refused() -> None:
    with pytest.raises(ValueError, match="'dup' is listed more than once"):
        plan([backup(ago(days=1), name="dup"), backup(ago(days=2), name="dup")], policy())


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="has no time zone"):
        plan([backup(ago(days=1))], policy(), now=NOW.replace(tzinfo=None))
    with pytest.raises(ValueError, match=r"created_at .* has no time zone"):
        backup(NOW.replace(tzinfo=None))
    with pytest.raises(ValueError, match="newest first"):
        retention.ClusterContext(
            current_version="4.8.12", version_history=(("a", ago(days=2)), ("b", ago(days=1)))
        )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"timezone": "Europe/Berlinn"},
            "timezone 'Europe/Berlinn' is not an IANA time zone name; use one like",
        ),
        ({"keep_last": -1}, "keep_last\n  Input should be greater than or equal to 0"),
        ({"min_verified": 0}, "min_verified\n  Input should be greater than or equal to 1"),
        (
            {"incomplete_grace": "PT1M"},
            "incomplete_grace\n  Input should be greater than or equal to 15 minutes",
        ),
        ({"keep_younger_than": "P10D", "max_age": "P5D"}, "make keep_younger_than at most max_age"),
        ({"keep_forever": 1}, "keep_forever\n  Extra inputs are not permitted"),
    ],
)
def test_policy_validation_names_the_field_and_the_limit(fields: dict[str, object], message: str) -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        retention.RetentionPolicy.model_validate(fields)
    assert message in str(caught.value)


def test_policy_fields_are_documented() -> None:
    fields = retention.RetentionPolicy.model_fields
    assert all(info.description for info in fields.values())
    assert retention.RetentionPolicy.model_validate({"max_age": "P90D"}).max_age == dt.timedelta(days=90)
