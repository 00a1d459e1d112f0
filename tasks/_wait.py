"""Waiting for the cluster to get somewhere: poll with backoff, time out with what is not done."""

from __future__ import annotations

import time
from collections.abc import Callable

from prefect import get_run_logger

from etcdguard.core import errors

__all__ = ["poll"]


def poll(
    what: str,
    probe: Callable[[], tuple[bool, str]],
    *,
    timeout: float,
    rerun_hint: str,
    first: float = 1.0,
) -> str:
    """Call `probe` with backoff (`first`, x1.5, at most 5 s) until it says done; returns its last
    message. On timeout raise `PermanentError` saying what is still not done and `rerun_hint`.
    TransientErrors from `probe` count as not done. Progress is logged every 15 s."""
    logger = get_run_logger()
    deadline = time.monotonic() + timeout
    delay, last, logged = first, "nothing observed yet", time.monotonic()
    while True:
        try:
            done, last = probe()
        except errors.TransientError as exc:
            done, last = False, f"not answering ({exc})"
        if done:
            return last
        if time.monotonic() > deadline:
            raise errors.PermanentError(
                f"Timed out after {timeout:.0f} s waiting for {what}; still not done: {last}. Check the cluster, "
                f"then {rerun_hint}"
            )
        if time.monotonic() - logged > 15:
            logged = time.monotonic()
            logger.info("Waiting for %s: %s", what, last)
        time.sleep(delay)
        delay = min(delay * 1.5, 5.0)
