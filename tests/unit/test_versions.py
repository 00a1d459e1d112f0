"""Version parsing and ordering, ClusterVersion reading, and the same-z-stream restore rule."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from etcdguard.core import errors, versions

pytestmark = pytest.mark.unit


def clusterversion(
    *history: tuple[str, str],
    desired: str | None = None,
    progressing: str = "False",
    installed: str = "2021-06-01T10:00:00Z",
) -> dict[str, Any]:
    """A ClusterVersion as the API serves it; `history` newest first as (version, state)."""
    entries = [
        {
            "state": state,
            "version": version,
            "startedTime": f"2021-06-{20 - index:02d}T10:00:00Z",
            "completionTime": None if state == "Partial" else f"2021-06-{20 - index:02d}T11:00:00Z",
            "image": f"quay.io/openshift-release-dev/ocp-release@sha256:{index:064x}",
            "verified": False,
        }
        for index, (version, state) in enumerate(history)
    ]
    if entries:
        entries[-1]["startedTime"] = installed
    return {
        "apiVersion": "config.openshift.io/v1",
        "kind": "ClusterVersion",
        "metadata": {"name": "version"},
        "spec": {"clusterID": "2f1d3a64-5d0a-4b64-9f51-bd0f5a0f7d3c", "channel": "stable-4.8"},
        "status": {
            "desired": {"version": desired or (history[0][0] if history else "")},
            "history": entries,
            "conditions": [
                {"type": "Available", "status": "True", "message": "Done applying 4.8.12"},
                {
                    "type": "Progressing",
                    "status": progressing,
                    "message": "Working towards 4.8.13: 71% complete",
                },
            ],
        },
    }


def test_parse_version_examples() -> None:
    assert versions.parse_version("4.8.12") == (4, 8, 12, 3, 0)
    assert versions.parse_version("4.10.3") == versions.ParsedVersion(4, 10, 3, 3, 0)
    assert versions.parse_version("4.9.0-rc.2") == (4, 9, 0, 2, 2)
    assert versions.parse_version("4.9.0-fc.0") == (4, 9, 0, 1, 0)
    assert versions.parse_version("4.14.0-ec.1") == (4, 14, 0, 0, 1)


def test_versions_order_numerically_and_candidates_before_release() -> None:
    expected = ["4.8.2", "4.8.12", "4.9.0-ec.3", "4.9.0-fc.0", "4.9.0-rc.1", "4.9.0-rc.10", "4.9.0", "4.10.3"]
    shuffled = ["4.10.3", "4.9.0", "4.8.12", "4.9.0-rc.10", "4.9.0-fc.0", "4.8.2", "4.9.0-rc.1", "4.9.0-ec.3"]
    assert sorted(shuffled, key=versions.parse_version) == expected
    assert sorted(shuffled) != expected  # the reason parse_version exists


@pytest.mark.parametrize(
    "bad",
    [
        "4.8",
        "4.08.1",
        "v4.8.12",
        "4.8.12 ",
        "4.8.0-0.nightly-2021-06-25-190035",
        "4.9.0-rc",
        "4.9.0-beta.1",
        "",
    ],
)
def test_parse_version_refuses_other_strings(bad: str) -> None:
    with pytest.raises(ValueError, match="is not an OpenShift release version"):
        versions.parse_version(bad)


@given(
    parts=st.tuples(
        st.integers(0, 99_999),
        st.integers(0, 99_999),
        st.integers(0, 99_999),
        st.sampled_from([None, "ec", "fc", "rc"]),
        st.integers(0, 999),
    ),
    other=st.tuples(st.integers(0, 99_999), st.integers(0, 99_999), st.integers(0, 99_999)),
)
def test_parse_version_round_trips_and_orders_like_its_numbers(
    parts: tuple[int, int, int, str | None, int], other: tuple[int, int, int]
) -> None:
    major, minor, patch, stage, candidate = parts
    text = f"{major}.{minor}.{patch}" + (f"-{stage}.{candidate}" if stage else "")
    parsed = versions.parse_version(text)
    assert parsed[:3] == (major, minor, patch)
    assert versions.validate_version(text) == text
    release = versions.parse_version("{}.{}.{}".format(*other))
    if (major, minor, patch) != other:
        assert (parsed < release) == ((major, minor, patch) < other)
    elif stage:
        assert parsed < release


def test_current_zstream_is_the_first_completed_entry() -> None:
    cv = clusterversion(("4.8.13", "Partial"), ("4.8.12", "Completed"), ("4.8.11", "Completed"))
    assert versions.current_zstream(cv) == "4.8.12"


def test_current_zstream_without_completed_entry_refuses() -> None:
    with pytest.raises(errors.PreflightRefused, match="no Completed entry"):
        versions.current_zstream(clusterversion(("4.8.12", "Partial")))
    with pytest.raises(errors.PreflightRefused, match="no Completed entry"):
        versions.current_zstream({"metadata": {"name": "version"}})


def test_current_zstream_refuses_nightly_builds_with_the_version_named() -> None:
    cv = clusterversion(("4.8.0-0.nightly-2021-06-25-190035", "Completed"))
    with pytest.raises(errors.PreflightRefused, match=re.escape("4.8.0-0.nightly-2021-06-25-190035")):
        versions.current_zstream(cv)


def test_steady_cluster_is_not_upgrading() -> None:
    cv = clusterversion(("4.8.12", "Completed"), ("4.8.11", "Completed"))
    assert versions.upgrade_reason(cv) is None
    assert not versions.is_upgrading(cv)


def test_progressing_condition_means_upgrading() -> None:
    cv = clusterversion(("4.8.12", "Completed"), progressing="True")
    assert versions.is_upgrading(cv)
    reason = versions.upgrade_reason(cv)
    assert reason is not None
    assert "Progressing is True" in reason
    assert "Working towards 4.8.13: 71% complete" in reason


def test_partial_newest_entry_means_upgrading() -> None:
    cv = clusterversion(("4.8.13", "Partial"), ("4.8.12", "Completed"), desired="4.8.13")
    cv["status"]["desired"]["version"] = "4.8.12"  # even if desired already points back
    reason = versions.upgrade_reason(cv)
    assert reason is not None
    assert "4.8.13" in reason
    assert "Partial" in reason


def test_desired_ahead_of_current_means_upgrading() -> None:
    cv = clusterversion(("4.8.12", "Completed"), desired="4.8.13")
    assert versions.upgrade_reason(cv) == (
        "status.desired.version is 4.8.13 while the current z-stream is 4.8.12"
    )


def test_unfinished_installation_counts_as_upgrading() -> None:
    assert versions.is_upgrading(clusterversion())


def test_install_time_is_the_last_history_entry() -> None:
    cv = clusterversion(("4.8.12", "Completed"), ("4.8.2", "Completed"), installed="2021-05-03T08:15:30Z")
    assert versions.install_time(cv) == datetime(2021, 5, 3, 8, 15, 30, tzinfo=UTC)
    assert versions.install_time(cv).tzinfo is UTC


@pytest.mark.parametrize(
    ("installed", "message"),
    [(None, "no startedTime"), ("yesterday", "not an RFC 3339"), ("2021-05-03T08:15:30", "no time zone")],
)
def test_install_time_refuses_unreadable_history(installed: str | None, message: str) -> None:
    cv = clusterversion(("4.8.12", "Completed"))
    cv["status"]["history"][-1]["startedTime"] = installed
    with pytest.raises(errors.PreflightRefused, match=message):
        versions.install_time(cv)


def test_install_time_without_history_refuses() -> None:
    with pytest.raises(errors.PreflightRefused, match="no startedTime"):
        versions.install_time({"status": {}})


def test_same_zstream_may_restore() -> None:
    versions.may_restore("4.8.12", "4.8.12")  # returns without raising


@pytest.mark.parametrize(
    ("backup", "cluster"), [("4.8.11", "4.8.12"), ("4.8.13", "4.8.12"), ("4.9.0-rc.2", "4.9.0")]
)
def test_other_zstream_may_not_restore(backup: str, cluster: str) -> None:
    with pytest.raises(errors.VersionMismatch) as caught:
        versions.may_restore(backup, cluster)
    message = str(caught.value)
    assert message.startswith(f"The backup was taken on {backup} but the cluster runs {cluster}:")
    assert "only a backup of the same z-stream" in message
    assert f"Choose a backup taken on {cluster}" in message


def test_may_restore_refuses_malformed_versions_as_config_errors() -> None:
    with pytest.raises(errors.ConfigError, match="backup version is invalid"):
        versions.may_restore("4.8", "4.8.12")
    with pytest.raises(errors.ConfigError, match="cluster version is invalid"):
        versions.may_restore("4.8.12", "latest")
