"""`pods/exec` over the websocket exec protocol, checked with the real `kubectl` (1.32) and the
real `kubernetes.stream` client against a minimal aiohttp API server on 127.0.7.1 whose exec
route calls `podexec.handle_exec` with a runner that runs real local commands."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import json
import subprocess
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from etcdguard_sim import layout
from etcdguard_sim.api import podexec
from kubernetes import client, config, stream

pytestmark = pytest.mark.integration

HOST = "127.0.7.1"

PODS: dict[tuple[str, str], dict[str, Any]] = {
    ("ns", name): {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}"},
        "spec": {"nodeName": "node-a", "containers": [{"name": c, "image": "x"} for c in cs]},
        "status": {"phase": "Running"},
    }
    for name, cs in {"solo": ["main"], "multi": ["main", "sidecar", "refusing"]}.items()
}


class LocalRunner:
    """Runs the real command here; the `refusing` container refuses every exec."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd

    async def start(
        self,
        *,
        pod: dict[str, Any],
        container: str,
        command: list[str],
        stdin: bool,
        tty: bool,
    ) -> asyncio.subprocess.Process:
        if container == "refusing":
            raise podexec.ExecRefused(f"container {container} refuses to run {command[0]}")
        return await podexec.start_process(command, env=None, cwd=self.cwd, stdin=stdin)


def _app(runner: LocalRunner) -> web.Application:
    async def version(_: web.Request) -> web.Response:
        return web.json_response({"major": "1", "minor": "21", "gitVersion": "v1.21.1"})

    async def api(_: web.Request) -> web.Response:
        return web.json_response(
            {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": HOST}],
            }
        )

    async def api_v1(_: web.Request) -> web.Response:
        verbs = ["get", "list"]
        return web.json_response(
            {
                "kind": "APIResourceList",
                "groupVersion": "v1",
                "resources": [
                    {"name": "pods", "singularName": "pod", "namespaced": True, "kind": "Pod",
                     "verbs": verbs, "shortNames": ["po"]},
                    {"name": "pods/exec", "singularName": "", "namespaced": True,
                     "kind": "PodExecOptions", "verbs": ["create", "get"]},
                ],
            }
        )  # fmt: skip

    async def apis(_: web.Request) -> web.Response:
        return web.json_response({"kind": "APIGroupList", "apiVersion": "v1", "groups": []})

    def _pod(request: web.Request) -> dict[str, Any]:
        key = (request.match_info["ns"], request.match_info["name"])
        if key not in PODS:
            raise web.HTTPNotFound()
        return PODS[key]

    async def get_pod(request: web.Request) -> web.Response:
        return web.json_response(_pod(request))

    async def exec_(request: web.Request) -> web.StreamResponse:
        return await podexec.handle_exec(request, pod=_pod(request), runner=runner)

    app = web.Application()
    app.router.add_get("/version", version)
    app.router.add_get("/api", api)
    app.router.add_get("/api/v1", api_v1)
    app.router.add_get("/apis", apis)
    app.router.add_get("/api/v1/namespaces/{ns}/pods/{name}", get_pod)
    app.router.add_route("*", "/api/v1/namespaces/{ns}/pods/{name}/exec", exec_)
    return app


@dataclasses.dataclass(frozen=True)
class Server:
    url: str
    kubeconfig: Path
    workdir: Path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("podexec")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="podexec-api", daemon=True)
    thread.start()
    runner = web.AppRunner(_app(LocalRunner(tmp)), shutdown_timeout=2)

    async def start() -> str:
        await runner.setup()
        await web.TCPSite(runner, HOST, 0).start()
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}"

    try:
        url = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
        kubeconfig = tmp / "kubeconfig"
        kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "c", "cluster": {"server": url}}],
                    "users": [{"name": "u", "user": {"token": "t"}}],
                    "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                    "current-context": "x",
                }
            )
        )
        yield Server(url=url, kubeconfig=kubeconfig, workdir=tmp)
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(15)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def kubectl(srv: Server, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["kubectl", "--kubeconfig", str(srv.kubeconfig), *args],
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        timeout=30,
        check=False,
    )


@pytest.fixture(scope="module")
def core(server: Server) -> Iterator[client.CoreV1Api]:
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(server.kubeconfig), client_configuration=cfg)
    with client.ApiClient(cfg) as api:
        yield client.CoreV1Api(api)


# ---- kubectl ------------------------------------------------------------------------------


def test_kubectl_exit_code_stdout_and_stderr(server: Server) -> None:
    script = "echo out; echo err >&2; exit 3"
    proc = kubectl(server, "exec", "-n", "ns", "multi", "-c", "main", "--", "sh", "-c", script)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == b"out\n"
    assert proc.stderr.startswith(b"err\n"), proc.stderr


def test_kubectl_success_and_stdin(server: Server) -> None:
    data = b"".join(b"line %06d\n" % i for i in range(30_000))  # 360 kB: many frames each way
    proc = kubectl(server, "exec", "-i", "-n", "ns", "solo", "--", "cat", stdin=data)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == data
    assert proc.stderr == b""


