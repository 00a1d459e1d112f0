"""Retention policies as files: `default` is built in; a bad file is refused with the field named,
before the flow reads or deletes anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from etcdguard.core import errors, retention
from flows.retention import load_policy

pytestmark = pytest.mark.unit


def test_default_is_built_in(tmp_path: Path) -> None:
    assert load_policy("default", directory=tmp_path) == retention.RetentionPolicy()


def test_a_policy_file_is_read(tmp_path: Path) -> None:
    (tmp_path / "retention").mkdir()
    (tmp_path / "retention" / "nightly.yaml").write_text(
        "keep_last: 5\nkeep_daily: 10\ntimezone: Europe/Berlin\n"
    )
    policy = load_policy("nightly", directory=tmp_path)
    assert (policy.keep_last, policy.keep_daily, policy.timezone) == (5, 10, "Europe/Berlin")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("keep_last: -2\n", "keep_last"),
        ("timezone: Mars/Olympus\n", "timezone 'Mars/Olympus' is not an IANA time zone name"),
        ("max_age: P1D\nkeep_younger_than: P7D\n", "make keep_younger_than at most max_age"),
        ("keep_last: [1\n", "is invalid"),
    ],
)
def test_a_bad_policy_is_refused_naming_the_field(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "retention").mkdir()
    (tmp_path / "retention" / "bad.yaml").write_text(text)
    with pytest.raises(errors.ConfigError, match=r"Retention policy .*bad\.yaml is invalid") as caught:
        load_policy("bad", directory=tmp_path)
    assert message in str(caught.value)


def test_an_unknown_policy_says_where_to_put_it(tmp_path: Path) -> None:
    with pytest.raises(
        errors.ConfigError, match=r"Retention policy 'weekly' not found: create .*retention/weekly\.yaml"
    ):
        load_policy("weekly", directory=tmp_path)
