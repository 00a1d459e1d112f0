"""HTTP plumbing of the simulated API server: middlewares and request/response helpers.

- `log`: one stderr line per request (`apiserver: GET /api/v1/nodes 200 3.1ms`), never bodies.
- `errors`: `apierrors.ApiError` -> its `Status`; router 404/405 -> Status; anything else -> 500
  InternalError (traceback on stderr).
- `authenticate`: over TLS, every request except `/version`, `/healthz`, `/livez`, `/readyz`
  needs a client certificate the TLS layer verified against the API CA (401 otherwise), as
  the real server lets anonymous users read only those. Over plain HTTP (tests) nothing is asked.
- `read_body`: JSON, YAML, or Kubernetes protobuf (the kinds in `protobuf.KINDS`).
- `table_version`: whether `Accept` asks for a server-side `Table` (kubectl get).
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

import yaml
from aiohttp import web

from etcdguard_sim.api import errors as apierrors
from etcdguard_sim.api import protobuf, selectors

__all__ = [
    "PUBLIC_PATHS",
    "authenticate",
    "dry_run",
    "errors",
    "json_response",
    "log",
    "parse_selectors",
    "read_body",
    "table_version",
]

PUBLIC_PATHS = frozenset({"/version", "/healthz", "/livez", "/readyz"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(obj: Any, status: int = 200) -> web.Response:
    """`application/json` without a charset parameter, as the real server answers."""
    body = json.dumps(obj, separators=(",", ":")).encode()
    return web.Response(body=body, status=status, headers={"Content-Type": "application/json"})


@web.middleware
async def log(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.monotonic()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    finally:
        ms = (time.monotonic() - started) * 1000
        line = f"apiserver: {request.method} {request.path_qs} {status} {ms:.1f}ms"
        print(line, file=sys.stderr, flush=True)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except apierrors.ApiError as exc:
        return json_response(exc.status, exc.code)
    except web.HTTPException as exc:
        if exc.status == 404:
            return json_response(apierrors.not_found(None).status, 404)
        if exc.status == 405:
            err = apierrors.method_not_allowed(f"{request.method} is not supported on {request.path}")
            return json_response(err.status, 405)
        raise
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        err = apierrors.internal(f"{type(exc).__name__}: {exc}")
        return json_response(err.status, err.code)


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    transport = request.transport
    if transport is not None and request.path not in PUBLIC_PATHS:
        over_tls = transport.get_extra_info("ssl_object") is not None
        if over_tls and not transport.get_extra_info("peercert"):
            raise apierrors.unauthorized()
    return await handler(request)


def table_version(accept: str) -> str | None:
    """`meta.k8s.io/v1` (or v1beta1) when `accept` asks for a Table, else None."""
    for media in accept.split(","):
        params = {}
        for param in media.split(";")[1:]:
            key, _, value = param.partition("=")
            params[key.strip()] = value.strip()
        if params.get("as") == "Table" and params.get("g") == "meta.k8s.io":
            return "meta.k8s.io/" + (params.get("v") or "v1")
    return None


async def read_body(request: web.Request) -> Any:
    """The decoded request body (None when empty); 400 when it does not parse, 415 for
    media types the server does not read."""
    raw = await request.read()
    media = request.content_type
    if media == "application/vnd.kubernetes.protobuf":
        try:
            return protobuf.decode(raw)
        except protobuf.ProtobufError as exc:
            raise apierrors.ApiError(415, "UnsupportedMediaType", str(exc)) from exc
    try:
        if media in ("application/yaml", "text/yaml", "application/x-yaml"):
            return yaml.safe_load(raw)
        if media not in ("application/json", "application/octet-stream", "text/plain") and raw:
            raise apierrors.unsupported_media(
                ["application/json", "application/yaml", "application/vnd.kubernetes.protobuf"]
            )
        return json.loads(raw) if raw.strip() else None
    except (ValueError, yaml.YAMLError) as exc:
        raise apierrors.bad_request(f"couldn't get version/kind; json parse error: {exc}") from exc


def parse_selectors(request: web.Request) -> tuple[selectors.LabelSelector, selectors.FieldSelector]:
    """`labelSelector` and `fieldSelector` of the query; 400 when one does not parse."""
    try:
        return (
            selectors.parse_label_selector(request.query.get("labelSelector")),
            selectors.parse_field_selector(request.query.get("fieldSelector")),
        )
    except selectors.SelectorError as exc:
        raise apierrors.bad_request(str(exc)) from exc


def dry_run(request: web.Request) -> bool:
    """`dryRun=All` (the only value the API accepts)."""
    values = request.query.getall("dryRun", [])
    if any(v != "All" for v in values):
        raise apierrors.bad_request(f'dryRun values must be "All", got {values}')
    return bool(values)
