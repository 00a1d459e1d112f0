"""The simulated cluster's kube-apiserver: the Kubernetes REST API over the real etcd.

Served: discovery (`/version`, `/api`, `/api/v1`, `/apis`, `/apis/<g>`, `/apis/<g>/<v>`),
get / list / create / update / patch / delete / deletecollection of the kinds in
`resources.REGISTRY`, the `status` and CSR `approval` subresources, `pods/exec` (handed to
`etcdguard_sim.api.podexec`), label and field selectors, server-side `Table` printing for
`kubectl get`, `dryRun=All`, and Kubernetes `Status` errors. Object semantics live in
`apistorage`, printing in `tables`, patches in `patching`, selectors in `selectors`, HTTP
plumbing in `apihttp`, protobuf request bodies in `protobuf`.

Deliberately not simulated: watch (`?watch=true` and `/watch/` paths answer 405); OpenAPI
schemas (`/openapi/v2` answers 404; `/openapi/v3` lists each kind's PATCH operation only, which
is what kubectl reads to decide that the server validates fields, so `kubectl create -f` and
`apply -f` work without `--validate=false`); aggregated discovery (kubectl falls back to the
legacy documents); `limit`/`continue` paging (every list is complete); server-side apply (415);
authorization (any client certificate signed by the API CA may do anything); protobuf answers
(requests in protobuf are read for a few kinds, answers are always JSON).

`create_app()` builds the aiohttp application without TLS so tests can serve it over plain
HTTP; `main()` (`python -m etcdguard_sim.api.server --state-dir DIR`) serves it over HTTPS with
client-certificate authentication, as the supervisor starts it. Each request is logged to
stderr as one line (method, path, status, milliseconds); bodies are never logged.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import ssl
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

from etcdguard_sim import layout
from etcdguard_sim.api import errors as apierrors
from etcdguard_sim.api import etcdstore, patching, podexec, resources, tables
from etcdguard_sim.api import httpio as apihttp
from etcdguard_sim.api import storage as apistorage

__all__ = ["EXEC_RUNNER", "STORAGE", "VERSION_INFO", "create_app", "main", "serve", "server_ssl_context"]

VERSION_INFO = {
    "major": "1",
    "minor": "21",
    "gitVersion": "v1.21.1+051ac4f",
    "gitCommit": "051ac4f6a1a6b1a3b2c4e4d9b1f8c1a6a5e3b2d1",
    "gitTreeState": "clean",
    "buildDate": "2021-08-31T11:43:47Z",
    "goVersion": "go1.16.6",
    "compiler": "gc",
    "platform": "linux/amd64",
}

STORAGE = web.AppKey("storage", apistorage.Storage)
EXEC_RUNNER: web.AppKey[podexec.ExecRunner | None] = web.AppKey("exec_runner")
_PATCH_TYPES = (patching.JSON_PATCH, patching.MERGE, patching.STRATEGIC)
_json = apihttp.json_response


def _respond_object(request: web.Request, res: resources.Resource, obj: dict[str, Any]) -> web.Response:
    table = apihttp.table_version(request.headers.get("Accept", ""))
    if table is None:
        return _json(obj)
    storage = request.app[STORAGE]
    return _json(
        tables.to_table(
            res, [obj], now=storage.clock(), api_version=table,
            include_object=request.query.get("includeObject", "Metadata"),
            resource_version=obj["metadata"].get("resourceVersion", ""),
        )
    )  # fmt: skip


# ---- discovery ---------------------------------------------------------------------------
async def _version(request: web.Request) -> web.StreamResponse:
    return _json(VERSION_INFO)


async def _healthz(request: web.Request) -> web.StreamResponse:
    if request.path == "/readyz":
        await request.app[STORAGE].revision()
    return web.Response(text="ok")


async def _openapi_v3(request: web.Request) -> web.StreamResponse:
    parts = [p for p in request.path.split("/") if p][2:]
    if not parts:
        return _json(resources.openapi_v3_index())
    doc = None
    if parts[0] == "api" and len(parts) == 2:
        doc = resources.openapi_v3_document("", parts[1])
    elif parts[0] == "apis" and len(parts) == 3:
        doc = resources.openapi_v3_document(parts[1], parts[2])
    if doc is None:
        raise apierrors.not_found(None)
    return _json(doc)


def _discovery(parts: list[str], request: web.Request) -> dict[str, Any] | None:
    """The discovery document at `parts`, or None when `parts` is deeper than discovery."""
    doc: dict[str, Any] | None
    if parts == ["api"]:
        return resources.api_versions(request.host)
    if parts == ["apis"]:
        return resources.api_group_list()
    if len(parts) == 2 and parts[0] == "api":
        doc = resources.api_resource_list("", parts[1])
    elif len(parts) == 2:
        doc = resources.api_group(parts[1])
    elif len(parts) == 3 and parts[0] == "apis":
        doc = resources.api_resource_list(parts[1], parts[2])
    else:
        return None
    if doc is None:
        raise apierrors.not_found(None)
    return doc


# ---- the resource API --------------------------------------------------------------------
def _target(parts: list[str]) -> tuple[resources.Resource, str | None, str | None, str | None]:
    """(resource, namespace, name, subresource) of `/api/v1/...` or `/apis/g/v/...`."""
    group, version, rest = ("", parts[1], parts[2:]) if parts[0] == "api" else (parts[1], parts[2], parts[3:])
    if rest[0] == "watch":
        raise apierrors.method_not_allowed(
            "watch is not supported by the simulated API server: list the objects again instead"
        )
    namespace = None
    if rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in ("status", "finalize"):
            rest = rest[2:]
    res = resources.find(group, version, rest[0])
    if res is None or len(rest) > 3:
        raise apierrors.not_found(None)
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    if res.plural == "namespaces":
        namespace = None
    if (not res.namespaced and namespace) or (sub is not None and sub not in res.subresources):
        raise apierrors.not_found(None)
    if res.namespaced and name is not None and not namespace:
        raise apierrors.not_found(None)
    return res, namespace, name, sub


async def _api(request: web.Request) -> web.StreamResponse:
    parts = [p for p in request.path.split("/") if p]
    doc = _discovery(parts, request)
    if doc is not None:
        if request.method != "GET":
            raise apierrors.method_not_allowed(f"{request.method} is not supported on {request.path}")
        return _json(doc)
    res, ns, name, sub = _target(parts)
    storage = request.app[STORAGE]
    method = request.method
    if sub == "exec":
        if method not in ("GET", "POST"):
            raise apierrors.method_not_allowed(f"{method} is not supported on pods/exec")
        pod = await storage.get(res, ns, name or "")
        runner = request.app[EXEC_RUNNER]
        if runner is None:
            raise apierrors.bad_request(
                "pods/exec is not available: this API server was started without an exec runner"
            )
        return await podexec.handle_exec(request, pod=pod, runner=runner)
    if name is None:
        return await _collection(request, res, ns)
    if method == "GET":
        return _respond_object(request, res, await storage.get(res, ns, name))
    if method == "PUT":
        obj = await storage.update(
            res, ns, name, await apihttp.read_body(request), subresource=sub, dry_run=apihttp.dry_run(request)
        )
        return _json(obj)
    if method == "PATCH":
        media = request.content_type
        accepted = list(_PATCH_TYPES if res.builtin else _PATCH_TYPES[:2])
        if media not in accepted:
            raise apierrors.unsupported_media([*accepted, "application/apply-patch+yaml"])
        raw = await request.read()
        obj = await storage.patch(
            res, ns, name, media, raw, subresource=sub, dry_run=apihttp.dry_run(request)
        )
        return _json(obj)
    if method == "DELETE" and sub is None:
        options = await apihttp.read_body(request) or {}
        if not isinstance(options, dict):
            raise apierrors.bad_request("the DeleteOptions body must be a JSON object")
        obj = await storage.delete(
            res, ns, name, preconditions=options.get("preconditions"), dry_run=apihttp.dry_run(request)
        )
        if res.plural in ("pods", "namespaces"):
            return _json(obj)
        return _json(apierrors.status_success(res, name, obj["metadata"].get("uid")))
    raise apierrors.method_not_allowed(f"{method} is not supported on {request.path}")


async def _collection(request: web.Request, res: resources.Resource, ns: str | None) -> web.StreamResponse:
    storage = request.app[STORAGE]
    if request.method == "GET":
        if request.query.get("watch") in ("true", "1"):
            raise apierrors.method_not_allowed(
                "watch is not supported by the simulated API server: list the objects again instead"
            )
        labels, fields = apihttp.parse_selectors(request)
        items, revision = await storage.list(res, ns, labels=labels, fields=fields)
        table = apihttp.table_version(request.headers.get("Accept", ""))
        if table is not None:
            return _json(
                tables.to_table(
                    res, items, now=storage.clock(), api_version=table,
                    include_object=request.query.get("includeObject", "Metadata"),
                    resource_version=str(revision),
                )
            )  # fmt: skip
        return _json(
            {
                "kind": res.list_kind,
                "apiVersion": res.group_version,
                "metadata": {"resourceVersion": str(revision)},
                "items": items,
            }
        )
    if res.namespaced and not ns:
        raise apierrors.not_found(None)
    if request.method == "POST":
        created = await storage.create(
            res, ns, await apihttp.read_body(request), dry_run=apihttp.dry_run(request)
        )
        return _json(created, 201)
    if request.method == "DELETE":
        labels, fields = apihttp.parse_selectors(request)
        items, _ = await storage.list(res, ns, labels=labels, fields=fields)
        dry_run = apihttp.dry_run(request)
        deleted = []
        for item in items:
            meta = item["metadata"]
            try:
                deleted.append(
                    await storage.delete(res, meta.get("namespace"), meta["name"], dry_run=dry_run)
                )
            except apierrors.ApiError as exc:
                if exc.code != 404:
                    raise
        return _json(
            {"kind": res.list_kind, "apiVersion": res.group_version, "metadata": {}, "items": deleted}
        )
    raise apierrors.method_not_allowed(f"{request.method} is not supported on {request.path}")


# ---- the application ---------------------------------------------------------------------
def create_app(
    store: etcdstore.EtcdStore,
    *,
    exec_runner: podexec.ExecRunner | None = None,
    clock: apistorage.Clock | None = None,
) -> web.Application:
    """The API server application over `store` (plain HTTP; see `serve` for TLS).

    `exec_runner` is handed to `podexec.handle_exec` for `pods/exec`; `clock` returns the
    current UTC time (creation timestamps, ages in tables). The caller owns and closes `store`.
    """
    app = web.Application(
        middlewares=[apihttp.log, apihttp.errors, apihttp.authenticate], client_max_size=4 * 1024 * 1024
    )
    app[STORAGE] = apistorage.Storage(store, clock=clock)
    app[EXEC_RUNNER] = exec_runner
    app.router.add_get("/version", _version)
    for path in ("/healthz", "/livez", "/readyz"):
        app.router.add_get(path, _healthz)
    app.router.add_get("/openapi/v3", _openapi_v3)
    app.router.add_get("/openapi/v3/{tail:.*}", _openapi_v3)
    app.router.add_route("*", "/api", _api)
    app.router.add_route("*", "/api/{tail:.*}", _api)
    app.router.add_route("*", "/apis", _api)
    app.router.add_route("*", "/apis/{tail:.*}", _api)
    return app


async def serve(app: web.Application, *, host: str, port: int, ssl_context: ssl.SSLContext | None) -> None:
    """Serve `app` on host:port until cancelled."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
        await site.start()
        print(
            f"apiserver: serving on {'https' if ssl_context else 'http'}://{host}:{port}",
            file=sys.stderr,
            flush=True,
        )
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def server_ssl_context(spec: layout.SimSpec) -> ssl.SSLContext:
    """TLS of the API server: its serving pair, and client certificates checked against the API CA."""
    api_dir = spec.pki_dir / "api"
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(spec.api_ca))
    ctx.load_cert_chain(str(api_dir / "server.crt"), str(api_dir / "server.key"))
    ctx.verify_mode = ssl.CERT_OPTIONAL  # no certificate -> 401 from _authenticate
    return ctx


async def _run(spec: layout.SimSpec) -> None:
    etcd_dir = spec.pki_dir / "etcd"
    store = etcdstore.EtcdStore(
        spec.etcd_endpoints(),
        ca_file=str(spec.etcd_ca),
        cert_file=str(etcd_dir / "apiserver-etcd-client.crt"),
        key_file=str(etcd_dir / "apiserver-etcd-client.key"),
    )
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, task.cancel)
    runner = podexec.SimExecRunner(spec)
    try:
        await serve(
            create_app(store, exec_runner=runner),
            host=spec.api_host,
            port=layout.API_PORT,
            ssl_context=server_ssl_context(spec),
        )
    except asyncio.CancelledError:
        print("apiserver: stopping", file=sys.stderr, flush=True)
    finally:
        await store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="etcdguard_sim.api.server")
    parser.add_argument("--state-dir", required=True, type=Path)
    args = parser.parse_args(argv)
    spec = layout.SimSpec.load(args.state_dir)
    asyncio.run(_run(spec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
