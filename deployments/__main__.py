"""`python -m deployments apply|serve [--profiles DIR]`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from prefect import serve

from deployments.build import build_all
from etcdguard.core import errors, profile


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deployments")
    parser.add_argument("command", choices=["apply", "serve"])
    parser.add_argument(
        "--profiles", type=Path, default=None, help="default: $ETCDGUARD_PROFILES or ./profiles"
    )
    args = parser.parse_args(argv)
    try:
        built = build_all(args.profiles or profile.profiles_dir())
    except errors.EtcdguardError as exc:
        print(f"deployments: {exc}", file=sys.stderr)
        return 2
    if args.command == "serve":
        serve(*built)
        return 0
    for deployment in built:
        deployment_id = deployment.apply()
        print(f"{deployment.flow_name}/{deployment.name}: {deployment_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
