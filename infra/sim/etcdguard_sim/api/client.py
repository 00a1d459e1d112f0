"""A tiny synchronous HTTPS client of the simulated API, for the simulator's own use (seeding,
status, fault injection). It reads the kubeconfig's certificates from the PKI directory and maps
kinds to URLs through the server's discovery documents, exactly as any client would.

Product code talks to the API through the `kubernetes` package; this module exists so the
simulator does not depend on the product.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from typing import Any

from etcdguard_sim import layout

__all__ = ["ApiClient", "ApiError"]


class ApiError(Exception):
    def __init__(self, status: int, body: str, *, method: str, path: str) -> None:
        super().__init__(f"{method} {path} answered HTTP {status}: {body[:300]}")
        self.status = status
        self.body = body


class ApiClient:
    def __init__(self, spec: layout.SimSpec, *, timeout: float = 10.0) -> None:
        self.base = spec.api_url
        self.timeout = timeout
        ctx = ssl.create_default_context(cafile=str(spec.api_ca))
        api_dir = spec.pki_dir / "api"
        ctx.load_cert_chain(str(api_dir / "admin.crt"), str(api_dir / "admin.key"))
        self._ctx = ctx
        self._resources: dict[tuple[str, str], tuple[str, bool]] | None = None

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
    ) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, context=self._ctx, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise ApiError(exc.code, exc.read().decode(errors="replace"), method=method, path=path) from exc
        return json.loads(raw) if raw else None

    def _discover(self) -> dict[tuple[str, str], tuple[str, bool]]:
        if self._resources is None:
            found: dict[tuple[str, str], tuple[str, bool]] = {}
            versions = ["/api/v1"]
            for group in self.request("GET", "/apis").get("groups", []):
                versions += [f"/apis/{v['groupVersion']}" for v in group["versions"]]
            for base in versions:
                doc = self.request("GET", base)
                for res in doc.get("resources", []):
                    if "/" in res["name"]:
                        continue
                    found[(doc["groupVersion"], res["kind"])] = (res["name"], res["namespaced"])
            self._resources = found
        return self._resources

    def path_for(self, api_version: str, kind: str, *, namespace: str | None, name: str = "") -> str:
        plural, namespaced = self._discover()[(api_version, kind)]
        root = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        ns = f"/namespaces/{namespace}" if namespaced and namespace else ""
        tail = f"/{name}" if name else ""
        return f"{root}{ns}/{plural}{tail}"

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        """POST the object, then PUT its status (the API ignores status on create)."""
        meta = obj["metadata"]
        ns = meta.get("namespace")
        collection = self.path_for(obj["apiVersion"], obj["kind"], namespace=ns)
        created: dict[str, Any] = self.request("POST", collection, obj)
        if obj.get("status"):
            created["status"] = obj["status"]
            item = self.path_for(obj["apiVersion"], obj["kind"], namespace=ns, name=meta["name"])
            created = self.request("PUT", item + "/status", created)
        return created

    def get(self, api_version: str, kind: str, name: str, *, namespace: str | None = None) -> Any:
        return self.request("GET", self.path_for(api_version, kind, namespace=namespace, name=name))
