"""The one declaration of how every etcdguard task meets failure: `@policy.task(...)`.

Every task gets, from here and nowhere else:
- retries on `TransientError` only (`errors.is_transient`): a permanent error, an unknown
  exception and a task timeout are never retried;
- backoff between retries: 5, 20, 60 s by default. `configure_backoff([...])` replaces them at run
  time (tests, a worker's start-up); otherwise `ETCDGUARD_RETRY_DELAYS` (comma-separated seconds,
  e.g. `0.5,1,2`) is read when a retry first needs a delay, not when a module is imported;
- a timeout (`timeout_s`, required): a side effect that hangs (a half-open SSH channel, a stuck
  API call) fails the task instead of holding the cluster's lock forever.

A wait that runs out (`tasks._wait.poll`) raises `PermanentError`: the wait already spent its
budget on the cluster, and retrying it would multiply the time an operator was promised.

Retry counts: `RETRIES` (3) for reads and for writes that check the current state first (safe to
repeat); `retries=0` only for a step that must not run twice on its own (`cluster-restore.sh`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ParamSpec, SupportsIndex, TypeVar, overload

from prefect import Task
from prefect.client.schemas.objects import State, TaskRun

from etcdguard.core import errors

__all__ = ["DEFAULT_BACKOFF", "RETRIES", "backoff", "configure_backoff", "retry_transient", "task"]

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_BACKOFF = (5.0, 20.0, 60.0)
RETRIES = 3
DELAYS_ENV = "ETCDGUARD_RETRY_DELAYS"


def parse_delays(text: str | None) -> list[float]:
    """Delays from `ETCDGUARD_RETRY_DELAYS`' text; the defaults when empty; `ConfigError` naming
    the variable when it is not a list of seconds >= 0."""
    if not text or not text.strip():
        return list(DEFAULT_BACKOFF)
    try:
        delays = [float(part) for part in text.split(",")]
    except ValueError:
        delays = []
    if not delays or any(d < 0 or d != d for d in delays):
        raise errors.ConfigError(
            f"{DELAYS_ENV}={text!r} is not a comma-separated list of seconds >= 0 (e.g. 5,20,60); fix or unset it."
        )
    return delays


class _Backoff(list[float]):
    """The delays every task shares. Prefect keeps the list object a task was declared with and
    indexes it when a retry is due, so changing this one list (in place) changes every task's
    delays; the environment is read at the first use, never at import."""

    def __init__(self) -> None:
        super().__init__(DEFAULT_BACKOFF)
        self._loaded = False

    def set(self, delays: Sequence[float]) -> None:
        super().__setitem__(slice(None), [float(d) for d in delays])
        self._loaded = True

    def _load(self) -> None:
        if not self._loaded:
            self.set(parse_delays(os.environ.get(DELAYS_ENV)))

    @overload
    def __getitem__(self, index: SupportsIndex) -> float: ...
    @overload
    def __getitem__(self, index: slice) -> list[float]: ...
    def __getitem__(self, index: SupportsIndex | slice) -> float | list[float]:
        self._load()
        return super().__getitem__(index)

    def __len__(self) -> int:
        self._load()
        return super().__len__()

    def __iter__(self) -> Iterator[float]:
        self._load()
        return super().__iter__()


backoff = _Backoff()


def configure_backoff(delays: Sequence[float]) -> None:
    """Replace the delays between retries of every task (seconds, each >= 0)."""
    if not delays or any(d < 0 for d in delays):
        raise errors.ConfigError(f"Retry delays {list(delays)!r} must be a non-empty list of seconds >= 0.")
    backoff.set(delays)


def retry_transient(task: Any, task_run: TaskRun, state: State[Any]) -> bool:
    """Prefect `retry_condition_fn`: retry only when the failure is an etcdguard TransientError."""
    try:
        state.result()
    except Exception as exc:  # the task's own exception, re-raised by result()
        return errors.is_transient(exc)
    return False


def task(name: str, *, timeout_s: float, retries: int = RETRIES) -> Callable[[Callable[P, R]], Task[P, R]]:
    """Declare a Prefect task with the house policy: `retries` on TransientError with the shared
    backoff, and `timeout_s` seconds before the attempt fails (not retried)."""
    if timeout_s <= 0:
        raise ValueError(f"Task {name!r}: timeout_s must be > 0 seconds, got {timeout_s}.")

    def declare(fn: Callable[P, R]) -> Task[P, R]:
        return Task(
            fn,
            name=name,
            retries=retries,
            retry_delay_seconds=backoff,
            retry_condition_fn=retry_transient,
            timeout_seconds=timeout_s,
        )

    return declare
