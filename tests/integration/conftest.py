"""The simulated cluster of the simulator's own integration tests: one factory, one copy.

`cluster` is module-scoped: every test module that asks for it gets a cluster of its own,
started in a state directory named after the module and always stopped after the module's last
test, so the faults a module injects never reach another module. A module that keeps a
`TIMINGS` (`guidetools.Timings`) gets its report printed once its cluster is down.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from etcdguard_sim import layout
from etcdguard_sim.runtime import control


@pytest.fixture(scope="module")
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[layout.SimSpec]:
    """A running simulated cluster (3 masters, 3 workers) for this test module alone."""
    module = request.module
    state_dir = tmp_path_factory.mktemp(module.__name__.rsplit(".", 1)[-1].removeprefix("test_"))
    try:
        yield control.up(state_dir)
    finally:
        control.down(state_dir)
        timings = getattr(module, "TIMINGS", None)
        if timings is not None:
            print("\n" + timings.report())