def test_kubectl_unknown_container_is_bad_request(server: Server) -> None:
    proc = kubectl(server, "exec", "-n", "ns", "multi", "-c", "nope", "--", "true")
    assert proc.returncode == 1
    assert b"container nope is not valid for pod multi" in proc.stderr, proc.stderr


def test_kubectl_shows_a_refusal(server: Server) -> None:
    proc = kubectl(server, "exec", "-n", "ns", "multi", "-c", "refusing", "--", "etcdctl")
    assert proc.returncode == 1
    assert b"container refusing refuses to run etcdctl" in proc.stderr, proc.stderr


def test_kubectl_missing_command_exits_127(server: Server) -> None:
    proc = kubectl(server, "exec", "-n", "ns", "solo", "--", "/nonexistent/tool", "x")
    assert proc.returncode == 127, proc.stderr
    assert b'exec: "/nonexistent/tool": executable file not found' in proc.stderr


# ---- before the upgrade: plain HTTP Status replies --------------------------------------


def _http_status(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 (http://127.0.7.1)
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("command=true&stdout=true",
         "a container name must be specified for pod multi, choose one of: "
         "[main sidecar refusing]"),
        ("command=true&stdout=true&container=y", "container y is not valid for pod multi"),
        ("stdout=true&container=main", "you must specify at least 1 command"),
        ("command=true&container=main", "you must specify at least 1 of stdin, stdout, stderr"),
        ("command=true&stdout=1&container=main&tty=true", "tty is not supported"),
        ("command=true&stdout=1&container=main", "Upgrade request required"),
    ],
)  # fmt: skip
def test_bad_requests_are_status_replies(server: Server, query: str, message: str) -> None:
    code, body = _http_status(f"{server.url}/api/v1/namespaces/ns/pods/multi/exec?{query}")
    assert code == 400
    assert body["kind"] == "Status"
    assert body["reason"] == "BadRequest"
    assert body["message"].startswith(message), body


# ---- other subprotocols, frame by frame -----------------------------------------------------


async def _frames(url: str, protocols: tuple[str, ...]) -> tuple[str | None, list[bytes]]:
    frames: list[bytes] = []
    async with aiohttp.ClientSession() as session, session.ws_connect(url, protocols=protocols) as ws:
        async for msg in ws:
            assert msg.type is aiohttp.WSMsgType.BINARY, msg
            frames.append(msg.data)
        return ws.protocol, frames


@pytest.mark.parametrize(
    ("offered", "chosen", "status"),
    [
        (("v4.channel.k8s.io", "v5.channel.k8s.io"), "v5.channel.k8s.io",
         b'{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit '
         b'code: error executing command [sh -c echo hi; exit 2], exit code 2","reason":'
         b'"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"2"}]}}'),
        (("v4.channel.k8s.io",), "v4.channel.k8s.io", None),
        (("channel.k8s.io",), "channel.k8s.io",
         b"command terminated with non-zero exit code: error executing command "
         b"[sh -c echo hi; exit 2], exit code 2"),
    ],
)  # fmt: skip
def test_protocols_and_error_channel(
    server: Server, offered: tuple[str, ...], chosen: str, status: bytes | None
) -> None:
    query = "command=sh&command=-c&command=echo+hi%3B+exit+2&stdout=true&stderr=true"
    url = f"{server.url}/api/v1/namespaces/ns/pods/solo/exec?{query}"
    protocol, frames = asyncio.run(_frames(url, offered))
    assert protocol == chosen
    assert frames[0] == b"\x01hi\n"
    assert frames[-1][0] == 3
    error = frames[-1][1:]
    if status is None:
        assert json.loads(error)["details"]["causes"] == [{"reason": "ExitCode", "message": "2"}]
    else:
        assert error == status


# ---- kubernetes.stream ----------------------------------------------------------------------


def _exec(core: client.CoreV1Api, command: list[str], **kwargs: Any) -> Any:
    return stream.stream(
        core.connect_get_namespaced_pod_exec,
        "solo",
        "ns",
        command=command,
        stdout=True,
        stderr=True,
        tty=False,
        **kwargs,
    )


@contextlib.contextmanager
def _ws(core: client.CoreV1Api, command: list[str], *, stdin: bool) -> Iterator[Any]:
    ws = _exec(core, command, stdin=stdin, _preload_content=False)
    try:
        yield ws
    finally:
        ws.close()
        # After the server's close frame websocket-client marks itself disconnected and its
        # close() becomes a no-op that leaves the socket open: close the socket itself.
        ws.sock.shutdown()


def test_python_client_output(core: client.CoreV1Api) -> None:
    # With the default _preload_content=True, kubernetes 37 never closes its websocket's
    # socket (WSClient is dropped open): collect it here, where its ResourceWarning is expected.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        out = _exec(core, ["sh", "-c", "echo out; echo err >&2; exit 3"], stdin=False)
        gc.collect()
    assert "out\n" in out
    assert "err\n" in out


