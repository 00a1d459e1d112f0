"""The Kubernetes/OpenShift API, as etcdguard needs it: one small facade over `kubernetes`.

Objects come back as plain dicts (the JSON the API served). SDK exceptions are translated at
this boundary: 404 -> `NotFoundError`; 409/422/4xx -> `PermanentError`; 429, 5xx, refused or
reset connections and timeouts -> `TransientError` (retried by the tasks).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import urllib3
from kubernetes import client, config, stream
from kubernetes.client.exceptions import ApiException

from etcdguard.core import errors
from etcdguard.core.profile import ApiAccess

__all__ = ["RESOURCES", "KubeClient"]

# kind -> (api path prefix, plural, namespaced)
RESOURCES: dict[str, tuple[str, str, bool]] = {
    "Node": ("/api/v1", "nodes", False),
    "Pod": ("/api/v1", "pods", True),
    "Secret": ("/api/v1", "secrets", True),
    "Namespace": ("/api/v1", "namespaces", False),
    "ClusterVersion": ("/apis/config.openshift.io/v1", "clusterversions", False),
    "ClusterOperator": ("/apis/config.openshift.io/v1", "clusteroperators", False),
    "Proxy": ("/apis/config.openshift.io/v1", "proxies", False),
    "APIServer": ("/apis/config.openshift.io/v1", "apiservers", False),
    "Etcd": ("/apis/operator.openshift.io/v1", "etcds", False),
    "KubeAPIServer": ("/apis/operator.openshift.io/v1", "kubeapiservers", False),
    "KubeControllerManager": ("/apis/operator.openshift.io/v1", "kubecontrollermanagers", False),
    "KubeScheduler": ("/apis/operator.openshift.io/v1", "kubeschedulers", False),
    "Machine": ("/apis/machine.openshift.io/v1beta1", "machines", True),
    "CertificateSigningRequest": ("/apis/certificates.k8s.io/v1", "certificatesigningrequests", False),
    "PersistentVolume": ("/api/v1", "persistentvolumes", False),
    "VolumeAttachment": ("/apis/storage.k8s.io/v1", "volumeattachments", False),
}

_TIMEOUT = (5.0, 30.0)


class KubeClient:
    """Reads (and, for the recovery flows, writes) cluster objects. Use as a context manager."""

    def __init__(self, access: ApiAccess) -> None:
        configuration = client.Configuration()
        try:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=str(access.kubeconfig),
                context=access.context,
                client_configuration=configuration,
            )
        except (config.ConfigException, OSError, ValueError) as exc:
            raise errors.ConfigError(
                f"api.kubeconfig {access.kubeconfig} cannot be used: {errors.truncate_remote(str(exc))}. "
                "Point the profile at a valid kubeconfig (and context)."
            ) from exc
        configuration.retries = 0  # the tasks retry, with backoff, on TransientError only
        self.host = configuration.host
        self._api = client.ApiClient(configuration)

    def __enter__(self) -> KubeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._api.close()  # type: ignore[no-untyped-call]

    @staticmethod
    def path(kind: str, name: str | None = None, *, namespace: str | None = None) -> str:
        try:
            prefix, plural, namespaced = RESOURCES[kind]
        except KeyError:
            raise errors.ConfigError(
                f"Kind {kind!r} is not one etcdguard reads; known: {sorted(RESOURCES)}."
            ) from None
        base = (
            f"{prefix}/namespaces/{namespace}/{plural}" if namespaced and namespace else f"{prefix}/{plural}"
        )
        return f"{base}/{name}" if name else base

    @contextmanager
    def _translate(self, what: str) -> Iterator[None]:
        try:
            yield
        except ApiException as exc:
            body = _status_message(exc)
            if exc.status == 404:
                raise errors.NotFoundError(f"{what}: not found ({body}).") from exc
            if exc.status in (429,) or (exc.status or 0) >= 500 or exc.status == 0:
                raise errors.TransientError(
                    f"{what}: the API answered {exc.status} ({body}); retrying may help."
                ) from exc
            raise errors.PermanentError(f"{what}: the API refused with {exc.status} ({body}).") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise errors.TransientError(
                f"{what}: the API at {self.host} is unreachable ({type(exc).__name__}: "
                f"{errors.truncate_remote(str(exc), limit=200)}); the control plane may be down."
            ) from exc

    def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        method, url, headers, payload, post = self._api.param_serialize(
            method=method,
            resource_path=path,
            query_params=list((query or {}).items()),
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self._api.call_api(
            method, url, header_params=headers, body=payload, post_params=post, _request_timeout=_TIMEOUT
        )
        data = response.read()  # type: ignore[no-untyped-call]
        if not 200 <= response.status < 300:
            raise ApiException(http_resp=response)
        return json.loads(data) if data else None

    def get(self, kind: str, name: str, *, namespace: str | None = None) -> dict[str, Any]:
        """One object; `NotFoundError` when it does not exist."""
        what = f"Reading {kind} {namespace + '/' if namespace else ''}{name}"
        with self._translate(what):
            result: dict[str, Any] = self._call("GET", self.path(kind, name, namespace=namespace))
        return result

    def list_objects(
        self, kind: str, *, namespace: str | None = None, labels: str | None = None, fields: str | None = None
    ) -> list[dict[str, Any]]:
        """Objects of `kind` (in `namespace`, matching the label/field selectors)."""
        query = {k: v for k, v in (("labelSelector", labels), ("fieldSelector", fields)) if v}
        with self._translate(f"Listing {kind}"):
            result = self._call("GET", self.path(kind, namespace=namespace), query=query)
        items: list[dict[str, Any]] = result.get("items") or []
        return items

    def patch(
        self,
        kind: str,
        name: str,
        patch: Mapping[str, Any],
        *,
        namespace: str | None = None,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        """A JSON merge patch."""
        path = self.path(kind, name, namespace=namespace) + (f"/{subresource}" if subresource else "")
        with self._translate(f"Patching {kind} {name}"):
            result: dict[str, Any] = self._call(
                "PATCH", path, dict(patch), content_type="application/merge-patch+json"
            )
        return result

    def replace(
        self,
        kind: str,
        name: str,
        obj: Mapping[str, Any],
        *,
        subresource: str | None = None,
        namespace: str | None = None,
    ) -> dict[str, Any]:
        """PUT with the object's resourceVersion (409 -> PermanentError: re-read and decide again)."""
        path = self.path(kind, name, namespace=namespace) + (f"/{subresource}" if subresource else "")
        with self._translate(f"Updating {kind} {name}"):
            result: dict[str, Any] = self._call("PUT", path, dict(obj))
        return result

    def create(self, kind: str, obj: Mapping[str, Any], *, namespace: str | None = None) -> dict[str, Any]:
        """POST a new object (409 AlreadyExists -> PermanentError)."""
        name = str((obj.get("metadata") or {}).get("name", ""))
        with self._translate(f"Creating {kind} {name}"):
            result: dict[str, Any] = self._call("POST", self.path(kind, namespace=namespace), dict(obj))
        return result

    def delete(self, kind: str, name: str, *, namespace: str | None = None) -> None:
        """DELETE one object; `NotFoundError` when it is already gone."""
        with self._translate(f"Deleting {kind} {name}"):
            self._call("DELETE", self.path(kind, name, namespace=namespace))

    def exec(
        self, namespace: str, pod: str, container: str, argv: list[str], *, timeout: float = 60.0
    ) -> tuple[int, str, str]:
        """Run `argv` in a container (`oc rsh`/`kubectl exec`); returns (exit code, stdout, stderr)."""
        with self._translate(f"Running {argv[0]} in {namespace}/{pod} ({container})"):
            ws = stream.stream(
                client.CoreV1Api(self._api).connect_get_namespaced_pod_exec,
                pod,
                namespace,
                container=container,
                command=argv,
                stdout=True,
                stderr=True,
                stdin=False,
                tty=False,
                _preload_content=False,
            )
            try:
                ws.run_forever(timeout=timeout)
                out, err = ws.read_stdout(), ws.read_stderr()
                code = ws.returncode
            finally:
                ws.close()
                if ws.sock is not None and ws.sock.sock is not None:
                    ws.sock.sock.close()
        if code is None:
            raise errors.TransientError(
                f"Running {argv[0]} in {namespace}/{pod} did not finish within {timeout:g} s."
            )
        return int(code), out, err


def _status_message(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "")
        message = body.get("message") if isinstance(body, dict) else None
    except (TypeError, ValueError):
        message = None
    return errors.truncate_remote(str(message or exc.reason or exc.body or "no details"), limit=300)
