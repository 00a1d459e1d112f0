"""Start, inspect and stop a simulated cluster: the stable contract behind `etcdguard-sim`.

    up(state_dir)      -> SimSpec   starts everything in the background, returns once the API
                                    answers and the cluster is seeded; idempotent
    status(state_dir)  -> Status    what runs and what answers
    down(state_dir)                 stops every process started for this state dir

A second `up` on a state directory that already holds a cluster restarts the same cluster
(same addresses, certificates and etcd data); a new state directory gets a new loopback /24.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as dt
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import yaml

from etcdguard_sim import layout, pki
from etcdguard_sim.api import client as apiclient
from etcdguard_sim.hosts import ns as hostns
from etcdguard_sim.hosts import ssh as sshsetup
from etcdguard_sim.runtime import cloud

__all__ = ["SimError", "Status", "down", "status", "up"]

CLAIMS_DIR = Path("/tmp/etcdguard-sim-claims")
UP_TIMEOUT = 60.0


class SimError(Exception):
    """A one-line, actionable reason why the simulator cannot do what was asked."""


@dataclasses.dataclass(frozen=True)
class Status:
    state_dir: Path
    supervisor_pid: int | None
    children: dict[str, bool]  # name -> alive
    api_ok: bool
    api_url: str

    @property
    def running(self) -> bool:
        return self.supervisor_pid is not None


# ---- helpers -----------------------------------------------------------------------------
def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not alive for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def _supervisor_pid(state_dir: Path) -> int | None:
    try:
        pid = int((state_dir / "run" / "supervisor.pid").read_text())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


@contextlib.contextmanager
def _claims_lock() -> Iterator[None]:
    CLAIMS_DIR.mkdir(parents=True, exist_ok=True)
    with open(CLAIMS_DIR / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _claim_prefix(state_dir: Path) -> str:
    """Pick a free 127.N.0.0/24 for a new cluster and record the claim."""
    with _claims_lock():
        for n in range(1, 250):
            prefix = f"127.{n}.0"
            claim = CLAIMS_DIR / prefix
            if claim.exists():
                owner = Path(claim.read_text().strip())
                if owner == state_dir or not (owner / "sim.json").exists():
                    claim.unlink()
                else:
                    continue
            addrs = [(f"{prefix}.{i}", p) for i in (1, 2, 3) for p in (2379, 2380)]
            addrs.append((f"{prefix}.100", layout.API_PORT))
            if all(_port_free(h, p) for h, p in addrs):
                claim.write_text(str(state_dir))
                return prefix
    raise SimError(
        "no free loopback /24 between 127.1.0.0 and 127.249.0.0: run `etcdguard-sim down` on old state dirs"
    )


def _release_prefix(spec: layout.SimSpec) -> None:
    with _claims_lock():
        claim = CLAIMS_DIR / spec.prefix
        if claim.exists() and Path(claim.read_text().strip()) == spec.state_dir:
            claim.unlink()


def write_kubeconfig(spec: layout.SimSpec) -> None:
    api_dir = spec.pki_dir / "api"

    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": spec.cluster_name,
                "cluster": {"server": spec.api_url, "certificate-authority-data": b64(spec.api_ca)},
            }
        ],
        "users": [
            {
                "name": "admin",
                "user": {
                    "client-certificate-data": b64(api_dir / "admin.crt"),
                    "client-key-data": b64(api_dir / "admin.key"),
                },
            }
        ],
        "contexts": [{"name": "admin", "context": {"cluster": spec.cluster_name, "user": "admin"}}],
        "current-context": "admin",
        "preferences": {},
    }
    spec.kubeconfig.write_text(yaml.safe_dump(cfg, sort_keys=False))
    spec.kubeconfig.chmod(0o600)


def _api_answers(spec: layout.SimSpec) -> bool:
    try:
        apiclient.ApiClient(spec, timeout=2).request("GET", "/version")
    except (OSError, apiclient.ApiError):
        return False
    return True


def _log_tail(spec: layout.SimSpec, lines: int = 15) -> str:
    out = []
    for log in sorted(spec.logs_dir.glob("*.log")):
        text = log.read_text(errors="replace").splitlines()[-lines:]
        out.append(f"--- {log.name}\n" + "\n".join(text))
    return "\n".join(out)


def _with_instances(spec: layout.SimSpec, instances: dict[str, str]) -> layout.SimSpec:
    nodes = tuple(dataclasses.replace(n, instance_id=instances[n.name]) for n in spec.nodes)
    spec = dataclasses.replace(spec, nodes=nodes)
    spec.save()
    return spec


def _seed(spec: layout.SimSpec) -> layout.SimSpec:
    from etcdguard_sim.seed import objects as seed  # the seed data is only needed on first start

    cloud.wait_ready(spec)
    spec = _with_instances(spec, cloud.create_instances(spec))
    client = apiclient.ApiClient(spec)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    encryption = cast("seed.Encryption | None", spec.encryption)
    for obj in seed.seed_objects(spec, now=now, encryption=encryption):
        try:
            client.create(obj)
        except apiclient.ApiError as exc:
            if exc.status != 409:  # a controller may have created it already (per-node secrets)
                raise
    (spec.state_dir / "seeded").write_text(now.isoformat() + "\n")
    return spec


def _reattach_instances(spec: layout.SimSpec) -> layout.SimSpec:
    """After a restart moto is empty: new instances, and the Machines and Nodes point at them."""
    cloud.wait_ready(spec)
    spec = _with_instances(spec, cloud.create_instances(spec))
    client = apiclient.ApiClient(spec)
    for node in spec.nodes:
        provider_id = f"aws:///{node.zone}/{node.instance_id}"
        with contextlib.suppress(apiclient.ApiError):
            path = client.path_for(
                "machine.openshift.io/v1beta1",
                "Machine",
                namespace="openshift-machine-api",
                name=node.machine_name,
            )
            client.request(
                "PATCH",
                path,
                {"spec": {"providerID": provider_id}},
                content_type="application/merge-patch+json",
            )
            client.request(
                "PATCH",
                path + "/status",
                {"status": {"providerStatus": {"instanceId": node.instance_id}}},
                content_type="application/merge-patch+json",
            )
        with contextlib.suppress(apiclient.ApiError):
            path = client.path_for("v1", "Node", namespace=None, name=node.name)
            client.request(
                "PATCH",
                path,
                {"spec": {"providerID": provider_id}},
                content_type="application/merge-patch+json",
            )
    return spec


def _prepare_hosts(spec: layout.SimSpec, *, first_boot: bool) -> None:
    from etcdguard_sim.hosts import fs as hostfs

    sshsetup.ensure_core_user()
    kubeconfig = spec.kubeconfig.read_bytes()
    for node in spec.masters:
        hostns.prepare_host_dirs(spec, node)
        if first_boot:
            hostfs.populate_host(
                spec,
                node,
                revisions=layout.INITIAL_REVISIONS,
                encryption=spec.encryption,
                api_kubeconfig=kubeconfig,
            )
        sshsetup.ensure_keys(spec, node)
    sshsetup.write_client_config(spec)
    cloud.write_env(spec)


# ---- the contract ------------------------------------------------------------------------
def up(
    state_dir: Path,
    *,
    cluster_name: str = "demo",
    ocp_version: str = "4.8.12",
    encryption: str | None = None,
    timeout: float = UP_TIMEOUT,
) -> layout.SimSpec:
    state_dir = Path(state_dir).resolve()
    for binary, package in (
        ("etcd", "etcd-server"),
        ("etcdctl", "etcd-client"),
        ("sshd", "openssh-server"),
        ("sudo", "sudo"),
        ("jq", "jq"),
        ("nsenter", "util-linux"),
    ):
        if shutil.which(binary, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None:
            raise SimError(f"`{binary}` is not installed: `apt-get install {package}` (or `make deps`)")
    if os.geteuid() != 0:
        raise SimError(
            "the simulated hosts need root (sshd on port 22, mount namespaces, user core): run as root"
        )
    if _supervisor_pid(state_dir) is not None:
        spec = layout.SimSpec.load(state_dir)
        if _api_answers(spec):
            return spec
        raise SimError(
            f"the simulator in {state_dir} is running but its API does not answer: see {spec.logs_dir}"
        )
    first_boot = not (state_dir / "sim.json").exists()
    if not first_boot:
        spec = layout.SimSpec.load(state_dir)
        busy = [
            f"{h}:{p}"
            for h, p in [(n.ip, 2379) for n in spec.masters] + [(spec.api_host, layout.API_PORT)]
            if not _port_free(h, p)
        ]
        if busy:
            raise SimError(
                f"{', '.join(busy)} already in use: stop what listens there, or use another --state-dir"
            )
    else:
        state_dir.mkdir(parents=True, exist_ok=True)
        prefix = _claim_prefix(state_dir)
        spec = layout.make_spec(
            state_dir=state_dir,
            prefix=prefix,
            cluster_name=cluster_name,
            ocp_version=ocp_version,
            encryption=encryption,
        )
        spec.save()
    pki.ensure_pki(spec)
    write_kubeconfig(spec)
    _prepare_hosts(spec, first_boot=first_boot)
    spec.logs_dir.mkdir(parents=True, exist_ok=True)
    with open(spec.logs_dir / "supervisor.log", "ab") as log:
        proc = _SUPERVISORS[state_dir] = subprocess.Popen(
            [sys.executable, "-m", "etcdguard_sim.runtime.supervisor", "--state-dir", str(state_dir)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while not _api_answers(spec):
        if proc.poll() is not None:
            raise SimError(
                f"the simulator's supervisor exited with code {proc.returncode}:\n{_log_tail(spec)}"
            )
        if time.monotonic() > deadline:
            down(state_dir)
            raise SimError(f"the API did not answer within {timeout:.0f} s:\n{_log_tail(spec)}")
        time.sleep(0.2)
    if not (state_dir / "seeded").exists():
        return _seed(spec)
    return _reattach_instances(spec)


def status(state_dir: Path) -> Status:
    state_dir = Path(state_dir).resolve()
    spec = layout.SimSpec.load(state_dir)
    pid = _supervisor_pid(state_dir)
    children: dict[str, bool] = {}
    with contextlib.suppress(OSError, ValueError):
        pids = json.loads((spec.run_dir / "children.json").read_text())
        children = {name: _alive(p) for name, p in pids.items()}
    return Status(
        state_dir=state_dir,
        supervisor_pid=pid,
        children=children,
        api_ok=pid is not None and _api_answers(spec),
        api_url=spec.api_url,
    )


# Supervisors started by this process: kept so that they are reaped (no zombie, no
# "subprocess still running" warning) when `down` runs in the same process, as in the tests.
_SUPERVISORS: dict[Path, subprocess.Popen[bytes]] = {}


def _running(pid: int, proc: subprocess.Popen[bytes] | None) -> bool:
    if proc is not None and proc.pid == pid:
        return proc.poll() is None
    return _alive(pid)


def down(state_dir: Path, *, timeout: float = 20.0) -> None:
    """Stop everything; safe to call when nothing runs."""
    state_dir = Path(state_dir).resolve()
    if not (state_dir / "sim.json").exists():
        return
    spec = layout.SimSpec.load(state_dir)
    pid = _supervisor_pid(state_dir)
    proc = _SUPERVISORS.pop(state_dir, None)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _running(pid, proc) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _running(pid, proc):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
    # Whatever a crashed supervisor left behind.
    with contextlib.suppress(OSError, ValueError):
        for child in json.loads((spec.run_dir / "children.json").read_text()).values():
            if _alive(child):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
    (spec.run_dir / "supervisor.pid").unlink(missing_ok=True)
    _release_prefix(spec)
