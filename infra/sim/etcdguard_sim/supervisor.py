"""The simulator's supervisor: one long-lived process per simulated cluster that owns every
other process (the etcd members, the API server) and stops them all when it is told to stop.

`etcdguard-sim up` starts it detached (`python -m etcdguard_sim.supervisor --state-dir DIR`);
`etcdguard-sim down` sends it SIGTERM. Children run in the supervisor's process group, each
with its log under `DIR/logs/`, and their pids are listed in `DIR/run/children.json` so that
`down` can clean up even after a supervisor crash.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from etcdguard_sim import layout

__all__ = ["etcd_command", "main"]


def etcd_command(spec: layout.SimSpec, node: layout.NodeSpec, *, state: str = "new") -> list[str]:
    """The command line of a node's etcd member, with TLS on client and peer URLs as in OpenShift."""
    serving_crt, serving_key = spec.etcd_cert(node, "serving")
    peer_crt, peer_key = spec.etcd_cert(node, "peer")
    return [
        "etcd",
        f"--name={node.name}",
        f"--data-dir={spec.etcd_data_dir(node)}",
        f"--listen-client-urls={node.etcd_client_url}",
        f"--advertise-client-urls={node.etcd_client_url}",
        f"--listen-peer-urls={node.etcd_peer_url}",
        f"--initial-advertise-peer-urls={node.etcd_peer_url}",
        f"--initial-cluster={spec.etcd_initial_cluster()}",
        f"--initial-cluster-token={spec.etcd_cluster_token}",
        f"--initial-cluster-state={state}",
        f"--cert-file={serving_crt}",
        f"--key-file={serving_key}",
        f"--trusted-ca-file={spec.etcd_ca}",
        "--client-cert-auth",
        f"--peer-cert-file={peer_crt}",
        f"--peer-key-file={peer_key}",
        f"--peer-trusted-ca-file={spec.etcd_ca}",
        "--peer-client-cert-auth",
        "--heartbeat-interval=100",
        "--election-timeout=1000",
        "--logger=zap",
        "--log-outputs=stderr",
    ]


class _Supervisor:
    def __init__(self, spec: layout.SimSpec) -> None:
        self.spec = spec
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.stopping = False

    def _spawn(self, name: str, argv: list[str]) -> None:
        self.spec.logs_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.spec.logs_dir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        self.children[name] = proc
        self._record()

    def _record(self) -> None:
        self.spec.run_dir.mkdir(parents=True, exist_ok=True)
        pids = {name: p.pid for name, p in self.children.items() if p.poll() is None}
        tmp = self.spec.run_dir / "children.json.tmp"
        tmp.write_text(json.dumps(pids))
        tmp.replace(self.spec.run_dir / "children.json")

    def start(self) -> None:
        for node in self.spec.masters:
            self.spec.etcd_data_dir(node).mkdir(parents=True, exist_ok=True)
            os.chmod(self.spec.etcd_data_dir(node), 0o700)
            self._spawn(f"etcd-{node.name}", etcd_command(self.spec, node))
        self._spawn(
            "kube-apiserver",
            [sys.executable, "-m", "etcdguard_sim.apiserver", "--state-dir", str(self.spec.state_dir)],
        )

    def stop(self) -> None:
        self.stopping = True
        # The API server first, then etcd, as a control plane shuts down.
        order = sorted(self.children, key=lambda n: 0 if n == "kube-apiserver" else 1)
        for name in order:
            proc = self.children[name]
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 10
        for name in order:
            proc = self.children[name]
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._record()

    def run(self) -> int:
        def on_term(signum: int, frame: FrameType | None) -> None:
            self.stopping = True

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        self.start()
        reported: set[str] = set()
        while not self.stopping:
            for name, proc in self.children.items():
                code = proc.poll()
                if code is not None and name not in reported:
                    reported.add(name)
                    print(f"supervisor: {name} exited with code {code}", flush=True)
                    self._record()
            time.sleep(0.2)
        self.stop()
        print("supervisor: stopped every process", flush=True)
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="etcdguard_sim.supervisor")
    parser.add_argument("--state-dir", required=True, type=Path)
    args = parser.parse_args(argv)
    spec = layout.SimSpec.load(args.state_dir)
    spec.run_dir.mkdir(parents=True, exist_ok=True)
    (spec.run_dir / "supervisor.pid").write_text(str(os.getpid()))
    try:
        return _Supervisor(spec).run()
    finally:
        (spec.run_dir / "supervisor.pid").unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
