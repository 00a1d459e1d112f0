"""Cluster faults of a running simulated cluster: the outages of the guide's sections 4.2 and 4.3.

Each function takes the cluster's spec (re-read from `DIR/sim.json`, since machines come and go)
and, where it matters, a node name. It returns once the cause is in force (the instance is
stopped, the kubelet is stopped, the etcd member has crashed on its corrupt WAL...); the
symptoms then follow through the simulator's controllers within seconds, as on a cluster:

    stop_machine(spec, node)      EC2 StopInstances on the node's instance, as an outage or a
                                  console stop would: the host powers off, the Machine shows
                                  `stopped`, the Node goes `Unknown` with the `unreachable` taints
                                  after 5 s, its etcd member is unhealthy
    start_machine(spec, node)     EC2 StartInstances: the host boots and everything comes back
    node_not_ready(spec, node)    `DIR/run/notready/<node>`: Ready False (KubeletNotReady, PLEG),
                                  the `not-ready` taints; the machine keeps running
    node_ready(spec, node)        removes that file
    node_unreachable(spec, node)  `systemctl stop kubelet` on a control-plane host: the kubelet
                                  stops posting status while the machine keeps running, so the
                                  node shows the `unreachable` taints (guide 4.2.3 step 2, the
                                  "machine running, node unreachable" case). Containers keep
                                  running, as when a real kubelet stops, so etcd stays healthy.
                                  Powering the host off instead would stop its EC2 instance too
                                  (the machine API makes the instance follow the host), which is
                                  `stop_machine`.
    node_reachable(spec, node)    `systemctl start kubelet`
    etcd_crashloop(spec, node)    overwrites the frame header of every WAL file of the member
                                  (`/var/lib/etcd/member/wal/*.wal`, inside the host) and stops
                                  the running etcd: each restart fails with "wal: max entry size
                                  limit exceeded" (exit 1), so the pod shows Error /
                                  CrashLoopBackOff with a growing restart count and the member is
                                  unhealthy. Only the guide's 4.2.4.2 procedure repairs it.
    lose_quorum(spec)             stops the EC2 instances of two control-plane hosts (by default
                                  every master but the first, which stays as a recovery host):
                                  etcd loses quorum and the API refuses connections
    regain_quorum(spec)           starts every stopped control-plane instance again
    delete_critical_object(spec, kind="namespace", name="shop")
                                  DELETE through the API, as an admin's mistake; a namespace
                                  takes its contents with it. Only a restore brings it back.
    expire_certificates(spec)     `DIR/run/certs-expired/<node>` for every node, then each
                                  kubelet restarts (masters: `systemctl restart kubelet` on the
                                  host; workers: a reboot, their power file rewritten): nodes go
                                  NotReady and file node-bootstrapper CSRs that only an admin
                                  approves (guide 4.3.3)

`FAULTS` names them for `etcdguard-sim fault <name>`; `run_fault(spec, name, **kwargs)` runs one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from etcdguard_sim import layout
from etcdguard_sim.api import client as apiclient
from etcdguard_sim.hosts import ns as hostns
from etcdguard_sim.runtime import cloud

__all__ = [
    "FAULTS",
    "delete_critical_object",
    "etcd_crashloop",
    "expire_certificates",
    "lose_quorum",
    "node_not_ready",
    "node_reachable",
    "node_ready",
    "node_unreachable",
    "regain_quorum",
    "run_fault",
    "start_machine",
    "stop_machine",
]

_WAIT = 20.0
# A WAL frame length of 0x00ffffffffffffff (little-endian): etcd 3.4 refuses it on start with
# "wal: max entry size limit exceeded" and exits 1, every time.
_BAD_FRAME = r"\377\377\377\377\377\377\377\000"
# Namespaced kinds are deleted in `namespace` (default "default").
_KINDS: dict[str, tuple[str, str]] = {
    "namespace": ("v1", "Namespace"),
    "secret": ("v1", "Secret"),
    "configmap": ("v1", "ConfigMap"),
    "persistentvolumeclaim": ("v1", "PersistentVolumeClaim"),
    "deployment": ("apps/v1", "Deployment"),
}


# ---- helpers ----------------------------------------------------------------------------------
def _fresh(spec: layout.SimSpec) -> layout.SimSpec:
    return layout.SimSpec.load(spec.state_dir)


def _node(spec: layout.SimSpec, node: str) -> layout.NodeSpec:
    try:
        return spec.node(node)
    except KeyError:
        names = ", ".join(n.name for n in spec.nodes)
        raise ValueError(f"no node named {node!r} in the simulated cluster: use one of {names}") from None


def _master(spec: layout.SimSpec, node: str, what: str) -> layout.NodeSpec:
    found = _node(spec, node)
    if found.role != "master":
        masters = ", ".join(n.name for n in spec.masters)
        raise ValueError(
            f"{what} needs a control-plane host, and {node} is a {found.role}: use one of {masters}"
        )
    return found


def _wait(what: str, check: Callable[[], bool], *, timeout: float = _WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout:.0f} s: see the simulator's logs")
        time.sleep(0.2)


def _in_host(spec: layout.SimSpec, node: layout.NodeSpec, script: str) -> str:
    """Run `script` with /bin/sh as root on the host; returns its stdout."""
    pid = hostns.holder_pid(spec, node)
    if pid is None:
        raise RuntimeError(
            f"host {node.name} is not running (no namespace holder): start the cluster with "
            f"`etcdguard-sim up --state-dir {spec.state_dir}`"
        )
    proc = subprocess.run(
        hostns.enter_argv(pid, ["/bin/sh", "-c", script]),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"`{script}` failed on host {node.name} with exit code {proc.returncode}: {proc.stderr.strip()}"
        )
    return proc.stdout


def _instance_state(ec2: Any, instance_id: str) -> str:
    desc = ec2.describe_instances(InstanceIds=[instance_id])
    return str(desc["Reservations"][0]["Instances"][0]["State"]["Name"])


def _powered(spec: layout.SimSpec, node: layout.NodeSpec) -> bool:
    try:
        return (spec.run_dir / "power" / node.name).read_text().strip() != "off"
    except OSError:
        return True


# ---- machines ---------------------------------------------------------------------------------
def stop_machine(spec: layout.SimSpec, node: str) -> None:
    """Stop the node's EC2 instance; returns once EC2 reports it `stopped`."""
    spec = _fresh(spec)
    target = _node(spec, node)
    ec2 = cloud.ec2_client(spec)
    ec2.stop_instances(InstanceIds=[target.instance_id])
    _wait(
        f"instance {target.instance_id} of {node} stopping",
        lambda: _instance_state(ec2, target.instance_id) == "stopped",
    )


