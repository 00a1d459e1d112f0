"""Retry policy shared by every task: retry transient errors only, with backoff.

`ETCDGUARD_RETRY_DELAYS` (comma-separated seconds, e.g. `0.5,1,2`) replaces the default delays
between retries; tests set it so that a retried run does not wait minutes. Prefect reads the
delays when a task is decorated, so the variable must be set before `tasks` modules are imported.
"""

from __future__ import annotations

import os
from typing import Any

from prefect.client.schemas.objects import State, TaskRun

from etcdguard.core import errors

__all__ = ["BACKOFF", "retry_transient"]

_DEFAULT_BACKOFF = (5.0, 20.0, 60.0)


def _backoff(text: str | None) -> list[float]:
    if not text or not text.strip():
        return list(_DEFAULT_BACKOFF)
    try:
        delays = [float(part) for part in text.split(",")]
    except ValueError:
        delays = []
    if not delays or any(d < 0 or d != d for d in delays):
        raise ValueError(
            f"ETCDGUARD_RETRY_DELAYS={text!r} is not a comma-separated list of seconds >= 0 "
            "(e.g. 5,20,60); fix or unset it."
        )
    return delays


BACKOFF: list[float] = _backoff(os.environ.get("ETCDGUARD_RETRY_DELAYS"))


def retry_transient(task: Any, task_run: TaskRun, state: State[Any]) -> bool:
    """Prefect `retry_condition_fn`: retry only when the failure is an etcdguard TransientError."""
    try:
        state.result()
    except Exception as exc:  # the task's own exception, re-raised by result()
        return errors.is_transient(exc)
    return False
