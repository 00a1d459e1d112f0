"""Each simulated control-plane host is a private mount namespace over the machine's own root.

A small holder process (`unshare --mount --propagation private`) bind-mounts the host's own
directories from `DIR/hosts/<node>/` over the machine's paths and then sleeps; everything that
runs "on the host" (its sshd, its kubelet's static pods, commands in tests) enters that
namespace with `nsenter --mount`, so it sees the host's files at the usual paths:

    /etc/kubernetes   manifests, static-pod-resources (per host)
    /var/lib          etcd/, etcd-backup/, sim/ (sshd config and host keys)   (per host)
    /home             core/                                                  (per host)
    /tmp, /run, /usr/local/bin                                               (per host)

Everything else (/usr, /etc, /root...) is the machine's. A host therefore sees no path of the
state directory itself when that lives under /tmp: code that runs on a host uses host paths only.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

from etcdguard_sim import layout

__all__ = ["HOST_BINDS", "enter_argv", "holder_pid", "prepare_host_dirs", "start_holder", "stop_holder"]

# Host path -> directory under the host root; the order matters (/run last, /tmp before it).
HOST_BINDS: tuple[str, ...] = ("/etc/kubernetes", "/var/lib", "/home", "/usr/local/bin", "/tmp", "/run")


def _pidfile(spec: layout.SimSpec, node: layout.NodeSpec) -> Path:
    return spec.run_dir / f"host-{node.name}.pid"


def prepare_host_dirs(spec: layout.SimSpec, node: layout.NodeSpec) -> None:
    """Create the host's directories (idempotent) and the machine-side mount points."""
    root = spec.host_root(node)
    for path in HOST_BINDS:
        (root / path.lstrip("/")).mkdir(parents=True, exist_ok=True)
        Path(path).mkdir(parents=True, exist_ok=True)
    (root / "tmp").chmod(0o1777)
    (root / "run" / "sshd").mkdir(parents=True, exist_ok=True)
    (root / "run" / "sshd").chmod(0o755)


def holder_pid(spec: layout.SimSpec, node: layout.NodeSpec) -> int | None:
    try:
        pid = int(_pidfile(spec, node).read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def start_holder(spec: layout.SimSpec, node: layout.NodeSpec) -> subprocess.Popen[bytes]:
    """Start the namespace holder of `node`; returns once its mounts are in place."""
    prepare_host_dirs(spec, node)
    root = spec.host_root(node)
    # The bind that covers the state directory itself (e.g. /tmp) must come last, or it would
    # hide the sources of the binds after it. The targets are not nested, so one is enough.
    order = sorted(HOST_BINDS, key=lambda p: spec.state_dir.is_relative_to(p))
    binds = " && ".join(
        f"mount --bind {shlex.quote(str(root / p.lstrip('/')))} {shlex.quote(p)}" for p in order
    )
    # Readiness comes on stdout: a file under DIR could be hidden by the binds themselves.
    short = node.name.split(".")[0]
    script = f"{binds} && hostname {shlex.quote(short)} && echo ready && exec sleep infinity"
    proc = subprocess.Popen(
        ["unshare", "--mount", "--uts", "--propagation", "private", "--", "/bin/sh", "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != b"ready":
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        proc.kill()
        raise RuntimeError(f"could not set up the mount namespace of host {node.name}: {err.strip()}")
    _pidfile(spec, node).write_text(str(proc.pid))
    return proc


def stop_holder(spec: layout.SimSpec, node: layout.NodeSpec) -> None:
    pid = holder_pid(spec, node)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        for _ in range(50):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.02)
    _pidfile(spec, node).unlink(missing_ok=True)


def enter_argv(pid: int, argv: list[str], *, wd: str = "/") -> list[str]:
    """`argv` run inside the host whose namespace holder is `pid`."""
    return ["nsenter", f"--mount=/proc/{pid}/ns/mnt", f"--uts=/proc/{pid}/ns/uts", f"--wd={wd}", "--", *argv]