def start_machine(spec: layout.SimSpec, node: str) -> None:
    """Start the node's EC2 instance; returns once EC2 reports it `running`."""
    spec = _fresh(spec)
    target = _node(spec, node)
    ec2 = cloud.ec2_client(spec)
    ec2.start_instances(InstanceIds=[target.instance_id])
    _wait(
        f"instance {target.instance_id} of {node} starting",
        lambda: _instance_state(ec2, target.instance_id) == "running",
    )


def lose_quorum(spec: layout.SimSpec, *, nodes: Sequence[str] | None = None) -> list[str]:
    """Stop the instances of a majority of control-plane hosts (default: all but the first
    master); returns their names. The API refuses connections about 5-10 s later."""
    spec = _fresh(spec)
    names = list(nodes) if nodes is not None else [n.name for n in spec.masters[1:]]
    masters = [_master(spec, name, "lose_quorum") for name in dict.fromkeys(names)]
    needed = len(spec.masters) - len(spec.masters) // 2  # what leaves at most half of the members
    if len(masters) < needed:
        raise ValueError(
            f"stopping {len(masters)} of {len(spec.masters)} control-plane hosts leaves etcd its quorum: "
            f"name at least {needed}"
        )
    for master in masters:
        stop_machine(spec, master.name)
    return [m.name for m in masters]


def regain_quorum(spec: layout.SimSpec) -> list[str]:
    """Start every stopped control-plane instance again; returns their node names."""
    spec = _fresh(spec)
    ec2 = cloud.ec2_client(spec)
    started = [n.name for n in spec.masters if _instance_state(ec2, n.instance_id) == "stopped"]
    for name in started:
        start_machine(spec, name)
    return started


# ---- nodes ------------------------------------------------------------------------------------
def _notready_file(spec: layout.SimSpec, node: layout.NodeSpec) -> Path:
    return spec.run_dir / "notready" / node.name


def node_not_ready(spec: layout.SimSpec, node: str) -> None:
    """The node reports Ready False (its machine keeps running)."""
    spec = _fresh(spec)
    path = _notready_file(spec, _node(spec, node))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("PLEG is not healthy\n")


def node_ready(spec: layout.SimSpec, node: str) -> None:
    """Undo `node_not_ready`."""
    spec = _fresh(spec)
    _notready_file(spec, _node(spec, node)).unlink(missing_ok=True)


def node_unreachable(spec: layout.SimSpec, node: str) -> None:
    """Stop the kubelet of a control-plane host (see the module docstring for why not power)."""
    spec = _fresh(spec)
    _in_host(spec, _master(spec, node, "node_unreachable"), "/usr/local/bin/systemctl stop kubelet")


