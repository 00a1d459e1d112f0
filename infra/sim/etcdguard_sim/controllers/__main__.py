"""`python -m etcdguard_sim.controllers --state-dir DIR`: run every controller, about once a second."""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import time
import traceback
from pathlib import Path
from types import FrameType, ModuleType

from etcdguard_sim import layout
from etcdguard_sim.api import client as apiclient
from etcdguard_sim.controllers import context

# Module names under etcdguard_sim.controllers, in the order they run each pass. A module that
# does not exist yet is skipped with one message, so controllers can land one at a time.
CONTROLLERS = ("machines", "nodes", "csrs", "etcd_operator", "static_pods", "cluster_operators")
_TICK = 1.0
_stopping = False


def _load() -> list[ModuleType]:
    loaded = []
    for name in CONTROLLERS:
        try:
            loaded.append(importlib.import_module(f"etcdguard_sim.controllers.{name}"))
        except ModuleNotFoundError as exc:
            if exc.name != f"etcdguard_sim.controllers.{name}":
                raise
            print(f"controllers: {name} is not built yet, skipped", flush=True)
    return loaded


def main(argv: list[str] | None = None) -> int:
    global _stopping
    parser = argparse.ArgumentParser(prog="etcdguard_sim.controllers")
    parser.add_argument("--state-dir", required=True, type=Path)
    args = parser.parse_args(argv)

    def on_term(signum: int, frame: FrameType | None) -> None:
        global _stopping
        _stopping = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    modules = _load()
    memory: dict[str, dict[str, object]] = {m.__name__: {} for m in modules}
    while not _stopping:
        if not (args.state_dir / "seeded").exists():
            # `up` is still creating the seed objects (POST, then PUT of the status): a
            # controller writing in between would make those PUTs conflict.
            time.sleep(_TICK)
            continue
        spec = layout.SimSpec.load(args.state_dir)
        api = apiclient.ApiClient(spec, timeout=5)
        for module in modules:
            ctx = context.Context(spec=spec, api=api, memory=memory[module.__name__])
            try:
                module.reconcile(ctx)
            except (OSError, apiclient.ApiError) as exc:
                # The API or etcd is down (an outage the cluster is in): try again next pass.
                print(f"controllers: {module.__name__.rsplit('.', 1)[1]}: {exc}", flush=True)
            except Exception:
                traceback.print_exc()
        time.sleep(_TICK)
    return 0


if __name__ == "__main__":
    sys.exit(main())
