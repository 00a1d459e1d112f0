"""Shared fixtures. The simulated cluster is started once per test session (about 5 s) in a
temporary state directory and always stopped at the end, even when tests fail."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from etcdguard_sim import layout
from etcdguard_sim.runtime import control

# Prefect keeps its state (SQLite, profiles) under PREFECT_HOME: give the test session its own,
# so a developer's ~/.prefect (or a concurrent run) is never touched. No telemetry: no internet.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="etcdguard-prefect-"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
# Tasks retry transient errors after 5, 20 and 60 s; tests that inject such errors would wait
# minutes. The delays are read when a retry first needs one (tasks/_policy.py), in this process and
# in the flow-run processes that served deployments start, which inherit the environment.
os.environ.setdefault("ETCDGUARD_RETRY_DELAYS", "0.5,1,2")


@pytest.fixture(scope="session")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[layout.SimSpec]:
    """A running simulated OpenShift 4.8.12 cluster (3 masters, 3 workers)."""
    state_dir: Path = tmp_path_factory.mktemp("sim")
    try:
        spec = control.up(state_dir)
        yield spec
    finally:
        control.down(state_dir)
