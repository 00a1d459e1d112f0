"""The S3 key layout: examples, refusals, round trip, and ordering by time."""

from __future__ import annotations

import dataclasses
import itertools
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from etcdguard.core import keys, types

pytestmark = pytest.mark.unit

TAKEN = datetime(2021, 6, 25, 19, 0, 35, tzinfo=UTC)


def key(**changes: object) -> keys.BackupKey:
    fields: dict[str, object] = {
        "prefix": "etcd-backups",
        "cluster": types.ClusterName("prod-east"),
        "ocp_version": types.OcpVersion("4.8.12"),
        "taken_at": TAKEN,
        "kind": "snapshot",
        "compressed": False,
    }
    fields.update(changes)
    return keys.BackupKey(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("backup_key", "text"),
    [
        (key(), "etcd-backups/prod-east/4.8.12/2021-06-25T190035Z/snapshot_2021-06-25_190035.db"),
        (
            key(compressed=True),
            "etcd-backups/prod-east/4.8.12/2021-06-25T190035Z/snapshot_2021-06-25_190035.db.zst",
        ),
        (key(kind="manifest"), "etcd-backups/prod-east/4.8.12/2021-06-25T190035Z/manifest.json"),
        (
            key(prefix="keys/ocp", kind="static_resources"),
            "keys/ocp/prod-east/4.8.12/2021-06-25T190035Z/static_kuberesources_2021-06-25_190035.tar.gz",
        ),
        (
            key(prefix="", ocp_version="4.10.3"),
            "prod-east/4.10.3/2021-06-25T190035Z/snapshot_2021-06-25_190035.db",
        ),
        (
            key(ocp_version="4.9.0-rc.2", kind="manifest"),
            "etcd-backups/prod-east/4.9.0-rc.2/2021-06-25T190035Z/manifest.json",
        ),
    ],
)
def test_format_and_parse_examples(backup_key: keys.BackupKey, text: str) -> None:
    assert keys.format_key(backup_key) == text
    assert keys.parse_key(text) == backup_key


def test_datestring_and_backup_id() -> None:
    assert key().datestring == "2021-06-25_190035"
    assert key().backup_id == "prod-east/4.8.12/2021-06-25T190035Z"
    assert key(kind="manifest").backup_id == key(compressed=True).backup_id


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("snapshot_2021-06-25_190035.db", "fewer than four"),
        ("p/prod/4.8.12/2021-06-25T19:00:35Z/manifest.json", "timestamp directory"),
        ("p/prod/4.8.12/2021-02-30T190035Z/manifest.json", "not a valid date"),
        ("p/prod/4.8.12/2021-06-25T190035Z/snapshot_2021-06-25_190036.db", "differs from its directory"),
        ("p/prod/4.8.12/2021-06-25T190035Z/snapshot_2021-06-25_190035__POSSIBLY_DIRTY__.db", "file name"),
        ("p/prod/4.8.12/2021-06-25T190035Z/static_kuberesources_2021-06-25_190035.tar.gz.zst", "file name"),
        ("p/prod/4.8.12/2021-06-25T190035Z/manifest.json.zst", "file name"),
        ("p/Prod/4.8.12/2021-06-25T190035Z/manifest.json", "DNS-1123"),
        ("p/prod/4.8/2021-06-25T190035Z/manifest.json", "not an OpenShift release version"),
        ("/prod/4.8.12/2021-06-25T190035Z/manifest.json", "empty segment"),
        ("a//prod/4.8.12/2021-06-25T190035Z/manifest.json", "empty segment"),
        ("a/../prod/4.8.12/2021-06-25T190035Z/manifest.json", "is not usable"),
        ("a b/prod/4.8.12/2021-06-25T190035Z/manifest.json", "is not usable"),
    ],
)
def test_parse_key_refuses_anything_else(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match="is not an etcdguard backup object") as caught:
        keys.parse_key(text)
    assert problem in str(caught.value)


def test_taken_at_must_be_aware_and_whole_seconds() -> None:
    with pytest.raises(ValueError, match="naive"):
        key(taken_at=datetime(2021, 6, 25, 19, 0, 35))
    with pytest.raises(ValueError, match=r"replace\(microsecond=0\)"):
        key(taken_at=TAKEN + timedelta(microseconds=5))


def test_taken_at_is_normalised_to_utc() -> None:
    berlin_summer = timezone(timedelta(hours=2))
    local = key(taken_at=datetime(2021, 6, 25, 21, 0, 35, tzinfo=berlin_summer))
    assert local.taken_at.tzinfo is UTC
    assert local == key()
    assert keys.format_key(local) == keys.format_key(key())


def test_only_snapshots_can_be_compressed() -> None:
    with pytest.raises(ValueError, match=r"only the snapshot gets '\.zst'"):
        key(kind="manifest", compressed=True)
    with pytest.raises(ValueError, match="kind 'backup' is unknown"):
        key(kind="backup")


