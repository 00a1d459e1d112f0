"""`pods/exec` of the simulated API server, over the Kubernetes websocket exec protocol.

`handle_exec` serves `GET|POST /api/v1/namespaces/{ns}/pods/{name}/exec` for `kubectl exec`
(1.32 tries websockets with `v5.channel.k8s.io` first and falls back to SPDY) and for
`kubernetes.stream.stream(core.connect_get_namespaced_pod_exec, ...)` (`v5`/`v4`). The command
runs as a real local process started by an `ExecRunner`; its stdout and stderr go out on
channels 1 and 2 as they arrive, client data on channel 0 goes to its stdin, and when it ends
channel 3 carries the exit `Status` and the websocket is closed normally.

What is answered with an HTTP `400` Status *before* the upgrade (so `kubectl` prints
`Error from server (BadRequest): ...` and the Python client raises `ApiException` carrying the
message instead of returning empty output):
- bad parameters and container names, worded as the real server words them;
- `tty=true` (not simulated: no pseudo-terminal, no resize);
- a runner's `ExecRefused` (e.g. a pod with no simulated process). kubectl retries a refused
  websocket request over SPDY, which is not implemented; the SPDY retry that follows a refusal
  gets the same refusal message, so kubectl shows it (`_Refusals`).
A command that cannot be started (not found / not executable) is not refused: as in a
container, it ends with exit code 127 / 126 and a message on stderr.

No timeout is forced; the process (and its process group) is killed when the client goes
away before it ends, and in any case before `handle_exec` returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from etcdguard_sim import layout
from etcdguard_sim.api import _execproto as proto

__all__ = [
    "ETCD_NAMESPACE",
    "ExecRefused",
    "ExecRunner",
    "SimExecRunner",
    "etcdctl_env",
    "handle_exec",
    "start_process",
]

ETCD_NAMESPACE = "openshift-etcd"
_ETCD_CONTAINERS = frozenset({"etcdctl", "etcd"})
_TTY_MESSAGE = (
    "tty is not supported by the simulated cluster's pods/exec: run the command without a "
    "terminal (kubectl exec -i, not -it; tty=False with kubernetes.stream)"
)
_DRAIN_SECONDS = 2.0  # after exit, how long output may still arrive from leftover children
_READ_SIZE = 64 * 1024


class ExecRefused(Exception):
    """The runner cannot run anything in this container; `message` is shown to the client."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ExecRunner(Protocol):
    """Starts the command of one exec. The process must have stdout and stderr as pipes, and
    stdin as a pipe when `stdin` is true. Raise `ExecRefused` when the container cannot exec.
    Starting it in a new session is advised: `handle_exec` kills the process group at the end.
    `tty` is always false today (`handle_exec` refuses tty before calling the runner)."""

    async def start(
        self,
        *,
        pod: dict[str, Any],
        container: str,
        command: list[str],
        stdin: bool,
        tty: bool,
    ) -> asyncio.subprocess.Process: ...


def etcdctl_env(spec: layout.SimSpec, node: layout.NodeSpec) -> dict[str, str]:
    """The `ETCDCTL_*` variables of the etcdctl container of `etcd-<node>`, as OpenShift sets
    them: API v3, the etcd CA, the node's peer pair and every member's client URL."""
    cert, key = spec.etcd_cert(node, "peer")
    return {
        "ETCDCTL_API": "3",
        "ETCDCTL_CACERT": str(spec.etcd_ca),
        "ETCDCTL_CERT": str(cert),
        "ETCDCTL_KEY": str(key),
        "ETCDCTL_ENDPOINTS": ",".join(spec.etcd_endpoints()),
    }


