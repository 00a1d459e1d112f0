"""The kinds the simulated API server knows, and the discovery documents derived from them.

Each `Resource` carries what the real kube-apiserver publishes about a kind in discovery
(group, version, plural, singular, kind, scope, short names, verbs, subresources) plus what the
simulator needs to serve it: where its objects live in etcd and which server-side printer
(`tables.py`) renders it for `kubectl get`.

Storage keys follow the brief of the simulator, close to a real cluster:
core and other built-in groups at `/kubernetes.io/<plural>/[<namespace>/]<name>`, the
OpenShift groups (served by CRDs on a real cluster) at
`/kubernetes.io/<group>/<plural>/[<namespace>/]<name>`.
Simplified: a real cluster keeps nodes under `/kubernetes.io/minions/` and services under
`/kubernetes.io/services/specs/`; here every built-in kind uses its plural.

Discovery is the legacy ("unaggregated") form: `/api`, `/api/v1`, `/apis`, `/apis/<group>`,
`/apis/<group>/<version>`. kubectl 1.32 asks for aggregated discovery first and falls back to
this form when the answer's content type is plain `application/json`.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from typing import Any

__all__ = [
    "BUILTIN_GROUPS",
    "REGISTRY",
    "Resource",
    "api_group",
    "api_group_list",
    "api_resource_list",
    "api_versions",
    "find",
    "group_versions",
    "openapi_v3_document",
    "openapi_v3_index",
]

STANDARD_VERBS: tuple[str, ...] = (
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
)

# Groups whose kinds are compiled into the real kube-apiserver (strategic merge patch works for
# them); every other group is served by a CustomResourceDefinition on a real cluster.
BUILTIN_GROUPS: frozenset[str] = frozenset({"", "apps", "certificates.k8s.io", "storage.k8s.io"})

# The kind a subresource answers with in discovery, when it is not the resource's own kind.
_SUBRESOURCE_KINDS = {"exec": "PodExecOptions"}
_SUBRESOURCE_VERBS = {"exec": ("create", "get"), "status": ("get", "patch", "update")}


@dataclasses.dataclass(frozen=True)
class Resource:
    """One kind served by the simulated API server."""

    group: str  # "" for the core group
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    verbs: tuple[str, ...] = STANDARD_VERBS
    subresources: tuple[str, ...] = ()  # "status", "exec", "approval"
    printer: str = "default"  # a key of tables.PRINTERS
    categories: tuple[str, ...] = ()

    @property
    def group_version(self) -> str:
        """`v1` for the core group, `<group>/<version>` otherwise (also the apiVersion)."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_resource(self) -> str:
        """How error messages name the resource: `pods`, `etcds.operator.openshift.io`."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def builtin(self) -> bool:
        return self.group in BUILTIN_GROUPS

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources

    def _root(self) -> str:
        if self.builtin:
            return f"/kubernetes.io/{self.plural}/"
        return f"/kubernetes.io/{self.group}/{self.plural}/"

    def prefix(self, namespace: str | None) -> str:
        """The etcd prefix of a collection: every namespace when `namespace` is None."""
        if self.namespaced and namespace:
            return f"{self._root()}{namespace}/"
        return self._root()

    def key(self, namespace: str | None, name: str) -> str:
        """The etcd key of one object."""
        if self.namespaced:
            if not namespace:
                raise ValueError(f"{self.group_resource} are namespaced: a namespace is required")
            return f"{self._root()}{namespace}/{name}"
        return f"{self._root()}{name}"

    def discovery(self) -> list[dict[str, Any]]:
        """This resource's entries in an APIResourceList (itself, then its subresources)."""
        digest = hashlib.sha256(f"{self.group_version}/{self.kind}".encode()).digest()
        entry: dict[str, Any] = {
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": list(self.verbs),
            "storageVersionHash": _b64(digest[:8]),
        }
        if self.short_names:
            entry["shortNames"] = list(self.short_names)
        if self.categories:
            entry["categories"] = list(self.categories)
        out = [entry]
        for sub in self.subresources:
            out.append(
                {
                    "name": f"{self.plural}/{sub}",
                    "singularName": "",
                    "namespaced": self.namespaced,
                    "kind": _SUBRESOURCE_KINDS.get(sub, self.kind),
                    "verbs": list(_SUBRESOURCE_VERBS.get(sub, ("get", "patch", "update"))),
                }
            )
        return out


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _core(plural: str, kind: str, *, namespaced: bool, **kw: Any) -> Resource:
    return Resource("", "v1", plural, kind.lower(), kind, namespaced, **kw)


