"""`etcdguard-sim`: run a simulated OpenShift 4.8 cluster on this machine.

    etcdguard-sim up     --state-dir DIR [--cluster-name demo] [--ocp-version 4.8.12] [--encryption aescbc]
    etcdguard-sim status --state-dir DIR
    etcdguard-sim down   --state-dir DIR
    etcdguard-sim fault  NAME [--seconds N] [--count N] [--node NODE] --state-dir DIR

Faults (`faults.py`): s3-fail (--seconds and/or --count), s3-stall (--seconds), s3-clear,
ssh-cut, ssh-restore, ssh-drop (--node).

Exit codes: 0 done, 1 the simulator failed (the message says why and what to do), 2 bad usage.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from etcdguard_sim import layout
from etcdguard_sim.faults import services as faults
from etcdguard_sim.runtime import control

__all__ = ["FAULTS", "main"]


def _node(spec: layout.SimSpec, args: argparse.Namespace) -> str:
    if not args.node:
        names = ", ".join(n.name for n in spec.masters)
        raise control.SimError(f"this fault needs --node, one of: {names}")
    try:
        spec.node(args.node)
    except KeyError as exc:
        names = ", ".join(n.name for n in spec.masters)
        raise control.SimError(f"{exc.args[0]}; control-plane nodes: {names}") from None
    return str(args.node)


def _methods(args: argparse.Namespace) -> tuple[str, ...] | None:
    if args.methods is None:
        return None
    return tuple(m.strip() for m in str(args.methods).split(",") if m.strip())


def _s3_fail(spec: layout.SimSpec, args: argparse.Namespace) -> str:
    methods = _methods(args)
    faults.s3_fail(
        spec,
        seconds=args.seconds,
        count=args.count,
        status=args.status,
        methods=faults.S3_METHODS if methods is None else methods,
    )
    scope = " and ".join(
        x
        for x in (
            f"for {args.seconds:g} s" if args.seconds else "",
            f"{args.count} times" if args.count else "",
        )
        if x
    )
    return f"S3 answers {args.status} to {','.join(methods or faults.S3_METHODS)} requests {scope}"


def _s3_stall(spec: layout.SimSpec, args: argparse.Namespace) -> str:
    if args.seconds is None:
        raise control.SimError("s3-stall needs --seconds: how long to hold S3 requests")
    faults.s3_stall(spec, seconds=args.seconds, methods=_methods(args))
    return f"S3 holds requests for {args.seconds:g} s"


def _s3_clear(spec: layout.SimSpec, args: argparse.Namespace) -> str:
    faults.s3_clear(spec)
    return "S3 works normally"


def _ssh_cut(spec: layout.SimSpec, args: argparse.Namespace) -> str:
    node = _node(spec, args)
    faults.ssh_cut(spec, node)
    return f"SSH to {node} is cut (sessions closed, new connections refused)"


def _ssh_restore(spec: layout.SimSpec, args: argparse.Namespace) -> str:
    node = _node(spec, args)
    faults.ssh_restore(spec, node)
    return f"SSH to {node} accepts connections again"


def _ssh_drop(spec: layout.SimSpec, args: argparse.Namespace) -> str:
    node = _node(spec, args)
    killed = faults.ssh_drop(spec, node)
    return f"dropped the SSH sessions to {node} ({killed} sshd processes)"


# Fault name -> what injects it (and says what it did). Add new faults here.
FAULTS: dict[str, Callable[[layout.SimSpec, argparse.Namespace], str]] = {
    "s3-fail": _s3_fail,
    "s3-stall": _s3_stall,
    "s3-clear": _s3_clear,
    "ssh-cut": _ssh_cut,
    "ssh-restore": _ssh_restore,
    "ssh-drop": _ssh_drop,
}


def _cluster_fault(name: str) -> Callable[[layout.SimSpec, argparse.Namespace], str]:
    """A fault of `faults_cluster.FAULTS`, taking --node (and --name for delete-namespace)."""

    def inject(spec: layout.SimSpec, args: argparse.Namespace) -> str:
        from etcdguard_sim.faults import cluster as faults_cluster  # imports boto3; only for these faults

        kwargs: dict[str, object] = {}
        if name in _NEEDS_NODE:
            kwargs["node"] = _node(spec, args)
        if name == "delete-namespace" and args.object_name:
            kwargs["name"] = args.object_name
        result = faults_cluster.run_fault(spec, name, **kwargs)
        return f"{name} done" + (f": {result}" if result else "")

    return inject


_NEEDS_NODE = {"stop-machine", "start-machine", "node-not-ready", "node-ready", "node-unreachable",
               "node-reachable", "etcd-crashloop"}  # fmt: skip
for _name in (*sorted(_NEEDS_NODE), "lose-quorum", "regain-quorum", "delete-namespace", "expire-certs"):
    FAULTS[_name] = _cluster_fault(_name)


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
    p = sub.add_parser("fault", help="inject (or undo) a fault in the running cluster")
    p.add_argument("name", choices=sorted(FAULTS), help="the fault")
    p.add_argument("--state-dir", type=Path, required=True, help="where the cluster lives")
    p.add_argument("--seconds", type=float, default=None, help="how long the fault lasts")
    p.add_argument("--count", type=int, default=None, help="how many requests fail (s3-fail)")
    p.add_argument("--node", default=None, help="the control-plane node name (ssh-*)")
    p.add_argument("--status", type=int, default=503, help="the HTTP status S3 answers (s3-fail)")
    p.add_argument("--methods", default=None, help="comma-separated HTTP methods the S3 fault applies to")
    p.add_argument("--object-name", default=None, help="the namespace to delete (delete-namespace)")
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
        elif args.command == "fault":
            spec = layout.SimSpec.load(args.state_dir)
            print(f"etcdguard-sim: {FAULTS[args.name](spec, args)}")
        else:
            control.down(args.state_dir)
            print(f"etcdguard-sim: stopped the cluster in {args.state_dir}")
    except (control.SimError, FileNotFoundError, ValueError, RuntimeError, TimeoutError) as exc:
        print(f"etcdguard-sim: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
