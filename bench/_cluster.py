"""Preparing the benchmark's cluster: fill etcd through its v3 JSON gateway (the real etcd, TLS with a
node's peer certificate, as `tests/simtools.etcdctl` connects), read its backend quota, and take a
real snapshot on a host with `cluster-backup.sh` over the system's `ssh`."""

from __future__ import annotations

import base64
import dataclasses
import http.client
import json
import os
import re
import shlex
import ssl
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from etcdguard_sim import layout

__all__ = ["FillResult", "HostSnapshot", "backend_quota", "fill_etcd", "take_snapshot"]

PREFIX = "/bench/"
VALUE_SIZE = 1000 * 1024  # below etcd's default --max-request-bytes (1.5 MiB) with room for the key


@dataclasses.dataclass(frozen=True, kw_only=True)
class FillResult:
    keys_before: int
    keys_written: int
    bytes_written: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class HostSnapshot:
    node: str
    address: str
    path: str
    size: int
    output: str


def _tls(spec: layout.SimSpec, node: layout.NodeSpec) -> ssl.SSLContext:
    crt, key = spec.etcd_cert(node, "peer")
    context = ssl.create_default_context(cafile=str(spec.etcd_ca))
    context.load_cert_chain(str(crt), str(key))
    return context


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


class _Gateway:
    """One keep-alive HTTPS connection to a member's JSON gateway (one per thread)."""

    def __init__(self, spec: layout.SimSpec, node: layout.NodeSpec) -> None:
        self._conn = http.client.HTTPSConnection(node.ip, layout.ETCD_CLIENT_PORT, context=_tls(spec, node))

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self._conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        reply = self._conn.getresponse()
        data = reply.read()
        if reply.status != 200:
            raise RuntimeError(f"etcd answered {reply.status} to {path}: {data[:300]!r}")
        result: dict[str, Any] = json.loads(data)
        return result

    def close(self) -> None:
        self._conn.close()


def _count(spec: layout.SimSpec, node: layout.NodeSpec) -> int:
    end = PREFIX[:-1] + chr(ord(PREFIX[-1]) + 1)
    gateway = _Gateway(spec, node)
    try:
        reply = gateway.post(
            "/v3/kv/range",
            {"key": _b64(PREFIX.encode()), "range_end": _b64(end.encode()), "count_only": True},
        )
    finally:
        gateway.close()
    return int(reply.get("count", 0))


def fill_etcd(spec: layout.SimSpec, *, target_bytes: int, workers: int = 4) -> FillResult:
    """Put random (incompressible) values of ~1000 KiB under /bench/ until the keys there hold
    `target_bytes`. Keys already there count, so a kept state directory is not filled twice."""
    node = spec.masters[0]
    before = _count(spec, node)
    total = -(-target_bytes // VALUE_SIZE)
    todo = list(range(before, total))
    local = threading.local()
    gateways: list[_Gateway] = []
    lock = threading.Lock()

    def put(index: int) -> None:
        gateway: _Gateway | None = getattr(local, "gateway", None)
        if gateway is None:
            gateway = local.gateway = _Gateway(spec, node)
            with lock:
                gateways.append(gateway)
        key = f"{PREFIX}{index:07d}".encode()
        gateway.post("/v3/kv/put", {"key": _b64(key), "value": _b64(os.urandom(VALUE_SIZE))})

    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fill") as pool:
            for _ in pool.map(put, todo):
                pass
    finally:
        for gateway in gateways:
            gateway.close()
    return FillResult(keys_before=before, keys_written=len(todo), bytes_written=len(todo) * VALUE_SIZE)


def backend_quota(spec: layout.SimSpec) -> dict[str, int]:
    """`etcd_server_quota_backend_bytes` and `etcd_mvcc_db_total_size_in_bytes` of the first member,
    from its /metrics (what the running member uses, whatever flag or env set it)."""
    node = spec.masters[0]
    conn = http.client.HTTPSConnection(node.ip, layout.ETCD_CLIENT_PORT, context=_tls(spec, node))
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    found: dict[str, int] = {}
    for name in ("etcd_server_quota_backend_bytes", "etcd_mvcc_db_total_size_in_bytes"):
        match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
        if match:
            found[name] = int(float(match[1]))
    return found


def ssh(spec: layout.SimSpec, node: layout.NodeSpec, command: str, *, timeout: float = 900.0) -> str:
    """Run `command` on `node` with the system's `ssh` and the simulator's ssh_config."""
    proc = subprocess.run(
        ["ssh", "-F", str(spec.state_dir / "ssh_config"), "-o", "BatchMode=yes", node.name, command],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"`{command}` on {node.name} failed with exit code {proc.returncode}: "
            f"{(proc.stdout + proc.stderr)[-2000:]}"
        )
    return proc.stdout


def take_snapshot(spec: layout.SimSpec, *, directory: str = "/home/core/assets/bench") -> HostSnapshot:
    """`sudo cluster-backup.sh DIR` on the first control-plane host; the root-owned snapshot it wrote."""
    node = spec.masters[0]
    quoted = shlex.quote(directory)
    ssh(spec, node, f"sudo rm -rf -- {quoted}")
    output = ssh(spec, node, f"sudo /usr/local/bin/cluster-backup.sh {quoted}")
    listing = ssh(spec, node, f"sudo find {quoted} -maxdepth 1 -name 'snapshot_*.db' -printf '%p %s %u\\n'")
    rows = [line.split() for line in listing.splitlines() if line.strip()]
    if len(rows) != 1:
        raise RuntimeError(f"cluster-backup.sh left {len(rows)} snapshots in {directory}: {listing!r}")
    path, size, owner = rows[0]
    if owner != "root":
        raise RuntimeError(
            f"The snapshot {path} is owned by {owner}, not root: the benchmark needs sudo cat."
        )
    return HostSnapshot(node=node.name, address=node.ip, path=path, size=int(size), output=output)
