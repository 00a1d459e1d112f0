"""Retry policy shared by every task: retry transient errors only, with backoff."""

from __future__ import annotations

from typing import Any

from prefect.client.schemas.objects import State, TaskRun

from etcdguard import errors

__all__ = ["BACKOFF", "retry_transient"]

BACKOFF: list[float] = [5.0, 20.0, 60.0]


def retry_transient(task: Any, task_run: TaskRun, state: State[Any]) -> bool:
    """Prefect `retry_condition_fn`: retry only when the failure is an etcdguard TransientError."""
    try:
        state.result()
    except Exception as exc:  # the task's own exception, re-raised by result()
        return errors.is_transient(exc)
    return False