def test_backup_key_validates_its_parts() -> None:
    with pytest.raises(ValueError, match="DNS-1123"):
        key(cluster="prod_east")
    with pytest.raises(ValueError, match="not an OpenShift release version"):
        key(ocp_version="4.8")
    with pytest.raises(ValueError, match="is not usable"):
        key(prefix="backups/")
    with pytest.raises(dataclasses.FrozenInstanceError):
        key().kind = "manifest"  # type: ignore[misc]


def test_backup_prefix_levels_end_with_a_slash() -> None:
    assert keys.backup_prefix(prefix="etcd", cluster="prod") == "etcd/prod/"
    assert keys.backup_prefix(prefix="", cluster="prod", ocp_version="4.8.12") == "prod/4.8.12/"
    assert (
        keys.backup_prefix(prefix="etcd", cluster="prod", ocp_version="4.8.12", taken_at=TAKEN)
        == "etcd/prod/4.8.12/2021-06-25T190035Z/"
    )
    other_cluster = keys.format_key(key(cluster="prod-2"))
    assert not other_cluster.startswith(keys.backup_prefix(prefix="etcd-backups", cluster="prod"))


def test_backup_prefix_needs_version_for_a_time() -> None:
    with pytest.raises(ValueError, match="pass both"):
        keys.backup_prefix(prefix="etcd", cluster="prod", taken_at=TAKEN)


def test_sort_by_time_is_not_lexicographic() -> None:
    older = key(ocp_version="4.10.3", taken_at=datetime(2022, 3, 1, tzinfo=UTC))
    newer = key(ocp_version="4.9.0", taken_at=datetime(2022, 3, 2, tzinfo=UTC))
    newest = key(ocp_version="4.10.3", taken_at=datetime(2022, 3, 3, tzinfo=UTC))
    shuffled = [newest, older, newer]
    assert keys.sort_by_time(shuffled) == [older, newer, newest]
    assert keys.sort_by_time(shuffled, newest_first=True) == [newest, newer, older]
    lexicographic = sorted(shuffled, key=keys.format_key)
    assert lexicographic != [older, newer, newest]


def test_sort_by_time_breaks_ties_by_version_then_kind() -> None:
    manifest = key(kind="manifest", ocp_version="4.10.3")
    snapshot = key(ocp_version="4.10.3")
    earlier_version = key(kind="manifest", ocp_version="4.9.0")
    assert keys.sort_by_time([manifest, snapshot, earlier_version]) == [earlier_version, snapshot, manifest]


SEGMENT = st.from_regex(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,11}", fullmatch=True).filter(
    lambda s: s not in {".", ".."}
)
CLUSTER = st.from_regex(r"[a-z0-9](?:[-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True)
VERSION = st.builds(
    lambda major, minor, patch, stage, candidate: (
        f"{major}.{minor}.{patch}" + (f"-{stage}.{candidate}" if stage else "")
    ),
    st.integers(0, 20),
    st.integers(0, 30),
    st.integers(0, 300),
    st.sampled_from([None, "ec", "fc", "rc"]),
    st.integers(0, 20),
)
KIND_AND_COMPRESSION = st.sampled_from(
    [("snapshot", False), ("snapshot", True), ("manifest", False), ("static_resources", False)]
)
MOMENT = st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59), timezones=st.just(UTC)
).map(lambda moment: moment.replace(microsecond=0))

BACKUP_KEYS = st.builds(
    lambda prefix, cluster, version, taken_at, kind: keys.BackupKey(
        prefix="/".join(prefix),
        cluster=types.ClusterName(cluster),
        ocp_version=types.OcpVersion(version),
        taken_at=taken_at,
        kind=kind[0],
        compressed=kind[1],
    ),
    st.lists(SEGMENT, max_size=3),
    CLUSTER,
    VERSION,
    MOMENT,
    KIND_AND_COMPRESSION,
)


@given(backup_key=BACKUP_KEYS)
def test_round_trip(backup_key: keys.BackupKey) -> None:
    text = keys.format_key(backup_key)
    assert keys.parse_key(text) == backup_key
    assert keys.format_key(keys.parse_key(text)) == text
    assert text.startswith(
        keys.backup_prefix(
            prefix=backup_key.prefix,
            cluster=backup_key.cluster,
            ocp_version=backup_key.ocp_version,
            taken_at=backup_key.taken_at,
        )
    )


@given(backup_keys=st.lists(BACKUP_KEYS, max_size=20))
def test_sort_by_time_orders_by_instant(backup_keys: list[keys.BackupKey]) -> None:
    ordered = keys.sort_by_time(backup_keys)
    assert sorted(map(keys.format_key, ordered)) == sorted(map(keys.format_key, backup_keys))
    assert all(a.taken_at <= b.taken_at for a, b in itertools.pairwise(ordered))
    assert keys.sort_by_time(backup_keys, newest_first=True) == ordered[::-1]
