"""Fault injection into a running simulated cluster, from tests and from `etcdguard-sim fault`.

S3 (through the proxy in front of moto, `s3proxy`; one S3 fault at a time, the last one set wins):

    s3_fail(spec, seconds=30)          S3 answers 503 SlowDown to PUT and POST for 30 s
    s3_fail(spec, count=2)             ... to the next 2 PUT or POST requests
    s3_stall(spec, seconds=5)          S3 holds every request for 5 s, then answers it
    s3_clear(spec)                     S3 works again (a held request goes on at once)

SSH to a control-plane host (the supervisor owns each host's sshd):

    ssh_cut(spec, node)                sshd stops: established sessions die, new ones are refused
    ssh_restore(spec, node)            sshd runs again; returns once it accepts connections
    ssh_drop(spec, node)               established sessions die once; new ones are accepted

Every function returns once the fault is in force, so a test can act right after it. Faults
are files under `DIR/run/` (`faults/s3.json`, `ssh-cut/<node>`), so they survive a crashed
test and `etcdguard-sim fault s3-clear` / `ssh-restore` undo them from a shell.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from etcdguard_sim import layout
from etcdguard_sim.hosts import ns as hostns

__all__ = [
    "S3_METHODS",
    "kill_ssh_sessions",
    "s3_clear",
    "s3_fail",
    "s3_stall",
    "ssh_cut",
    "ssh_drop",
    "ssh_restore",
]

S3_METHODS: tuple[str, ...] = ("PUT", "POST")
_SSHD_NAMES = frozenset({"sshd", "sshd-session", "sshd-auth"})
_SSH_WAIT = 10.0


# ---- S3 -------------------------------------------------------------------------------------
def _s3_file(spec: layout.SimSpec) -> Path:
    return spec.run_dir / "faults" / "s3.json"


def _write_s3(spec: layout.SimSpec, fault: dict[str, Any]) -> None:
    """Replace the fault file atomically: a new inode, so the proxy sees a new fault version."""
    path = _s3_file(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".s3.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(fault) + "\n")
    tmp.replace(path)


def _methods(methods: Sequence[str] | None) -> list[str] | None:
    if methods is None:
        return None
    out = [m.upper() for m in methods]
    if not out:
        raise ValueError("methods is empty: name at least one HTTP method, or pass None for every method")
    return out


def s3_fail(
    spec: layout.SimSpec,
    *,
    seconds: float | None = None,
    count: int | None = None,
    status: int = 503,
    methods: Sequence[str] | None = S3_METHODS,
) -> None:
    """S3 answers `status` with an S3 XML error (503: `SlowDown`) to requests using one of
    `methods` (None: every method), for `seconds` and/or to the next `count` such requests."""
    if seconds is None and count is None:
        raise ValueError("s3_fail needs seconds or count (or both): how long, or how many requests, to fail")
    if seconds is not None and seconds <= 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    if count is not None and count <= 0:
        raise ValueError(f"count must be positive, got {count}")
    if not 400 <= status <= 599:
        raise ValueError(f"status must be an HTTP error status (400-599), got {status}")
    fault: dict[str, Any] = {"mode": "fail", "status": status, "methods": _methods(methods)}
    if seconds is not None:
        fault["until"] = time.time() + seconds
    if count is not None:
        fault["count"] = count
    _write_s3(spec, fault)


def s3_stall(spec: layout.SimSpec, *, seconds: float, methods: Sequence[str] | None = None) -> None:
    """S3 holds requests using one of `methods` (None: every method) for `seconds` from now,
    then forwards them; `s3_clear` releases them earlier."""
    if seconds <= 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    _write_s3(spec, {"mode": "stall", "until": time.time() + seconds, "methods": _methods(methods)})


def s3_clear(spec: layout.SimSpec) -> None:
    """No S3 fault any more (idempotent)."""
    _s3_file(spec).unlink(missing_ok=True)


# ---- SSH ------------------------------------------------------------------------------------
def _stat(pid: int) -> tuple[str, int] | None:
    """(comm, ppid) of a process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            text = fh.read()
    except OSError:
        return None
    comm = text[text.index("(") + 1 : text.rindex(")")]
    ppid = int(text[text.rindex(")") + 2 :].split()[1])
    return comm, ppid


def _sshd_processes(holder_pid: int) -> dict[int, int]:
    """pid -> ppid of every sshd process in the mount namespace of the host held by `holder_pid`."""
    try:
        namespace = os.readlink(f"/proc/{holder_pid}/ns/mnt")
    except OSError:
        return {}
    found: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            if os.readlink(f"/proc/{pid}/ns/mnt") != namespace:
                continue
        except OSError:
            continue
        stat = _stat(pid)
        if stat is not None and stat[0] in _SSHD_NAMES:
            found[pid] = stat[1]
    return found


def _sessions(holder_pid: int) -> list[int]:
    """sshd processes serving a connection: those whose parent is an sshd of the same host
    (the listening sshd's parent is the supervisor)."""
    procs = _sshd_processes(holder_pid)
    return [pid for pid, ppid in procs.items() if ppid in procs]


def kill_ssh_sessions(holder_pid: int) -> list[int]:
    """Kill every sshd process of the host but the listening one (SIGKILL: the connections
    drop as when a host dies); returns the pids killed."""
    killed = []
    for pid in _sessions(holder_pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    return killed


def _gone(pid: int) -> bool:
    """The process has ended (a zombie waiting for its parent counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            text = fh.read()
    except OSError:
        return True
    return text[text.rindex(")") + 2] in "ZX"


def _holder(spec: layout.SimSpec, node: str) -> tuple[layout.NodeSpec, int]:
    host = spec.node(node)
    if host.role != "master":
        raise ValueError(f"{node} is a worker; only control-plane hosts run sshd in the simulator")
    pid = hostns.holder_pid(spec, host)
    if pid is None:
        raise RuntimeError(
            f"host {node} has no running namespace holder: is the simulator in {spec.state_dir} up?"
        )
    return host, pid


def _accepts(ip: str) -> bool:
    try:
        with socket.create_connection((ip, 22), timeout=0.5):
            return True
    except OSError:
        return False


def _wait(what: str, check: Any, timeout: float = _SSH_WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout:.0f} s: see the supervisor's log")
        time.sleep(0.05)


def ssh_cut(spec: layout.SimSpec, node: str) -> None:
    """Stop `node`'s sshd: established sessions die, new connections are refused."""
    host, pid = _holder(spec, node)
    flag = spec.run_dir / "ssh-cut" / host.name
    flag.parent.mkdir(parents=True, exist_ok=True)
    flag.write_text("cut\n")
    _wait(
        f"the sshd of {node} did not stop",
        lambda: all(_gone(p) for p in _sshd_processes(pid)),
    )


def ssh_restore(spec: layout.SimSpec, node: str) -> None:
    """Run `node`'s sshd again (idempotent); returns once it accepts connections."""
    host, _ = _holder(spec, node)
    (spec.run_dir / "ssh-cut" / host.name).unlink(missing_ok=True)
    _wait(f"the sshd of {node} did not accept connections on {host.ip}:22", lambda: _accepts(host.ip))


def ssh_drop(spec: layout.SimSpec, node: str) -> int:
    """Kill the SSH sessions established to `node` now, once; sshd keeps accepting new ones.
    Returns how many sshd session processes were killed (0: there was no session)."""
    _, pid = _holder(spec, node)
    killed = kill_ssh_sessions(pid)
    _wait(f"the SSH sessions to {node} did not end", lambda: all(_gone(p) for p in killed))
    return len(killed)
