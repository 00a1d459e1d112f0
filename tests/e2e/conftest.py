"""Fixtures for flows run through a real Prefect server (the test harness: a temporary server
with its own SQLite database) against the simulated cluster and its S3."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from etcdguard_sim import layout
from etcdguard_sim.seed import profiles
from prefect.testing.utilities import prefect_test_harness


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    with prefect_test_harness(server_startup_timeout=90):
        yield


@pytest.fixture
def profile_dir(sim: layout.SimSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`profiles/<cluster>.yaml` for the session's cluster, buckets created, ETCDGUARD_PROFILES set."""
    directory = tmp_path / "profiles"
    profiles.write_profile(sim, directory)
    monkeypatch.setenv("ETCDGUARD_PROFILES", str(directory))
    return directory