def node_reachable(spec: layout.SimSpec, node: str) -> None:
    """Start the kubelet of a control-plane host again (no CSR: its certificates are valid)."""
    spec = _fresh(spec)
    _in_host(spec, _master(spec, node, "node_reachable"), "/usr/local/bin/systemctl start kubelet")


# ---- etcd -------------------------------------------------------------------------------------
def _etcd_pids(node: layout.NodeSpec) -> list[int]:
    """The etcd processes serving the node's client URL (the member of its static pod)."""
    wanted = f"--listen-client-urls={node.etcd_client_url}"
    out = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            argv = Path(entry.path, "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) == b"etcd" and wanted.encode() in argv:
            out.append(int(entry.name))
    return out


def etcd_crashloop(spec: layout.SimSpec, node: str) -> None:
    """Corrupt the member's WAL and stop its etcd; returns once the new etcd processes fail."""
    spec = _fresh(spec)
    master = _master(spec, node, "etcd_crashloop")
    script = (
        'set -eu; found=0; for f in /var/lib/etcd/member/wal/*.wal; do [ -f "$f" ] || continue; '
        f"printf '{_BAD_FRAME}' | dd of=\"$f\" bs=8 count=1 conv=notrunc status=none; found=1; done; "
        'echo "$found"'
    )
    if _in_host(spec, master, script).strip() != "1":
        raise RuntimeError(
            f"{node} has no WAL under /var/lib/etcd/member/wal: its etcd member has no data to corrupt"
        )
    for pid in _etcd_pids(master):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
    # The kubelet restarts etcd within half a second; each start must now fail at once.
    _wait(f"the etcd of {node} to stop", lambda: not _etcd_pids(master))


# ---- the API ----------------------------------------------------------------------------------
def delete_critical_object(
    spec: layout.SimSpec, *, kind: str = "namespace", name: str = "shop", namespace: str = "default"
) -> dict[str, Any]:
    """DELETE one object through the API (a namespace takes everything in it); returns the
    object as it was just before."""
    spec = _fresh(spec)
    try:
        api_version, api_kind = _KINDS[kind.lower()]
    except KeyError:
        raise ValueError(f"kind {kind!r} is not supported: use one of {', '.join(_KINDS)}") from None
    client = apiclient.ApiClient(spec)
    path = client.path_for(api_version, api_kind, namespace=namespace, name=name)
    try:
        before: dict[str, Any] = client.request("GET", path)
    except apiclient.ApiError as exc:
        if exc.status == 404:
            raise ValueError(f"{kind} {name!r} does not exist, so there is nothing to delete") from None
        raise
    client.request("DELETE", path)
    return before


# ---- certificates -----------------------------------------------------------------------------
def expire_certificates(spec: layout.SimSpec, *, nodes: Sequence[str] | None = None) -> list[str]:
    """Expire the kubelet certificates of `nodes` (default: every node) and restart their
    kubelets; returns the node names. A powered-off host asks for a certificate when it boots."""
    spec = _fresh(spec)
    targets = [_node(spec, n) for n in nodes] if nodes is not None else list(spec.nodes)
    fault_dir = spec.run_dir / "certs-expired"
    fault_dir.mkdir(parents=True, exist_ok=True)
    for target in targets:
        (fault_dir / target.name).write_text("")
    # The kubelet asks for a certificate only when it starts strictly after the expiry.
    time.sleep(1.1)
    power_dir = spec.run_dir / "power"
    power_dir.mkdir(parents=True, exist_ok=True)
    for target in targets:
        if not _powered(spec, target):
            continue
        if target.role == "master":
            _in_host(spec, target, "/usr/local/bin/systemctl restart kubelet")
        else:
            (power_dir / target.name).write_text("on\n")  # a worker has no kubelet here: it reboots
    return [t.name for t in targets]


# ---- the table --------------------------------------------------------------------------------
FAULTS: dict[str, Callable[..., object]] = {
    "stop-machine": stop_machine,
    "start-machine": start_machine,
    "node-not-ready": node_not_ready,
    "node-ready": node_ready,
    "node-unreachable": node_unreachable,
    "node-reachable": node_reachable,
    "etcd-crashloop": etcd_crashloop,
    "lose-quorum": lose_quorum,
    "regain-quorum": regain_quorum,
    "delete-namespace": lambda spec, *, name="shop": delete_critical_object(
        spec, kind="namespace", name=name
    ),
    "expire-certs": expire_certificates,
}


def run_fault(spec: layout.SimSpec, name: str, /, **kwargs: Any) -> object:
    """Run the fault `name` of `FAULTS` with `kwargs` (e.g. `node="ip-127-1-0-1.ec2.internal"`)."""
    try:
        fault = FAULTS[name]
    except KeyError:
        raise ValueError(f"unknown fault {name!r}: use one of {', '.join(FAULTS)}") from None
    return fault(spec, **kwargs)
