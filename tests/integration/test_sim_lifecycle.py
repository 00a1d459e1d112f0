"""`etcdguard-sim up` twice in separate state dirs does not collide, and `down` leaves no
process, mount or listener behind."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from etcdguard_sim import layout
from etcdguard_sim.runtime import control

pytestmark = pytest.mark.integration


def _listeners(prefix: str) -> list[str]:
    out = subprocess.run(["ss", "-Hltn"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if f" {prefix}." in line]


def _processes(state_dir: Path) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if str(state_dir) in line and "ps -eo" not in line]


def _mounts(state_dir: Path) -> list[str]:
    return [line for line in Path("/proc/mounts").read_text().splitlines() if str(state_dir) in line]


def test_two_clusters_side_by_side_then_nothing_left(sim: layout.SimSpec, tmp_path: Path) -> None:
    other_dir = tmp_path / "other"
    try:
        other = control.up(other_dir)
        assert other.prefix != sim.prefix
        assert _listeners(other.prefix), "the second cluster listens on its own loopback /24"
        state = control.status(other_dir)
        assert state.running
        assert state.api_ok
    finally:
        control.down(other_dir)
    assert _listeners(other.prefix) == []
    assert _processes(other_dir) == []
    assert _mounts(other_dir) == []
    # The session's cluster was not disturbed.
    assert _listeners(sim.prefix)