_OPENSHIFT_STATUS = ("status",)

REGISTRY: tuple[Resource, ...] = (
    _core("namespaces", "Namespace", namespaced=False, short_names=("ns",),
          verbs=("create", "delete", "get", "list", "patch", "update", "watch"),
          subresources=("status",), printer="namespaces"),
    _core("nodes", "Node", namespaced=False, short_names=("no",), subresources=("status",),
          printer="nodes"),
    _core("pods", "Pod", namespaced=True, short_names=("po",), subresources=("status", "exec"),
          printer="pods", categories=("all",)),
    _core("secrets", "Secret", namespaced=True, printer="secrets"),
    _core("configmaps", "ConfigMap", namespaced=True, short_names=("cm",)),
    _core("services", "Service", namespaced=True, short_names=("svc",), subresources=("status",),
          categories=("all",)),
    _core("persistentvolumes", "PersistentVolume", namespaced=False, short_names=("pv",),
          subresources=("status",)),
    _core("persistentvolumeclaims", "PersistentVolumeClaim", namespaced=True,
          short_names=("pvc",), subresources=("status",)),
    _core("events", "Event", namespaced=True, short_names=("ev",)),
    _core("serviceaccounts", "ServiceAccount", namespaced=True, short_names=("sa",)),
    Resource("apps", "v1", "deployments", "deployment", "Deployment", True,
             short_names=("deploy",), subresources=("status",), printer="deployments",
             categories=("all",)),
    Resource("certificates.k8s.io", "v1", "certificatesigningrequests",
             "certificatesigningrequest", "CertificateSigningRequest", False,
             short_names=("csr",), subresources=("status", "approval"), printer="csr"),
    Resource("storage.k8s.io", "v1", "volumeattachments", "volumeattachment",
             "VolumeAttachment", False, subresources=("status",)),
    Resource("operator.openshift.io", "v1", "etcds", "etcd", "Etcd", False,
             subresources=_OPENSHIFT_STATUS),
    Resource("operator.openshift.io", "v1", "kubeapiservers", "kubeapiserver", "KubeAPIServer",
             False, subresources=_OPENSHIFT_STATUS),
    Resource("operator.openshift.io", "v1", "kubecontrollermanagers", "kubecontrollermanager",
             "KubeControllerManager", False, subresources=_OPENSHIFT_STATUS),
    Resource("operator.openshift.io", "v1", "kubeschedulers", "kubescheduler", "KubeScheduler",
             False, subresources=_OPENSHIFT_STATUS),
    Resource("config.openshift.io", "v1", "clusterversions", "clusterversion", "ClusterVersion",
             False, subresources=_OPENSHIFT_STATUS, printer="clusterversions"),
    Resource("config.openshift.io", "v1", "clusteroperators", "clusteroperator",
             "ClusterOperator", False, short_names=("co",), subresources=_OPENSHIFT_STATUS,
             printer="clusteroperators"),
    Resource("config.openshift.io", "v1", "proxies", "proxy", "Proxy", False,
             subresources=_OPENSHIFT_STATUS),
    Resource("config.openshift.io", "v1", "apiservers", "apiserver", "APIServer", False,
             subresources=_OPENSHIFT_STATUS),
    Resource("config.openshift.io", "v1", "infrastructures", "infrastructure", "Infrastructure",
             False, subresources=_OPENSHIFT_STATUS),
    Resource("machine.openshift.io", "v1beta1", "machines", "machine", "Machine", True,
             subresources=_OPENSHIFT_STATUS, printer="machines"),
)  # fmt: skip