def test_python_client_returncode(core: client.CoreV1Api) -> None:
    with _ws(core, ["sh", "-c", "echo out; exit 3"], stdin=False) as ws:
        ws.run_forever(timeout=20)
        assert ws.returncode == 3
        assert ws.read_stdout() == "out\n"
    with _ws(core, ["true"], stdin=False) as ok:
        ok.run_forever(timeout=20)
        assert ok.returncode == 0
        assert ok.subprotocol == "v5.channel.k8s.io"


def test_python_client_stdin_with_v5_close(core: client.CoreV1Api) -> None:
    with _ws(core, ["sh", "-c", "cat; echo done"], stdin=True) as ws:
        ws.write_stdin("hello\n")
        ws.close_channel(0)  # [255, 0]: stdin closed
        ws.run_forever(timeout=20)
        assert ws.returncode == 0
        assert ws.read_stdout() == "hello\ndone\n"


def test_python_client_refusal_raises(core: client.CoreV1Api) -> None:
    with pytest.raises(client.ApiException, match="refuses to run"):
        stream.stream(
            core.connect_get_namespaced_pod_exec, "multi", "ns", container="refusing",
            command=["ls"], stdout=True, stderr=True, stdin=False, tty=False,
        )  # fmt: skip


def _group_alive(pgid: int) -> bool:
    """Whether a process of group `pgid` still runs (zombies waiting for init do not count)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":  # state, ppid, pgrp
                return True
    return False


def test_output_streams_before_exit_and_early_disconnect_kills(
    core: client.CoreV1Api,
) -> None:
    with _ws(core, ["sh", "-c", "echo $$; sleep 30 & wait"], stdin=False) as ws:
        pid = int(ws.readline_stdout(timeout=10))  # arrives while the command still runs
        assert ws.is_open()
        assert _group_alive(pid)
    deadline = time.monotonic() + 10
    while _group_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _group_alive(pid), "the exec's processes outlived the websocket"


# ---- the simulator's runner ---------------------------------------------------------------


@pytest.fixture
def spec(tmp_path: Path) -> layout.SimSpec:
    return layout.make_spec(state_dir=tmp_path, prefix="127.0.7", masters=3, workers=1)


@pytest.mark.unit
def test_etcdctl_env(spec: layout.SimSpec) -> None:
    node = spec.masters[1]
    env = podexec.etcdctl_env(spec, node)
    assert env == {
        "ETCDCTL_API": "3",
        "ETCDCTL_CACERT": str(spec.pki_dir / "etcd" / "ca.crt"),
        "ETCDCTL_CERT": str(spec.pki_dir / "etcd" / f"etcd-peer-{node.name}.crt"),
        "ETCDCTL_KEY": str(spec.pki_dir / "etcd" / f"etcd-peer-{node.name}.key"),
        "ETCDCTL_ENDPOINTS": "https://127.0.7.1:2379,https://127.0.7.2:2379,https://127.0.7.3:2379",
    }


def _pod(namespace: str, name: str) -> dict[str, Any]:
    return {"metadata": {"namespace": namespace, "name": name}}


@pytest.mark.parametrize(
    ("namespace", "name", "container"),
    [
        ("openshift-etcd", "etcd-{master}", "etcd-metrics"),
        ("openshift-etcd", "etcd-{worker}", "etcdctl"),
        ("openshift-etcd", "etcd-ip-127-0-7-9.ec2.internal", "etcdctl"),
        ("openshift-etcd", "etcd-quorum-guard-x", "etcdctl"),
        ("default", "etcd-{master}", "etcdctl"),
    ],
)
def test_sim_runner_refuses_other_containers(
    spec: layout.SimSpec, namespace: str, name: str, container: str
) -> None:
    pod = _pod(namespace, name.format(master=spec.masters[0].name, worker=spec.workers[0].name))
    runner = podexec.SimExecRunner(spec)
    start = runner.start(pod=pod, container=container, command=["true"], stdin=False, tty=False)
    with pytest.raises(podexec.ExecRefused, match="no process to run") as info:
        asyncio.run(start)
    assert f"container {container} has no process to run" in info.value.message


def test_sim_runner_runs_with_the_container_env(spec: layout.SimSpec) -> None:
    node = spec.masters[2]
    runner = podexec.SimExecRunner(spec)

    async def run() -> tuple[bytes, int]:
        proc = await runner.start(
            pod=_pod("openshift-etcd", f"etcd-{node.name}"), container="etcdctl",
            command=["sh", "-c", "env; pwd"], stdin=False, tty=False,
        )  # fmt: skip
        out, _ = await proc.communicate()
        return out, await proc.wait()

    out, code = asyncio.run(run())
    assert code == 0
    lines = out.decode().splitlines()
    assert f"ETCDCTL_ENDPOINTS={','.join(spec.etcd_endpoints())}" in lines
    assert f"ETCDCTL_KEY={spec.etcd_cert(node, 'peer')[1]}" in lines
    assert lines[-1] == str(spec.run_dir / "exec" / f"etcd-{node.name}" / "etcdctl")
