"""The simulator's supervisor: one long-lived process per simulated cluster that plays the
"hardware" and owns every process of it.

For each control-plane host it keeps the host's mount namespace (`hostns`), its sshd and its
kubelet (`kubelet.Kubelet`, whose static pods run the real etcd member). It also runs the S3/EC2
endpoint (moto's server, behind the fault-injecting `s3proxy`) and the API server, which answers only while at least one host runs a
kube-apiserver container and etcd has quorum, as behind a real load balancer.

Power: `DIR/run/power/<node>` holding `off` powers a host off (sshd and every container stop,
SSH is refused); removing it, or writing `on`, powers it on again. `DIR/run/ssh-cut/<node>`
stops only that host's sshd (established sessions die too; see `faults`). `etcdguard-sim down` sends SIGTERM: everything stops.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import FrameType

from etcdguard_sim import layout
from etcdguard_sim.faults import s3proxy
from etcdguard_sim.faults import services as faults
from etcdguard_sim.hosts import kubelet
from etcdguard_sim.hosts import ns as hostns
from etcdguard_sim.hosts import ssh as sshsetup

__all__ = ["etcd_command", "main"]

_TICK = 0.25
_QUORUM_CHECK_EVERY = 1.0
_QUORUM_GRACE = 5.0


def etcd_command(spec: layout.SimSpec, node: layout.NodeSpec, *, state: str = "new") -> list[str]:
    """A node's etcd member as a command run outside the hosts (TLS on client and peer URLs).

    The hosts run their member from the static pod manifest instead (`hostfs`); this stays for
    tests that need a bare etcd cluster with the simulator's names, addresses and certificates.
    """
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
    ]


class _Host:
    def __init__(self, spec: layout.SimSpec, node: layout.NodeSpec) -> None:
        self.spec = spec
        self.node = node
        self.holder: subprocess.Popen[bytes] | None = None
        self.sshd: subprocess.Popen[bytes] | None = None
        self.kubelet = kubelet.Kubelet(spec, node)
        self.powered = True

    def _flag(self, kind: str) -> str | None:
        try:
            return (self.spec.run_dir / kind / self.node.name).read_text().strip()
        except OSError:
            return None

    def start(self) -> None:
        self.holder = hostns.start_holder(self.spec, self.node)

    def sync(self) -> list[str]:
        assert self.holder is not None
        powered = self._flag("power") != "off"
        if not powered:
            if self.powered:
                print(f"supervisor: host {self.node.name} powers off", flush=True)
                self._stop_sshd()
                self.kubelet.stop_all()
            self.powered = False
            return []
        if not self.powered:
            print(f"supervisor: host {self.node.name} powers on", flush=True)
            self.kubelet = kubelet.Kubelet(self.spec, self.node)  # a fresh boot
        self.powered = True
        ssh_wanted = self._flag("ssh-cut") is None
        if ssh_wanted and (self.sshd is None or self.sshd.poll() is not None):
            self.spec.logs_dir.mkdir(parents=True, exist_ok=True)
            with open(self.spec.logs_dir / f"sshd-{self.node.name}.log", "ab") as log:
                self.sshd = subprocess.Popen(
                    hostns.enter_argv(self.holder.pid, sshsetup.sshd_argv()),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
        elif not ssh_wanted:
            self._stop_sshd()
        actions = self.kubelet.sync(holder_pid=self.holder.pid)
        if "shutdown" in actions:
            power_dir = self.spec.run_dir / "power"
            power_dir.mkdir(parents=True, exist_ok=True)
            (power_dir / self.node.name).write_text("off\n")
        return actions

    def _stop_sshd(self) -> None:
        if self.sshd is not None and self.sshd.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.sshd.pid, signal.SIGTERM)
            try:
                self.sshd.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.sshd.pid, signal.SIGKILL)
                self.sshd.wait()
        if self.sshd is not None and self.holder is not None:
            # Each connection's sshd runs in its own session: stopping the listener leaves them.
            faults.kill_ssh_sessions(self.holder.pid)
        self.sshd = None

    def stop(self) -> None:
        self._stop_sshd()
        self.kubelet.stop_all()
        hostns.stop_holder(self.spec, self.node)
        if self.holder is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.holder.wait(timeout=5)

    def pids(self) -> list[int]:
        out = [p.pid for p in (self.holder, self.sshd) if p is not None and p.poll() is None]
        for pod in self.kubelet.pods.values():
            out += [c.proc.pid for c in pod.containers if c.proc is not None and c.proc.poll() is None]
        return out


class _Supervisor:
    def __init__(self, spec: layout.SimSpec) -> None:
        self.spec = spec
        self.hosts = [_Host(spec, n) for n in spec.masters]
        self.api: subprocess.Popen[bytes] | None = None
        self.moto: subprocess.Popen[bytes] | None = None
        self.s3proxy: subprocess.Popen[bytes] | None = None
        self.controllers: subprocess.Popen[bytes] | None = None
        self._spec_mtime = 0.0
        self.stopping = False
        self._quorate = False
        self._quorum_checked = 0.0
        self._quorum_lost_at: float | None = None
        ctx = ssl.create_default_context(cafile=str(spec.etcd_ca))
        ctx.load_cert_chain(
            str(spec.pki_dir / "etcd" / "apiserver-etcd-client.crt"),
            str(spec.pki_dir / "etcd" / "apiserver-etcd-client.key"),
        )
        self._etcd_ctx = ctx

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        self.spec.logs_dir.mkdir(parents=True, exist_ok=True)
        with open(self.spec.logs_dir / f"{name}.log", "ab") as log:
            return subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )

    def _record(self) -> None:
        pids: dict[str, int] = {}
        for proc, name in (
            (self.api, "kube-apiserver"),
            (self.moto, "moto"),
            (self.s3proxy, "s3proxy"),
            (self.controllers, "controllers"),
        ):
            if proc is not None and proc.poll() is None:
                pids[name] = proc.pid
        for host in self.hosts:
            for i, pid in enumerate(host.pids()):
                pids[f"{host.node.name}#{i}"] = pid
        tmp = self.spec.run_dir / "children.json.tmp"
        tmp.write_text(json.dumps(pids))
        tmp.replace(self.spec.run_dir / "children.json")

    def _etcd_quorate(self) -> bool:
        for node in self.spec.masters:
            try:
                with urllib.request.urlopen(
                    f"{node.etcd_client_url}/health", context=self._etcd_ctx, timeout=0.5
                ) as resp:
                    if json.loads(resp.read()).get("health") == "true":
                        return True
            except (OSError, ValueError):
                continue
        return False

    def _sync_api(self) -> None:
        now = time.monotonic()
        if now - self._quorum_checked >= _QUORUM_CHECK_EVERY:
            self._quorum_checked = now
            quorate = self._etcd_quorate()
            if quorate:
                self._quorum_lost_at = None
                self._quorate = True
            elif self._quorum_lost_at is None:
                self._quorum_lost_at = now
            elif now - self._quorum_lost_at > _QUORUM_GRACE:
                self._quorate = False
        serving = any(h.powered and h.kubelet.running("kube-apiserver") for h in self.hosts)
        wanted = serving and self._quorate
        running = self.api is not None and self.api.poll() is None
        if wanted and not running:
            print("supervisor: starting the API server", flush=True)
            self.api = self._spawn(
                "kube-apiserver",
                [sys.executable, "-m", "etcdguard_sim.api.server", "--state-dir", str(self.spec.state_dir)],
            )
        elif running and not wanted:
            why = "etcd has no quorum" if serving else "no host runs a kube-apiserver"
            print(f"supervisor: stopping the API server: {why}", flush=True)
            self._terminate(self.api)
            self.api = None

    def _sync_hosts(self) -> None:
        """Machines come and go (the machine API adds a node to sim.json): follow the spec."""
        path = self.spec.state_dir / "sim.json"
        mtime = path.stat().st_mtime
        if mtime == self._spec_mtime:
            return
        self._spec_mtime = mtime
        self.spec = layout.SimSpec.load(self.spec.state_dir)
        wanted = {n.name: n for n in self.spec.masters}
        for host in [h for h in self.hosts if h.node.name not in wanted]:
            print(f"supervisor: host {host.node.name} is gone", flush=True)
            host.stop()
            self.hosts.remove(host)
        have = {h.node.name for h in self.hosts}
        for name, node in wanted.items():
            if name not in have:
                print(f"supervisor: new host {name}", flush=True)
                host = _Host(self.spec, node)
                host.start()
                self.hosts.append(host)

    @staticmethod
    def _terminate(proc: subprocess.Popen[bytes] | None) -> None:
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def run(self) -> int:
        def on_term(signum: int, frame: FrameType | None) -> None:
            self.stopping = True

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        self.moto = self._spawn("moto", s3proxy.moto_argv(self.spec))
        self.s3proxy = self._spawn("s3proxy", s3proxy.proxy_argv(self.spec))  # listens once moto does
        for host in self.hosts:
            host.start()
        self._spec_mtime = (self.spec.state_dir / "sim.json").stat().st_mtime
        last_record = ""
        while not self.stopping:
            self._sync_hosts()
            if self.controllers is None or self.controllers.poll() is not None:
                self.controllers = self._spawn(
                    "controllers",
                    [
                        sys.executable,
                        "-m",
                        "etcdguard_sim.controllers",
                        "--state-dir",
                        str(self.spec.state_dir),
                    ],
                )
            for host in self.hosts:
                host.sync()
            self._sync_api()
            snapshot = json.dumps(sorted(p for h in self.hosts for p in h.pids()))
            if snapshot != last_record:
                last_record = snapshot
                self._record()
            time.sleep(_TICK)
        self._terminate(self.controllers)
        self._terminate(self.api)
        for host in self.hosts:
            host.stop()
        self._terminate(self.s3proxy)
        self._terminate(self.moto)
        self._record()
        print("supervisor: stopped every process", flush=True)
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="etcdguard_sim.runtime.supervisor")
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