_BY_PATH: dict[tuple[str, str, str], Resource] = {(r.group, r.version, r.plural): r for r in REGISTRY}


def find(group: str, version: str, plural: str) -> Resource | None:
    """The resource served at `/api[s]/<group>/<version>/<plural>`, or None."""
    return _BY_PATH.get((group, version, plural))


def group_versions() -> dict[str, list[str]]:
    """Every named group (not the core group) and its versions, in registry order."""
    out: dict[str, list[str]] = {}
    for r in REGISTRY:
        if r.group and r.version not in out.setdefault(r.group, []):
            out[r.group].append(r.version)
    return out


def api_versions(server_address: str) -> dict[str, Any]:
    """`GET /api`: the core group's versions."""
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    }


def api_group(group: str) -> dict[str, Any] | None:
    """`GET /apis/<group>`, or None for an unknown group."""
    versions = group_versions().get(group)
    if not versions:
        return None
    entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": entries,
        "preferredVersion": entries[0],
    }


def api_group_list() -> dict[str, Any]:
    """`GET /apis`: every named group."""
    groups = []
    for group in group_versions():
        doc = api_group(group)
        assert doc is not None
        doc.pop("kind")
        doc.pop("apiVersion")
        groups.append(doc)
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_resource_list(group: str, version: str) -> dict[str, Any] | None:
    """`GET /api/v1` or `/apis/<group>/<version>`, or None for an unknown group version."""
    members = [r for r in REGISTRY if r.group == group and r.version == version]
    if not members:
        return None
    resources: list[dict[str, Any]] = []
    for r in members:
        resources.extend(r.discovery())
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }


# ---- OpenAPI v3, reduced to what kubectl's field-validation check reads ----------------------
def openapi_v3_index() -> dict[str, Any]:
    """`GET /openapi/v3`: one document per group version."""
    paths = {}
    for gv in ["api/v1"] + [f"apis/{g}/{v}" for g, vs in group_versions().items() for v in vs]:
        digest = hashlib.sha256(gv.encode()).hexdigest()[:16].upper()
        paths[gv] = {"serverRelativeURL": f"/openapi/v3/{gv}?hash={digest}"}
    return {"paths": paths}


def openapi_v3_document(group: str, version: str) -> dict[str, Any] | None:
    """`GET /openapi/v3/api[s]/...`: the PATCH operation of each kind with its
    `x-kubernetes-group-version-kind` and `fieldValidation` parameter, and no schemas.

    kubectl (create, apply, replace) checks here whether the server validates fields itself
    (`fieldValidation=Strict`); without an OpenAPI document it refuses to send anything
    unless given `--validate=false`. Schemas are not simulated: `kubectl explain` finds none.
    """
    members = [r for r in REGISTRY if r.group == group and r.version == version]
    if not members:
        return None
    root = f"/apis/{group}/{version}" if group else f"/api/{version}"
    param = {
        "name": "fieldValidation",
        "in": "query",
        "description": "Strict, Warn or Ignore: how the server treats unknown or duplicate fields",
        "schema": {"type": "string", "uniqueItems": True},
    }
    paths: dict[str, Any] = {}
    for r in members:
        ns = "/namespaces/{namespace}" if r.namespaced else ""
        paths[f"{root}{ns}/{r.plural}/{{name}}"] = {
            "patch": {
                "operationId": f"patch{r.kind}",
                "parameters": [param],
                "responses": {"200": {"description": "OK"}},
                "x-kubernetes-action": "patch",
                "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind},
            }
        }
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.21.1+051ac4f"},
        "paths": paths,
    }
