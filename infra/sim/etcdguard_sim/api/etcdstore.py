"""The simulated API server's storage: a small async client of etcd's v3 JSON gateway.

Objects live in the real etcd cluster, as the Kubernetes API server keeps them: JSON under
`/kubernetes.io/<resource>/<namespace>/<name>`, with the key's `mod_revision` as the object's
`resourceVersion`. Optimistic concurrency is an etcd transaction comparing `mod_revision`, so a
stale write fails exactly as it does on a real cluster.

The gateway (`POST /v3/kv/range|put|deleterange|txn`, keys and values base64, int64 as strings)
is part of every etcd 3.4 server, so no gRPC stubs are needed. Requests go to the members in
turn; a member that refuses the connection is skipped, so the store keeps working while a
quorum of members answers.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import ssl
from collections.abc import Sequence
from typing import Any

import aiohttp

__all__ = [
    "KV",
    "AlreadyExists",
    "Conflict",
    "EtcdStore",
    "NotFound",
    "StoreError",
    "Unavailable",
]


class StoreError(Exception):
    """Base of the store's errors."""


class NotFound(StoreError):
    """The key does not exist."""


class AlreadyExists(StoreError):
    """create() found the key already there."""


class Conflict(StoreError):
    """The key's mod_revision is not the expected one (a stale resourceVersion)."""


class Unavailable(StoreError):
    """No etcd member answered (no quorum, or every member down)."""


@dataclasses.dataclass(frozen=True)
class KV:
    key: str
    value: bytes
    mod_revision: int
    create_revision: int


def _b64(s: str | bytes) -> str:
    raw = s.encode() if isinstance(s, str) else s
    return base64.b64encode(raw).decode()


def _prefix_end(prefix: str) -> str:
    raw = bytearray(prefix.encode())
    for i in range(len(raw) - 1, -1, -1):
        if raw[i] < 0xFF:
            raw[i] += 1
            return base64.b64encode(bytes(raw[: i + 1])).decode()
    return _b64(b"\0")


def _kv(item: dict[str, Any]) -> KV:
    return KV(
        key=base64.b64decode(item["key"]).decode(),
        value=base64.b64decode(item.get("value", "")),
        mod_revision=int(item.get("mod_revision", 0)),
        create_revision=int(item.get("create_revision", 0)),
    )


class EtcdStore:
    """Async key-value access to the etcd cluster. Create it inside a running event loop."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        timeout: float = 5.0,
    ) -> None:
        """`https://` endpoints need `ca_file`, `cert_file` and `key_file` (client TLS)."""
        if not endpoints:
            raise ValueError("EtcdStore needs at least one endpoint")
        self._endpoints = list(endpoints)
        ssl_arg: ssl.SSLContext | bool = False
        if ca_file is not None:
            ctx = ssl.create_default_context(cafile=ca_file)
            if cert_file is not None and key_file is not None:
                ctx.load_cert_chain(cert_file, key_file)
            ssl_arg = ctx
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ssl_arg),
            timeout=aiohttp.ClientTimeout(total=timeout),
        )
        self._preferred = 0

    async def close(self) -> None:
        await self._session.close()

    async def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        errors: list[str] = []
        n = len(self._endpoints)
        for attempt in range(n):
            i = (self._preferred + attempt) % n
            url = self._endpoints[i] + path
            try:
                async with self._session.post(url, data=json.dumps(body)) as resp:
                    text = await resp.text()
                    if resp.status != 200:
                        # 503 and friends: this member cannot serve (no leader, stopping).
                        errors.append(f"{self._endpoints[i]}: HTTP {resp.status} {text[:200]}")
                        continue
                    self._preferred = i
                    result: dict[str, Any] = json.loads(text)
                    return result
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                errors.append(f"{self._endpoints[i]}: {type(exc).__name__}: {exc}")
        raise Unavailable("no etcd member answered: " + "; ".join(errors))

    async def get(self, key: str) -> KV | None:
        out = await self._call("/v3/kv/range", {"key": _b64(key)})
        kvs = out.get("kvs") or []
        return _kv(kvs[0]) if kvs else None

    async def list(self, prefix: str) -> tuple[list[KV], int]:
        """Every key under `prefix`, sorted by key, and the store's current revision."""
        out = await self._call("/v3/kv/range", {"key": _b64(prefix), "range_end": _prefix_end(prefix)})
        revision = int(out.get("header", {}).get("revision", 0))
        return [_kv(item) for item in out.get("kvs") or []], revision

    async def revision(self) -> int:
        out = await self._call("/v3/kv/range", {"key": _b64("\0"), "count_only": True})
        return int(out.get("header", {}).get("revision", 0))

    async def create(self, key: str, value: bytes) -> int:
        """Put `key` only if absent; returns the new mod_revision."""
        out = await self._call(
            "/v3/kv/txn",
            {
                "compare": [
                    {"key": _b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}
                ],
                "success": [{"request_put": {"key": _b64(key), "value": _b64(value)}}],
            },
        )
        if not out.get("succeeded"):
            raise AlreadyExists(key)
        return int(out["header"]["revision"])

    async def update(self, key: str, value: bytes, *, expected_mod_revision: int | None) -> int:
        """Replace an existing key; with `expected_mod_revision`, only if unchanged since."""
        if expected_mod_revision is None:
            compare = {"key": _b64(key), "target": "CREATE", "result": "GREATER", "create_revision": "0"}
        else:
            compare = {
                "key": _b64(key),
                "target": "MOD",
                "result": "EQUAL",
                "mod_revision": str(expected_mod_revision),
            }
        out = await self._call(
            "/v3/kv/txn",
            {
                "compare": [compare],
                "success": [{"request_put": {"key": _b64(key), "value": _b64(value)}}],
                "failure": [{"request_range": {"key": _b64(key)}}],
            },
        )
        if out.get("succeeded"):
            return int(out["header"]["revision"])
        responses = out.get("responses") or [{}]
        kvs = responses[0].get("response_range", {}).get("kvs") or []
        if not kvs:
            raise NotFound(key)
        raise Conflict(key)

    async def delete(self, key: str, *, expected_mod_revision: int | None = None) -> KV:
        """Delete `key`; returns what it held. NotFound if absent, Conflict if changed."""
        compare: dict[str, Any]
        if expected_mod_revision is None:
            compare = {"key": _b64(key), "target": "CREATE", "result": "GREATER", "create_revision": "0"}
        else:
            compare = {
                "key": _b64(key),
                "target": "MOD",
                "result": "EQUAL",
                "mod_revision": str(expected_mod_revision),
            }
        out = await self._call(
            "/v3/kv/txn",
            {
                "compare": [compare],
                "success": [{"request_delete_range": {"key": _b64(key), "prev_kv": True}}],
                "failure": [{"request_range": {"key": _b64(key)}}],
            },
        )
        responses = out.get("responses") or [{}]
        if out.get("succeeded"):
            prev = responses[0].get("response_delete_range", {}).get("prev_kvs") or []
            if not prev:
                raise NotFound(key)
            return _kv(prev[0])
        kvs = responses[0].get("response_range", {}).get("kvs") or []
        if not kvs:
            raise NotFound(key)
        raise Conflict(key)
