"""A fault-injecting reverse proxy in front of moto's server: the simulated cluster's S3 endpoint.

It listens where clients expect S3 (`SimSpec.moto_endpoint`, `{prefix}.200:5000`) and forwards
every request to moto (`{prefix}.200:5001`) unchanged: method, raw path and query, headers
(`Host` included) and body bytes, so SigV4 signatures stay valid. Bodies are streamed both ways,
never buffered whole (parts are 5-512 MiB), except a PUT with an `x-amz-checksum-crc32` header:
moto ignores that header, real S3 refuses a body that does not match it (400 BadDigest), so the
proxy reads such a body, checks it, and answers BadDigest as S3 would.

Faults are read for every request from `DIR/run/faults/s3.json` (written by `faults.py`):

    {"mode": "fail", "until": <unix ts>, "status": 503, "methods": ["PUT", "POST"]}
        answer matching requests with an S3 XML error (503 -> `SlowDown`) until `until`
    {"mode": "fail", "count": N, ...}
        fail the next N matching requests (counted here, per version of the file)
    {"mode": "stall", "until": <unix ts>}
        hold matching requests until `until` (or until the file changes), then forward them

Optional keys: `methods` (default: every method), `code` (the S3 error code), `services`
(default `["s3"]`: the service named in the request's SigV4 scope, so EC2 calls to the same
endpoint keep working while S3 breaks). A missing, empty or unreadable file means no fault.

    python -m etcdguard_sim.faults.s3proxy --listen HOST:PORT --upstream URL --state-dir DIR
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import re
import signal
import sys
import time
import uuid
import zlib
from pathlib import Path
from typing import Any

import aiohttp
import yarl
from aiohttp import web
from multidict import CIMultiDict

from etcdguard_sim import layout

__all__ = ["LISTEN_PORT", "UPSTREAM_PORT", "fault_file", "main", "moto_argv", "proxy_argv"]

LISTEN_PORT = 5000
UPSTREAM_PORT = 5001
_CHUNK = 256 * 1024
_STALL_POLL = 0.1
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "expect",  # answered here (100 Continue); the upstream hop gets the body straight away
    }
)
_CODES = {500: "InternalError", 503: "SlowDown", 429: "SlowDown"}
_MESSAGES = {
    "SlowDown": "Please reduce your request rate.",
    "InternalError": "We encountered an internal error. Please try again.",
    "ServiceUnavailable": "Service is unable to handle request.",
    "BadDigest": "The CRC32 you specified did not match the calculated checksum.",
}
_SCOPE = re.compile(r"Credential=[^/,\s]+/\d{8}/[^/,\s]+/(?P<service>[^/,\s]+)/aws4_request")


def fault_file(state_dir: Path) -> Path:
    return Path(state_dir) / "run" / "faults" / "s3.json"


def moto_argv(spec: layout.SimSpec) -> list[str]:
    """moto's server, behind the proxy."""
    return [sys.executable, "-m", "moto.server", "-H", f"{spec.prefix}.200", "-p", str(UPSTREAM_PORT)]


def proxy_argv(spec: layout.SimSpec) -> list[str]:
    """This proxy, where clients expect S3 (`spec.moto_endpoint`)."""
    host = f"{spec.prefix}.200"
    return [
        sys.executable,
        "-m",
        "etcdguard_sim.faults.s3proxy",
        "--listen",
        f"{host}:{LISTEN_PORT}",
        "--upstream",
        f"http://{host}:{UPSTREAM_PORT}",
        "--state-dir",
        str(spec.state_dir),
    ]


def _service(request: web.BaseRequest) -> str:
    """The AWS service the request was signed for (`s3`, `ec2`); unsigned requests count as S3."""
    match = _SCOPE.search(request.headers.get("Authorization", ""))
    if match is None:
        credential = request.query.get("X-Amz-Credential", "")
        parts = credential.split("/")
        return parts[3] if len(parts) == 5 else "s3"
    return match["service"]


