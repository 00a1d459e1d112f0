"""A local Prefect server for `make demo` and `make ui`: its own PREFECT_HOME (SQLite) under the
state directory, on a free loopback port, log in `DIR/logs/prefect-server.log`."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

__all__ = ["start", "stop"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(state_dir: Path, *, timeout: float = 120.0) -> tuple[subprocess.Popen[bytes], str]:
    """Start `prefect server start`; returns the process and its API URL once `/health` answers."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    (state_dir / "logs").mkdir(parents=True, exist_ok=True)
    log = open(state_dir / "logs" / "prefect-server.log", "ab")  # noqa: SIM115 - lives with the server
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        # The UI's pages call the API at this address (the default is port 4200).
        env={**os.environ, "PREFECT_SERVER_UI_API_URL": url},
    )
    log.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"prefect server exited with {proc.returncode}; see {state_dir}/logs/prefect-server.log"
            )
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as reply:
                if reply.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.5)
    stop(proc)
    raise RuntimeError(f"prefect server did not answer at {url} within {timeout:.0f} s")


def stop(proc: subprocess.Popen[bytes], *, timeout: float = 30.0) -> None:
    """Terminate, then kill if it does not exit within `timeout`."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)