class SimExecRunner:
    """Runs commands "in" the `etcdctl` and `etcd` containers of the `openshift-etcd/etcd-<node>`
    static pods: the real command, directly (no shell unless the command is one), with the
    container's `ETCDCTL_*` environment and the simulator's `PATH`. Its working directory is
    `<state>/run/exec/etcd-<node>/<container>`, kept across execs like a container's."""

    def __init__(self, spec: layout.SimSpec) -> None:
        self._spec = spec

    def _node_of(self, pod: Mapping[str, Any], container: str) -> layout.NodeSpec:
        meta = pod.get("metadata", {})
        namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        refusal = ExecRefused(
            "exec is only simulated for the etcd pods' etcdctl and etcd containers; "
            f"pod {namespace}/{name} container {container} has no process to run"
        )
        if namespace != ETCD_NAMESPACE or container not in _ETCD_CONTAINERS:
            raise refusal
        if not name.startswith("etcd-"):
            raise refusal
        try:
            node = self._spec.node(name.removeprefix("etcd-"))
        except KeyError:
            raise refusal from None
        if node.role != "master":
            raise refusal
        return node

    async def start(
        self,
        *,
        pod: dict[str, Any],
        container: str,
        command: list[str],
        stdin: bool,
        tty: bool,
    ) -> asyncio.subprocess.Process:
        node = self._node_of(pod, container)
        if tty:
            raise ExecRefused(_TTY_MESSAGE)
        cwd = self._spec.run_dir / "exec" / f"etcd-{node.name}" / container
        cwd.mkdir(parents=True, exist_ok=True)
        env = {**etcdctl_env(self._spec, node), "PATH": os.environ.get("PATH", os.defpath)}
        return await start_process(command, env=env, cwd=cwd, stdin=stdin)


async def start_process(
    command: list[str], *, env: Mapping[str, str] | None, cwd: Path, stdin: bool
) -> asyncio.subprocess.Process:
    """Start `command` as exec runners should: pipes, its own session, the given env and cwd."""
    return await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=None if env is None else dict(env),
        cwd=cwd,
        start_new_session=True,
    )


class _Refusals:
    """Refusals of the last few seconds, so kubectl's SPDY retry shows the same message."""

    _TTL = 30.0

    def __init__(self) -> None:
        self._seen: dict[tuple[str, ...], tuple[float, str]] = {}

    def remember(self, key: tuple[str, ...], message: str) -> None:
        now = time.monotonic()
        self._seen = {k: v for k, v in self._seen.items() if now - v[0] < self._TTL}
        self._seen[key] = (now, message)

    def recall(self, key: tuple[str, ...]) -> str | None:
        hit = self._seen.pop(key, None)
        if hit is None or time.monotonic() - hit[0] >= self._TTL:
            return None
        return hit[1]


_REFUSALS = _Refusals()


def _bad_request(message: str) -> web.Response:
    return web.Response(status=400, body=proto.status_failure(message), content_type="application/json")


def _key(
    request: web.Request, pod: Mapping[str, Any], container: str, command: tuple[str, ...]
) -> tuple[str, ...]:
    meta = pod.get("metadata", {})
    return (request.host, str(meta.get("namespace")), str(meta.get("name")), container, *command)


def _upgrade_protocol(request: web.Request, refused: str | None) -> str | None:
    upgrade = request.headers.get("Upgrade", "").strip().lower()
    if upgrade.startswith("spdy"):
        raise proto.RequestError(
            refused
            or "pods/exec over SPDY is not implemented by the simulated API server: it speaks "
            "the websocket protocol (v5.channel.k8s.io, v4.channel.k8s.io); kubectl only falls "
            "back to SPDY when its websocket request failed, run it with -v=4 to see why"
        )
    if upgrade != "websocket":
        raise proto.RequestError("Upgrade request required")
    return proto.choose_protocol(request.headers.get("Sec-WebSocket-Protocol"))


async def handle_exec(request: web.Request, *, pod: dict[str, Any], runner: ExecRunner) -> web.StreamResponse:
    """Serve one `pods/exec` request for `pod` (already read from the store; 404s are the
    caller's). Returns the HTTP 400 reply or the finished websocket response."""
    try:
        params = proto.parse_params(request.query, request.query.getall("command", []))
        container = proto.resolve_container(pod, params.container)
        if params.tty:
            raise proto.RequestError(_TTY_MESSAGE)
        key = _key(request, pod, container, params.command)
        protocol = _upgrade_protocol(request, _REFUSALS.recall(key))
    except proto.RequestError as exc:
        return _bad_request(str(exc))
    ws = web.WebSocketResponse(protocols=() if protocol is None else (protocol,))
    if not ws.can_prepare(request).ok:
        return _bad_request("the websocket upgrade request is malformed (RFC 6455 handshake)")
    launch_error: OSError | None = None
    proc: asyncio.subprocess.Process | None = None
    try:
        proc = await runner.start(
            pod=pod, container=container, command=list(params.command), stdin=params.stdin,
            tty=False,
        )  # fmt: skip
    except ExecRefused as exc:
        _REFUSALS.remember(key, exc.message)
        return _bad_request(exc.message)
    except OSError as exc:
        launch_error = exc
    try:
        await ws.prepare(request)
        session = _Session(ws, params=params, protocol=protocol)
        if proc is None:
            assert launch_error is not None
            await session.launch_failed(launch_error)
        else:
            await session.run(proc)
    finally:
        if proc is not None:
            await _kill(proc)
    return ws


