"""The one task declaration: every task of etcdguard retries TransientError only, with the shared
backoff, and has a timeout."""

from __future__ import annotations

import importlib
import pkgutil

import pytest
from prefect import Task

import flows
import tasks
from etcdguard.core import errors
from tasks import _policy

pytestmark = pytest.mark.unit


def _all_tasks() -> list[tuple[str, Task[..., object]]]:
    found = []
    for package in (tasks, flows):
        for info in pkgutil.iter_modules(package.__path__):
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            for name, value in vars(module).items():
                if isinstance(value, Task) and value.fn.__module__ == module.__name__:
                    found.append((f"{module.__name__}.{name}", value))
    return found


def test_every_task_comes_from_the_one_declaration() -> None:
    found = _all_tasks()
    assert len(found) > 40
    for where, declared in found:
        assert declared.retry_delay_seconds is _policy.backoff, where
        assert declared.retry_condition_fn is _policy.retry_transient, where
        assert declared.timeout_seconds is not None, where
        assert declared.timeout_seconds > 0, where
        assert declared.retries in (0, 1, _policy.RETRIES), where


def test_delays_are_read_at_first_use_not_at_import(monkeypatch: pytest.MonkeyPatch) -> None:
    backoff = _policy._Backoff()
    monkeypatch.setenv(_policy.DELAYS_ENV, "0.25,4")
    assert list(backoff) == [0.25, 4.0]
    assert backoff[5 if len(backoff) > 5 else -1] == 4.0


def test_configure_changes_every_task_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    before = list(_policy.backoff)
    try:
        _policy.configure_backoff([1.0, 2.0])
        for _, declared in _all_tasks():
            assert list(declared.retry_delay_seconds) == [1.0, 2.0]  # type: ignore[arg-type]
    finally:
        _policy.configure_backoff(before)


@pytest.mark.parametrize("text", ["x", "1,,2", "-1", "nan", "1;2"])
def test_bad_delays_name_the_variable(text: str) -> None:
    with pytest.raises(errors.ConfigError, match=_policy.DELAYS_ENV):
        _policy.parse_delays(text)


def test_empty_delays_are_the_defaults() -> None:
    assert _policy.parse_delays("  ") == list(_policy.DEFAULT_BACKOFF)
    with pytest.raises(errors.ConfigError, match="non-empty"):
        _policy.configure_backoff([])


def test_a_task_without_timeout_cannot_be_declared() -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        _policy.task("x", timeout_s=0)
