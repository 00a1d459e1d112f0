"""Fixtures for the API server's integration tests: one real etcd 3.4 (plain HTTP) on
127.0.8.1 and the simulated API server (`create_app`) on 127.0.8.100, served over plain HTTP
from a background thread. Import the fixtures into a test module to use them."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from etcdguard_sim.api import etcdstore
from etcdguard_sim.api import server as apiserver

ETCD_HOST = "127.0.8.1"
ETCD_URL = f"http://{ETCD_HOST}:2379"
API_HOST = "127.0.8.100"


@dataclasses.dataclass(frozen=True)
class ApiServer:
    url: str
    etcd_url: str
    kubeconfig: Path


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A single-member etcd 3.4 on 127.0.8.1:2379 (plain HTTP), stopped afterwards."""
    assert shutil.which("etcd"), "etcd is not on PATH: apt-get install etcd-server"
    for port in (2379, 2380):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((ETCD_HOST, port))
            except OSError:
                pytest.fail(f"{ETCD_HOST}:{port} is already in use: stop what listens there")
    data = tmp_path_factory.mktemp("etcd")
    peer = f"http://{ETCD_HOST}:2380"
    log = open(data.parent / f"{data.name}.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        ["etcd", "--data-dir", str(data / "default.etcd"),
         "--listen-client-urls", ETCD_URL, "--advertise-client-urls", ETCD_URL,
         "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
         "--initial-cluster", f"default={peer}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"{ETCD_URL}/health", timeout=1) as resp:  # noqa: S310
                    if b'"health":"true"' in resp.read():
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"etcd did not become healthy: see {log.name}")
            time.sleep(0.1)
        yield ETCD_URL
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


class LocalExecRunner:
    """Runs an exec's command as a local process in `cwd` (any pod, any container)."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd

    async def start(
        self, *, pod: dict[str, Any], container: str, command: list[str], stdin: bool, tty: bool
    ) -> asyncio.subprocess.Process:
        from etcdguard_sim.api import podexec

        return await podexec.start_process(command, env=None, cwd=self.cwd, stdin=stdin)


class ServerThread(threading.Thread):
    """Serves `create_app` on its own event loop until `stop()`."""

    def __init__(
        self,
        host: str,
        port: int,
        etcd_url: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        exec_runner: object | None = None,
        etcd_timeout: float = 5.0,
    ) -> None:
        super().__init__(name="apiserver", daemon=True)
        self.host, self.port, self.etcd_url = host, port, etcd_url
        self.ssl_context, self.exec_runner, self.etcd_timeout = ssl_context, exec_runner, etcd_timeout
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Event | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            self.error = exc
            self.ready.set()

    async def _main(self) -> None:
        store = etcdstore.EtcdStore([self.etcd_url], timeout=self.etcd_timeout)
        app = apiserver.create_app(store, exec_runner=self.exec_runner)
        runner = web.AppRunner(app, access_log=None)
        try:
            await runner.setup()
            await web.TCPSite(runner, self.host, self.port, ssl_context=self.ssl_context).start()
            self._loop, self._stopped = asyncio.get_running_loop(), asyncio.Event()
            self.ready.set()
            await self._stopped.wait()
        finally:
            await runner.cleanup()
            await store.close()

    def stop(self) -> None:
        if self._loop is not None and self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
        self.join(timeout=15)


@contextlib.contextmanager
def running_server(etcd_url: str, **kw: Any) -> Iterator[str]:
    """An extra API server on 127.0.8.100 for one test; yields its host:port."""
    port = free_port(API_HOST)
    thread = ServerThread(API_HOST, port, etcd_url, **kw)
    thread.start()
    try:
        assert thread.ready.wait(timeout=30), "the API server did not start within 30 s"
        if thread.error is not None:
            raise RuntimeError("the API server failed to start") from thread.error
        yield f"{API_HOST}:{port}"
    finally:
        thread.stop()


@pytest.fixture(scope="module")
def api_server(etcd_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """The simulated API server over plain HTTP on 127.0.8.100 (exec runs local commands),
    with a kubeconfig for kubectl."""
    base = tmp_path_factory.mktemp("kube")
    runner = LocalExecRunner(base)
    with running_server(etcd_server, exec_runner=runner) as address:
        url = f"http://{address}"
        kubeconfig = base / "kubeconfig"
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "sim", "cluster": {"server": url}}],
                    "users": [{"name": "admin", "user": {}}],
                    "contexts": [{"name": "sim", "context": {"cluster": "sim", "user": "admin"}}],
                    "current-context": "sim",
                }
            )
        )
        yield ApiServer(url=url, etcd_url=etcd_server, kubeconfig=kubeconfig)