class _Session:
    """One upgraded exec: pumps, client reader, exit status."""

    def __init__(self, ws: web.WebSocketResponse, *, params: proto.ExecParams, protocol: str | None) -> None:
        self._ws = ws
        self._params = params
        self._protocol = protocol

    async def _send(self, channel: int, data: bytes) -> bool:
        try:
            await self._ws.send_bytes(proto.frame(channel, data))
        except (ConnectionError, RuntimeError):
            return False  # the client is gone; the reader notices and the process is killed
        return True

    async def _finish(self, returncode: int) -> None:
        status = proto.exit_status(self._params.command, returncode, protocol=self._protocol)
        if status is not None:
            await self._send(proto.ERROR, status)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self._ws.close()

    async def launch_failed(self, exc: OSError) -> None:
        name = self._params.command[0]
        if isinstance(exc, FileNotFoundError):
            code, why = 127, f'exec: "{name}": executable file not found in $PATH'
        else:
            code, why = 126, f'exec: "{name}": {exc.strerror or exc}'
        if self._params.stderr:
            await self._send(proto.STDERR, why.encode() + b"\n")
        await self._finish(code)

    async def _pump(self, stream: asyncio.StreamReader | None, channel: int | None) -> None:
        if stream is None:
            return
        while chunk := await stream.read(_READ_SIZE):
            if channel is not None and not await self._send(channel, chunk):
                channel = None  # keep draining so the process never blocks on a full pipe

    async def _read_client(self, proc: asyncio.subprocess.Process) -> None:
        stdin = proc.stdin if self._params.stdin else None
        async for msg in self._ws:
            data = msg.data.encode() if isinstance(msg.data, str) else msg.data
            if not isinstance(data, bytes) or not data:
                continue
            channel, payload = data[0], data[1:]
            # v5 only: [255, 0] is the client's "stdin is closed" signal.
            stdin_closed = self._protocol == proto.PROTOCOL_V5 and data == b"\xff\x00"
            if channel == proto.STDIN and stdin is not None and payload:
                with contextlib.suppress(ConnectionError):
                    stdin.write(payload)
                    await stdin.drain()
            elif stdin_closed and stdin is not None:
                stdin.close()
                stdin = None
            # RESIZE and anything else: no terminal to resize, ignored.

    async def run(self, proc: asyncio.subprocess.Process) -> None:
        p = self._params
        pumps = [
            asyncio.create_task(self._pump(proc.stdout, proto.STDOUT if p.stdout else None)),
            asyncio.create_task(self._pump(proc.stderr, proto.STDERR if p.stderr else None)),
        ]
        reader = asyncio.create_task(self._read_client(proc))
        exited = asyncio.create_task(_wait_exit(proc))
        try:
            await asyncio.wait({reader, exited}, return_when=asyncio.FIRST_COMPLETED)
            if not exited.done():
                return  # the client left first: the process is killed below
            _, pending = await asyncio.wait(pumps, timeout=_DRAIN_SECONDS)
            if pending:  # a leftover child holds the pipes open: end it, keep what it wrote
                _kill_group(proc)
                await asyncio.wait(pending, timeout=_DRAIN_SECONDS)
            await self._finish(exited.result())
        finally:
            await _kill(proc)
            # Read the pipes to their end so their transports close (no leaked fds).
            await asyncio.wait(pumps, timeout=_DRAIN_SECONDS)
            for task in (*pumps, reader, exited):
                task.cancel()
            await asyncio.gather(*pumps, reader, exited, return_exceptions=True)


async def _wait_exit(proc: asyncio.subprocess.Process) -> int:
    """The exit code, as soon as the process ends. Polls `returncode`, because from Python 3.12
    `Process.wait()` also waits for the pipes to close, which a leftover child can delay."""
    waiter = asyncio.ensure_future(proc.wait())
    try:
        while proc.returncode is None and not waiter.done():
            await asyncio.wait({waiter}, timeout=0.05)
    finally:
        waiter.cancel()
    assert proc.returncode is not None
    return proc.returncode


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    # Runners start the command in its own session, so its pid is its process group's id;
    # a group that no longer exists (or is not ours) is simply not there to kill.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


async def _kill(proc: asyncio.subprocess.Process) -> None:
    """End the process and everything in its group, and reap it."""
    _kill_group(proc)
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    await _wait_exit(proc)