class _Faults:
    """The fault file, read per request; `count` budgets are kept per version of the file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._remaining: dict[tuple[int, int], int] = {}

    def current(self) -> tuple[tuple[int, int], dict[str, Any]] | None:
        try:
            st = self.path.stat()
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("mode") not in ("fail", "stall"):
            return None
        return (st.st_ino, st.st_mtime_ns), data

    @staticmethod
    def _matches(fault: dict[str, Any], request: web.BaseRequest) -> bool:
        methods = fault.get("methods")
        if methods and request.method.upper() not in {str(m).upper() for m in methods}:
            return False
        return _service(request) in set(fault.get("services") or ["s3"])

    def failure(self, request: web.BaseRequest) -> dict[str, Any] | None:
        """The fault that fails this request, if any (a `count` budget is spent here)."""
        found = self.current()
        if found is None:
            return None
        version, fault = found
        if fault["mode"] != "fail" or not self._matches(fault, request):
            return None
        until = fault.get("until")
        if until is not None and time.time() >= float(until):
            return None
        count = fault.get("count")
        if count is not None:
            left = self._remaining.setdefault(version, int(count))
            if left <= 0:
                return None
            self._remaining[version] = left - 1
        return fault

    async def stall(self, request: web.BaseRequest) -> float:
        """Hold the request while a matching stall is in force; returns the seconds held."""
        started = time.monotonic()
        while True:
            found = self.current()
            if found is None:
                break
            fault = found[1]
            if fault["mode"] != "stall" or not self._matches(fault, request):
                break
            until = fault.get("until")
            if until is not None and time.time() >= float(until):
                break
            await asyncio.sleep(_STALL_POLL)
        return time.monotonic() - started


def _error_response(request: web.BaseRequest, fault: dict[str, Any]) -> web.Response:
    status = int(fault.get("status", 503))
    code = str(fault.get("code") or _CODES.get(status, "ServiceUnavailable"))
    message = _MESSAGES.get(code, "The simulator's S3 fault injection failed this request.")
    request_id = uuid.uuid4().hex[:16].upper()
    headers = {"x-amz-request-id": request_id, "x-amz-id-2": uuid.uuid4().hex}
    if request.method == "HEAD":
        return web.Response(status=status, headers=headers)
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<Resource>{request.path}</Resource><RequestId>{request_id}</RequestId></Error>"
    )
    return web.Response(status=status, headers=headers, body=body.encode(), content_type="application/xml")


def _forwarded_headers(headers: Any) -> CIMultiDict[str]:
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        if name.lower() not in _HOP_BY_HOP:
            out.add(name, value)
    return out


class _Proxy:
    def __init__(self, upstream: str, faults: _Faults) -> None:
        self.upstream = upstream.rstrip("/")
        self.faults = faults
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self.session = aiohttp.ClientSession(
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            connector=aiohttp.TCPConnector(limit=0),
        )

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        held = await self.faults.stall(request)
        if held >= _STALL_POLL:
            print(f"s3proxy: held {request.method} {request.path} for {held:.1f} s", flush=True)
        fault = self.faults.failure(request)
        if fault is not None:
            # Read the body first, so the connection stays usable for the client's retry.
            while await request.content.readany():
                pass
            response = _error_response(request, fault)
            print(f"s3proxy: failed {request.method} {request.path} with {response.status}", flush=True)
            return response
        return await self._forward(request)

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self.session is not None
        data: Any = request.content if request.body_exists else None
        claimed = request.headers.get("x-amz-checksum-crc32")
        if (
            request.method == "PUT"
            and claimed is not None
            and "aws-chunked" not in request.headers.get("Content-Encoding", "")
        ):
            data = await request.read()
            actual = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
            if actual != claimed:
                print(f"s3proxy: BadDigest for {request.method} {request.path}", flush=True)
                return _error_response(request, {"status": 400, "code": "BadDigest"})
        url = yarl.URL(self.upstream + request.raw_path, encoded=True)
        try:
            upstream = await self.session.request(
                request.method,
                url,
                headers=_forwarded_headers(request.headers),
                data=data,
                skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
                allow_redirects=False,
                compress=None,
            )
        except (aiohttp.ClientConnectionError, OSError) as exc:
            # Nothing answers behind the proxy: drop the connection, as a dead endpoint would.
            print(f"s3proxy: upstream {self.upstream} failed: {exc!r}", flush=True)
            if request.transport is not None:
                request.transport.close()
            raise web.HTTPBadGateway() from exc
        async with upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            response.headers.clear()
            for name, value in upstream.headers.items():
                if name.lower() not in _HOP_BY_HOP:
                    response.headers.add(name, value)
            await response.prepare(request)
            async for chunk in upstream.content.iter_chunked(_CHUNK):
                await response.write(chunk)
            await response.write_eof()
        return response


async def _wait_upstream(upstream: str, *, patience: float) -> None:
    """Listen only once moto accepts connections: until then clients see a refused connection."""
    url = yarl.URL(upstream)
    deadline = time.monotonic() + patience
    while True:
        try:
            _, writer = await asyncio.open_connection(url.host, url.port)
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"nothing accepts connections at {upstream} after {patience:.0f} s"
                ) from None
            await asyncio.sleep(0.1)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return


async def serve(*, listen: tuple[str, int], upstream: str, state_dir: Path, wait: float = 60.0) -> None:
    """Run the proxy until SIGTERM or SIGINT."""
    await _wait_upstream(upstream, patience=wait)
    proxy = _Proxy(upstream, _Faults(fault_file(state_dir)))
    await proxy.start()
    app = web.Application(client_max_size=0)
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    runner = web.AppRunner(app, auto_decompress=False, handle_signals=False, access_log=None)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        site = web.TCPSite(runner, listen[0], listen[1], reuse_address=True)
        await site.start()
        print(f"s3proxy: listening on {listen[0]}:{listen[1]}, forwarding to {upstream}", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()
        await proxy.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="etcdguard_sim.faults.s3proxy", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--listen", required=True, help="HOST:PORT to listen on")
    parser.add_argument("--upstream", required=True, help="moto's URL, e.g. http://127.1.0.200:5001")
    parser.add_argument("--state-dir", required=True, type=Path)
    args = parser.parse_args(argv)
    host, _, port = str(args.listen).rpartition(":")
    if not host or not port.isdigit():
        parser.error(f"--listen must be HOST:PORT, got {args.listen!r}")
    try:
        asyncio.run(serve(listen=(host, int(port)), upstream=args.upstream, state_dir=args.state_dir))
    except (TimeoutError, OSError) as exc:
        print(f"s3proxy: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
