"""`etcdguard-sim`: run a simulated OpenShift 4.8 cluster on this machine.

    etcdguard-sim up     --state-dir DIR [--cluster-name demo] [--ocp-version 4.8.12] [--encryption aescbc]
    etcdguard-sim status --state-dir DIR
    etcdguard-sim down   --state-dir DIR

Exit codes: 0 done, 1 the simulator failed (the message says why and what to do), 2 bad usage.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from etcdguard_sim import control, layout

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="etcdguard-sim", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_ in (
        ("up", "start the simulated cluster in the background (idempotent)"),
        ("status", "show what runs and whether the API answers"),
        ("down", "stop every process of the simulated cluster"),
    ):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--state-dir", type=Path, required=True, help="where the cluster lives")
        if name == "up":
            p.add_argument("--cluster-name", default="demo")
            p.add_argument("--ocp-version", default="4.8.12")
            p.add_argument("--encryption", choices=["identity", "aescbc"], default=None)
    return parser


def _print_up(spec: layout.SimSpec) -> None:
    print(f"etcdguard-sim: cluster {spec.cluster_name} (OpenShift {spec.ocp_version}) is up")
    print(f"  API:        {spec.api_url}")
    print(f"  kubeconfig: {spec.kubeconfig}")
    print(f"  etcd:       {','.join(spec.etcd_endpoints())}")
    print(f"  logs:       {spec.logs_dir}")
    print(f"  try:        KUBECONFIG={spec.kubeconfig} kubectl get nodes")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "up":
            spec = control.up(
                args.state_dir,
                cluster_name=args.cluster_name,
                ocp_version=args.ocp_version,
                encryption=args.encryption,
            )
            _print_up(spec)
        elif args.command == "status":
            st = control.status(args.state_dir)
            print(f"supervisor: {'running, pid ' + str(st.supervisor_pid) if st.running else 'not running'}")
            for name, alive in sorted(st.children.items()):
                print(f"  {name}: {'running' if alive else 'stopped'}")
            print(f"API {st.api_url}: {'answers' if st.api_ok else 'does not answer'}")
            return 0 if st.running and st.api_ok else 1
        else:
            control.down(args.state_dir)
            print(f"etcdguard-sim: stopped the cluster in {args.state_dir}")
    except (control.SimError, FileNotFoundError) as exc:
        print(f"etcdguard-sim: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
