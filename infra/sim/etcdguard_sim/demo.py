"""`make demo` (until the backup flow lands): start the simulated cluster and show how to reach it."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from etcdguard_sim import cli, control

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="etcdguard_sim.demo")
    parser.add_argument("--state-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        spec = control.up(args.state_dir)
    except control.SimError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    cli._print_up(spec)
    env = {**os.environ, "KUBECONFIG": str(spec.kubeconfig)}
    for cmd in (["kubectl", "get", "nodes"], ["kubectl", "get", "clusterversion"]):
        print("\n$ " + " ".join(cmd), flush=True)
        subprocess.run(cmd, env=env, check=False)
    print(f"\nStop it with: make sim-down  (or etcdguard-sim down --state-dir {args.state_dir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
