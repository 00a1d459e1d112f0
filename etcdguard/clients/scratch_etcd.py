"""A throwaway etcd on loopback, for restore drills: `etcdctl snapshot restore` into a scratch
directory, then a single-member etcd serving it on free loopback ports, queried with etcdctl.

The facade over the local `etcd`/`etcdctl` binaries (etcd 3.4, as on OpenShift 4.8). Nothing
here touches a cluster; everything lives under the scratch directory and dies with `close`.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from etcdguard.core import errors

__all__ = ["ThrowawayEtcd", "restore_snapshot", "snapshot_status"]

_ENV = {"ETCDCTL_API": "3"}


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise errors.ConfigError(
            f"`{name}` is not installed on this worker; restore drills need etcd 3.4's etcd and etcdctl "
            "(Debian: apt-get install etcd-server etcd-client)."
        )
    return found


def _run(argv: list[str], *, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, env={**os.environ, **_ENV}, timeout=timeout, check=False
    )


def snapshot_status(path: Path) -> str:
    """`etcdctl snapshot status -w json` output of a local snapshot file."""
    done = _run([_binary("etcdctl"), "snapshot", "status", str(path), "-w", "json"])
    if done.returncode != 0:
        raise errors.IntegrityError(
            f"etcdctl snapshot status refused {path.name}: {errors.truncate_remote(done.stderr, limit=300)}"
        )
    return done.stdout


def restore_snapshot(path: Path, data_dir: Path, *, name: str = "drill") -> None:
    """`etcdctl snapshot restore` as the restore pod does (sha256 trailer checked)."""
    done = _run(
        [
            _binary("etcdctl"), "snapshot", "restore", str(path), "--name", name, "--data-dir", str(data_dir),
            "--initial-cluster", f"{name}=http://127.0.0.1:2380", "--initial-advertise-peer-urls",
            "http://127.0.0.1:2380", "--initial-cluster-token", f"etcdguard-{name}",
        ]
    )  # fmt: skip
    if done.returncode != 0:
        raise errors.IntegrityError(
            f"etcdctl snapshot restore refused {path.name}: {errors.truncate_remote(done.stderr, limit=400)}"
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ThrowawayEtcd:
    """`with ThrowawayEtcd(data_dir) as etcd:` serves a restored data dir on loopback."""

    def __init__(self, data_dir: Path, *, name: str = "drill", start_timeout: float = 60.0) -> None:
        self.data_dir = data_dir
        self.name = name
        self.endpoint = f"http://127.0.0.1:{_free_port()}"
        self._peer = f"http://127.0.0.1:{_free_port()}"
        self._timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = data_dir.parent / f"{data_dir.name}.log"

    def __enter__(self) -> ThrowawayEtcd:
        with open(self._log, "wb") as log:
            self._proc = subprocess.Popen(
                [
                    _binary("etcd"), "--name", self.name, "--data-dir", str(self.data_dir),
                    "--listen-client-urls", self.endpoint, "--advertise-client-urls", self.endpoint,
                    "--listen-peer-urls", self._peer, "--initial-advertise-peer-urls", self._peer,
                    "--initial-cluster", f"{self.name}={self._peer}",
                ],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        deadline = time.monotonic() + self._timeout
        while True:
            if self._proc.poll() is not None:
                tail = self._log.read_text(errors="replace")[-600:]
                self.close()
                raise errors.IntegrityError(
                    f"etcd did not start from the restored data: it exited with {self._proc.returncode}: "
                    f"{errors.truncate_remote(tail, limit=400)}"
                )
            if _run(self._ctl("endpoint", "health"), timeout=10).returncode == 0:
                return self
            if time.monotonic() > deadline:
                self.close()
                raise errors.IntegrityError(
                    f"etcd from the restored data was not healthy within {self._timeout:g} s."
                )
            time.sleep(0.2)

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)

    def _ctl(self, *args: str) -> list[str]:
        return [_binary("etcdctl"), "--endpoints", self.endpoint, *args]

    def _json(self, *args: str) -> Any:
        done = _run(self._ctl(*args, "-w", "json"), timeout=120)
        if done.returncode != 0:
            raise errors.IntegrityError(
                f"etcdctl {' '.join(args)} failed: {errors.truncate_remote(done.stderr)}"
            )
        return json.loads(done.stdout)

    def key_count(self, prefix: str = "/") -> int:
        """Live keys under `prefix`."""
        reply = self._json("get", prefix, "--prefix", "--keys-only", "--limit", "1")  # count: all matches
        return int(reply.get("count", 0))

    def revision(self) -> int:
        reply = self._json("endpoint", "status")
        return int(reply[0]["Status"]["header"]["revision"])

    def missing(self, keys: list[str]) -> list[str]:
        """Those of `keys` that the restored etcd does not hold."""
        absent = []
        for key in keys:
            reply = self._json("get", key, "--keys-only")
            if int(reply.get("count", 0)) == 0:
                absent.append(key)
        return absent
