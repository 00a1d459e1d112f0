"""The simulated API server against one real etcd 3.4, driven by the `kubernetes` Python client,
plain HTTP, `etcdctl` and the real `kubectl` 1.32 (served over plain HTTP on 127.0.8.100)."""

from __future__ import annotations

import base64
import concurrent.futures
import datetime as dt
import json
import os
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from etcdguard_sim import layout, pki
from etcdguard_sim.api import server as apiserver
from etcdguard_sim.api import tables
from kubernetes import client, dynamic
from kubernetes.client.exceptions import ApiException

from tests.integration.conftest_apiserver import (
    ApiServer,
    api_server,
    etcd_server,
    running_server,
)

pytestmark = pytest.mark.integration
_FIXTURES = (api_server, etcd_server)  # used by name as test parameters

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
OPERATOR = ("operator.openshift.io", "v1")
CONFIG = ("config.openshift.io", "v1")
MACHINES = ("machine.openshift.io", "v1beta1")
NODE_INFO = {
    "architecture": "amd64", "bootID": "b", "containerRuntimeVersion": "cri-o://1.21.2",
    "kernelVersion": "4.18.0", "kubeProxyVersion": "v1.21.1+051ac4f", "kubeletVersion": "v1.21.1+051ac4f",
    "machineID": "m", "operatingSystem": "linux", "osImage": "RHCOS 48", "systemUUID": "u",
}  # fmt: skip
TABLE_ACCEPT = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"


def ts(delta: dt.timedelta) -> str:
    return (NOW - delta).strftime("%Y-%m-%dT%H:%M:%SZ")


def http(
    server: ApiServer,
    method: str,
    path: str,
    body: bytes | None = None,
    *,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    url = server.url + path
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - http to loopback
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def body_of(exc: pytest.ExceptionInfo[ApiException]) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(exc.value.body)
    return out


@pytest.fixture(scope="module")
def api(api_server: ApiServer) -> Iterator[client.ApiClient]:
    api_client = client.ApiClient(client.Configuration(host=api_server.url))
    try:
        yield api_client
    finally:
        api_client.close()


def _csr_request() -> str:
    pem = b"-----BEGIN CERTIFICATE REQUEST-----\nMIIBtest\n-----END CERTIFICATE REQUEST-----\n"
    return base64.b64encode(pem).decode()


@pytest.fixture(scope="module")
def seeded(api: client.ApiClient) -> None:
    """A tiny cluster: two nodes, the etcd operator, a cluster operator, a cluster version,
    a machine, two CSRs (pending; approved and issued)."""
    global NOW  # ages are relative to the seeding, not to the (much earlier) collection
    NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    for ns in ("openshift-machine-api", "openshift-etcd"):
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    nodes = [
        ("ip-127-0-8-1.ec2.internal", "master", "True", False, dt.timedelta(days=2, hours=3)),
        ("ip-127-0-8-11.ec2.internal", "worker", "Unknown", True, dt.timedelta(minutes=15)),
    ]
    for name, role, ready, unschedulable, age in nodes:
        body = {
            "metadata": {
                "name": name,
                "labels": {f"node-role.kubernetes.io/{role}": ""},
                "creationTimestamp": ts(age),
            },
            "spec": {"unschedulable": unschedulable},
            "status": {
                "conditions": [{"type": "Ready", "status": ready}],
                "addresses": [{"type": "InternalIP", "address": "127.0.8.1"}],
                "nodeInfo": NODE_INFO,
            },
        }
        core.create_node(body)
    custom.create_cluster_custom_object(
        *OPERATOR,
        "etcds",
        {
            "apiVersion": "operator.openshift.io/v1",
            "kind": "Etcd",
            "metadata": {"name": "cluster"},
            "spec": {"managementState": "Managed"},
        },
    )
    custom.patch_cluster_custom_object_status(
        *OPERATOR,
        "etcds",
        "cluster",
        {
            "status": {
                "conditions": [
                    {
                        "type": "EtcdMembersAvailable",
                        "status": "True",
                        "reason": "EtcdQuorate",
                        "message": "3 members are available",
                    }
                ]
            }
        },
    )
    custom.create_cluster_custom_object(*CONFIG, "clusteroperators", {"metadata": {"name": "etcd"}})
    custom.patch_cluster_custom_object_status(
        *CONFIG,
        "clusteroperators",
        "etcd",
        {
            "status": {
                "versions": [{"name": "operator", "version": "4.8.12"}],
                "conditions": [
                    {
                        "type": "Available",
                        "status": "True",
                        "lastTransitionTime": ts(dt.timedelta(hours=3, minutes=12)),
                    },
                    {"type": "Progressing", "status": "False"},
                    {"type": "Degraded", "status": "False"},
                ],
            }
        },
    )
    custom.create_namespaced_custom_object(
        *MACHINES,
        "openshift-machine-api",
        "machines",
        {
            "metadata": {
                "name": "demo-x-master-0",
                "creationTimestamp": ts(dt.timedelta(days=35)),
                "labels": {
                    "machine.openshift.io/instance-type": "m4.xlarge",
                    "machine.openshift.io/region": "us-east-1",
                    "machine.openshift.io/zone": "us-east-1a",
                },
            },
            "spec": {"providerID": "aws:///us-east-1a/i-0123"},
        },
    )
    custom.patch_namespaced_custom_object_status(
        *MACHINES, "openshift-machine-api", "machines", "demo-x-master-0", {"status": {"phase": "Running"}}
    )
    certs = client.CertificatesV1Api(api)
    for name in ("csr-pending", "csr-issued"):
        certs.create_certificate_signing_request(
            client.V1CertificateSigningRequest(
                metadata=client.V1ObjectMeta(name=name),
                spec=client.V1CertificateSigningRequestSpec(
                    request=_csr_request(),
                    signer_name="kubernetes.io/kubelet-serving",
                    username="system:node:ip-127-0-8-1.ec2.internal",
                    usages=["digital signature", "server auth"],
                ),
            )
        )
    certs.patch_certificate_signing_request_status("csr-issued", {"status": {
        "conditions": [{"type": "Approved", "status": "True", "reason": "AutoApproved"}],
        "certificate": base64.b64encode(b"cert").decode()}})  # fmt: skip


# ---- discovery, storage, errors ----------------------------------------------------------
def test_version_and_discovery(api_server: ApiServer, api: client.ApiClient) -> None:
    assert http(api_server, "GET", "/version")[1]["gitVersion"] == "v1.21.1+051ac4f"
    core = {r["name"]: r for r in http(api_server, "GET", "/api/v1")[1]["resources"]}
    assert core["pods/exec"]["kind"] == "PodExecOptions"
    assert core["pods/status"]["verbs"] == ["get", "patch", "update"]
    assert core["nodes"]["shortNames"] == ["no"]
    assert not core["nodes"]["namespaced"]
    csr = {r["name"]: r for r in http(api_server, "GET", "/apis/certificates.k8s.io/v1")[1]["resources"]}
    assert csr["certificatesigningrequests"]["shortNames"] == ["csr"]
    assert "certificatesigningrequests/approval" in csr
    groups = {g["name"] for g in http(api_server, "GET", "/apis")[1]["groups"]}
    assert {"apps", "operator.openshift.io", "config.openshift.io", "machine.openshift.io"} <= groups
    assert http(api_server, "GET", "/openapi/v2")[0] == 404
    dyn = dynamic.DynamicClient(api)
    etcd = dyn.resources.get(api_version="operator.openshift.io/v1", kind="Etcd")
    assert (etcd.name, etcd.namespaced) == ("etcds", False)
    machine = dyn.resources.get(api_version="machine.openshift.io/v1beta1", kind="Machine")
    assert (machine.name, machine.namespaced) == ("machines", True)
    assert dyn.resources.get(short_names=["co"]).kind == "ClusterOperator"


def test_namespaced_crud_and_error_bodies(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="crud")))
    meta = client.V1ObjectMeta(name="s1", labels={"a": "1"})
    created = core.create_namespaced_secret("crud", client.V1Secret(metadata=meta, string_data={"k": "v"}))
    assert created.metadata.namespace == "crud"
    assert created.metadata.generation == 1
    assert len(created.metadata.uid) == 36
    assert created.metadata.creation_timestamp is not None
    assert created.data == {"k": base64.b64encode(b"v").decode()}
    got = core.read_namespaced_secret("s1", "crud")
    assert got.metadata.resource_version == created.metadata.resource_version
    got.data["k2"] = base64.b64encode(b"w").decode()
    replaced = core.replace_namespaced_secret("s1", "crud", got)
    assert int(replaced.metadata.resource_version) > int(got.metadata.resource_version)
    assert replaced.metadata.uid == created.metadata.uid
    assert [s.metadata.name for s in core.list_namespaced_secret("crud").items] == ["s1"]
    everywhere = core.list_secret_for_all_namespaces()
    assert ("crud", "s1") in {(s.metadata.namespace, s.metadata.name) for s in everywhere.items}
    with pytest.raises(ApiException) as info:
        core.create_namespaced_secret("crud", client.V1Secret(metadata=client.V1ObjectMeta(name="s1")))
    assert info.value.status == 409
    assert body_of(info)["reason"] == "AlreadyExists"
    assert body_of(info)["message"] == 'secrets "s1" already exists'
    core.delete_namespaced_secret("s1", "crud")
    with pytest.raises(ApiException) as info:
        core.read_namespaced_secret("s1", "crud")
    assert body_of(info) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'secrets "s1" not found', "reason": "NotFound",
        "details": {"name": "s1", "kind": "secrets"}, "code": 404,
    }  # fmt: skip


def test_cluster_scoped_crud(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    status = {"conditions": [{"type": "Ready", "status": "False"}]}
    status["conditions"].append({"type": "DiskPressure", "status": "False"})
    node = core.create_node({"metadata": {"name": "crud-node"}, "status": status})
    assert node.metadata.namespace is None
    assert node.status.conditions[0].status == "False"
    # strategic merge patch (the client's default for dicts) merges conditions by type
    ready = {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    node = core.patch_node_status("crud-node", ready)
    assert [(c.type, c.status) for c in node.status.conditions] == [
        ("Ready", "True"),
        ("DiskPressure", "False"),
    ]
    with pytest.raises(ApiException) as info:
        core.replace_node("never-created", {"metadata": {"name": "never-created"}})
    assert info.value.status == 404
    assert "crud-node" in {n.metadata.name for n in core.list_node().items}
    core.delete_node("crud-node")
    with pytest.raises(ApiException) as info:
        core.read_node("crud-node")
    assert body_of(info)["details"] == {"name": "crud-node", "kind": "nodes"}
    custom = client.CustomObjectsApi(api)
    with pytest.raises(ApiException) as info:
        custom.get_cluster_custom_object(*CONFIG, "proxies", "cluster")
    assert body_of(info)["message"] == 'proxies.config.openshift.io "cluster" not found'
    assert body_of(info)["details"] == {"name": "cluster", "group": "config.openshift.io", "kind": "proxies"}


def test_stale_resource_version_is_a_conflict(api: client.ApiClient) -> None:
    custom = client.CustomObjectsApi(api)
    custom.create_cluster_custom_object(
        *OPERATOR, "kubeapiservers", {"metadata": {"name": "cluster"}, "spec": {}}
    )
    old = custom.get_cluster_custom_object(*OPERATOR, "kubeapiservers", "cluster")
    custom.patch_cluster_custom_object(
        *OPERATOR, "kubeapiservers", "cluster", {"metadata": {"labels": {"x": "y"}}}
    )
    with pytest.raises(ApiException) as info:
        custom.replace_cluster_custom_object(*OPERATOR, "kubeapiservers", "cluster", old)
    assert info.value.status == 409
    assert body_of(info)["reason"] == "Conflict"
    assert body_of(info)["message"] == (
        'Operation cannot be fulfilled on kubeapiservers.operator.openshift.io "cluster": the object '
        "has been modified; please apply your changes to the latest version and try again"
    )
    del old["metadata"]["resourceVersion"]  # without a resourceVersion, PUT is unconditional
    replaced = custom.replace_cluster_custom_object(*OPERATOR, "kubeapiservers", "cluster", old)
    assert "labels" not in replaced["metadata"]


def test_concurrent_patches_all_land(api: client.ApiClient) -> None:
    """Patches are retried on write conflicts, so none is lost."""
    custom = client.CustomObjectsApi(api)
    custom.create_cluster_custom_object(*CONFIG, "infrastructures", {"metadata": {"name": "cluster"}})

    def label(i: int) -> None:
        body = {"metadata": {"labels": {f"l{i}": "x"}}}
        custom.patch_cluster_custom_object(*CONFIG, "infrastructures", "cluster", body)

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(label, range(16)))
    got = custom.get_cluster_custom_object(*CONFIG, "infrastructures", "cluster")
    assert got["metadata"]["labels"] == {f"l{i}": "x" for i in range(16)}


def test_merge_json_and_strategic_patches(api: client.ApiClient) -> None:
    custom = client.CustomObjectsApi(api)
    args = (*OPERATOR, "kubeschedulers", "cluster")
    custom.create_cluster_custom_object(
        *OPERATOR, "kubeschedulers", {"metadata": {"name": "cluster"}, "spec": {"logLevel": "Normal", "x": 1}}
    )
    merged = custom.patch_cluster_custom_object(*args, {"spec": {"logLevel": "Debug", "x": None}})
    assert merged["spec"] == {"logLevel": "Debug"}
    assert merged["metadata"]["generation"] == 2
    ops = [
        {"op": "test", "path": "/spec/logLevel", "value": "Debug"},
        {"op": "add", "path": "/spec/y", "value": [1]},
    ]
    patched = custom.patch_cluster_custom_object(*args, ops, _content_type="application/json-patch+json")
    assert patched["spec"] == {"logLevel": "Debug", "y": [1]}
    failing = [{"op": "test", "path": "/spec/logLevel", "value": "Trace"}]
    with pytest.raises(ApiException) as info:
        custom.patch_cluster_custom_object(*args, failing, _content_type="application/json-patch+json")
    assert info.value.status == 422
    assert body_of(info)["reason"] == "Invalid"
    with pytest.raises(ApiException) as info:
        custom.patch_cluster_custom_object(
            *args, {"spec": {}}, _content_type="application/strategic-merge-patch+json"
        )
    assert info.value.status == 415
    assert body_of(info)["reason"] == "UnsupportedMediaType"
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="patch")))
    containers = [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]
    core.create_namespaced_pod("patch", {"metadata": {"name": "p"}, "spec": {"containers": containers}})
    pod = core.patch_namespaced_pod("p", "patch", {"spec": {"containers": [{"name": "b", "image": "b:2"}]}})
    assert [(c.name, c.image) for c in pod.spec.containers] == [("a", "a:1"), ("b", "b:2")]
    pod = core.patch_namespaced_pod("p", "patch", {"spec": {"containers": [{"name": "c", "image": "c:1"}]}},
                                    _content_type="application/merge-patch+json")  # fmt: skip
    assert [c.name for c in pod.spec.containers] == ["c"]


def test_label_and_field_selectors(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="sel")))
    for name, labels, node in [("p1", {"app": "etcd", "tier": "cp"}, "n1"), ("p2", {"app": "etcd"}, "n2"),
                               ("p3", {"app": "web"}, "n1")]:  # fmt: skip
        spec = {"nodeName": node, "containers": [{"name": "c", "image": "i"}]}
        core.create_namespaced_pod("sel", {"metadata": {"name": name, "labels": labels}, "spec": spec})

    def names(**kw: str) -> list[str]:
        return [p.metadata.name for p in core.list_namespaced_pod("sel", **kw).items]

    assert names(label_selector="app=etcd") == ["p1", "p2"]
    assert names(label_selector="app!=etcd") == ["p3"]
    assert names(label_selector="app in (etcd, web),tier") == ["p1"]
    assert names(label_selector="!tier,app notin (web)") == ["p2"]
    assert names(label_selector="app==etcd", field_selector="spec.nodeName=n1") == ["p1"]
    assert names(field_selector="metadata.name!=p1,status.phase=Pending") == ["p2", "p3"]
    assert names(field_selector="metadata.namespace=other") == []
    with pytest.raises(ApiException) as info:
        names(label_selector="app in etcd")
    assert info.value.status == 400
    assert body_of(info)["reason"] == "BadRequest"


def test_status_subresource_semantics(api: client.ApiClient) -> None:
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="st")))
    template = {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [{"name": "c", "image": "i:1"}]}}
    spec = {"replicas": 1, "selector": {"matchLabels": {"app": "d"}}, "template": template}
    body = {"metadata": {"name": "d"}, "spec": spec, "status": {"replicas": 7}}
    created = apps.create_namespaced_deployment("st", body)
    assert created.status is None or created.status.replicas is None  # status is dropped on create
    created.spec.replicas, created.status = 3, client.V1DeploymentStatus(replicas=9)
    updated = apps.replace_namespaced_deployment("d", "st", created)
    assert updated.spec.replicas == 3
    assert updated.metadata.generation == 2
    assert updated.status is None or updated.status.replicas is None  # the main resource ignores status
    updated.spec.replicas, updated.status = 5, client.V1DeploymentStatus(replicas=3, ready_replicas=2)
    with_status = apps.replace_namespaced_deployment_status("d", "st", updated)
    assert with_status.status.ready_replicas == 2
    assert with_status.spec.replicas == 3
    assert with_status.metadata.generation == 2
    patched = apps.patch_namespaced_deployment_status("d", "st", {"status": {"availableReplicas": 2}})
    assert (patched.status.available_replicas, patched.status.ready_replicas) == (2, 2)


def test_csr_approval_subresource(api: client.ApiClient) -> None:
    certs = client.CertificatesV1Api(api)
    spec = client.V1CertificateSigningRequestSpec(
        request=_csr_request(), signer_name="kubernetes.io/kube-apiserver-client-kubelet",
        usages=["digital signature", "client auth"], username="system:serviceaccount:x:node-bootstrapper",
    )  # fmt: skip
    certs.create_certificate_signing_request(
        client.V1CertificateSigningRequest(metadata=client.V1ObjectMeta(name="csr-approve"), spec=spec)
    )
    csr = certs.read_certificate_signing_request("csr-approve")
    csr.spec.username = "someone-else"  # /approval changes status.conditions only
    approved = client.V1CertificateSigningRequestCondition(
        type="Approved", status="True", reason="KubectlApprove", message="This CSR was approved by etcdguard."
    )
    csr.status = client.V1CertificateSigningRequestStatus(conditions=[approved])
    out = certs.replace_certificate_signing_request_approval("csr-approve", csr)
    assert [c.type for c in out.status.conditions] == ["Approved"]
    assert out.status.conditions[0].last_transition_time is not None
    assert out.spec.username == "system:serviceaccount:x:node-bootstrapper"
    denied = client.V1CertificateSigningRequestCondition(type="Denied", status="True")
    out.status.conditions.append(denied)
    with pytest.raises(ApiException) as info:
        certs.replace_certificate_signing_request_approval("csr-approve", out)
    assert info.value.status == 422
    assert "mutually exclusive" in body_of(info)["message"]


def test_custom_objects_status_of_etcd(api: client.ApiClient, seeded: None) -> None:
    custom = client.CustomObjectsApi(api)
    etcd = custom.get_cluster_custom_object(*OPERATOR, "etcds", "cluster")
    assert etcd["status"]["conditions"][0]["reason"] == "EtcdQuorate"
    listed = custom.list_cluster_custom_object(*OPERATOR, "etcds")
    assert listed["kind"] == "EtcdList"
    assert [i["metadata"]["name"] for i in listed["items"]] == ["cluster"]
    assert int(listed["metadata"]["resourceVersion"]) >= int(etcd["metadata"]["resourceVersion"])
    ignored = custom.patch_cluster_custom_object(
        *OPERATOR, "etcds", "cluster", {"status": {"conditions": []}}
    )
    assert ignored["status"] == etcd["status"]  # writes to the main resource ignore .status
    assert ignored["metadata"]["resourceVersion"] == etcd["metadata"]["resourceVersion"]  # no-op: no write


def test_delete_preconditions_and_generate_name(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="del")))
    made = core.create_namespaced_config_map(
        "del", client.V1ConfigMap(metadata=client.V1ObjectMeta(generate_name="gen-"))
    )
    name = made.metadata.name
    assert name.startswith("gen-")
    assert len(name) == 9
    stale = client.V1DeleteOptions(preconditions=client.V1Preconditions(resource_version="1"))
    with pytest.raises(ApiException) as info:
        core.delete_namespaced_config_map(name, "del", body=stale)
    assert info.value.status == 409
    assert "Precondition failed: ResourceVersion in precondition: 1" in body_of(info)["message"]
    good = client.V1DeleteOptions(
        preconditions=client.V1Preconditions(resource_version=made.metadata.resource_version)
    )
    assert core.delete_namespaced_config_map(name, "del", body=good)["status"] == "Success"
    assert core.list_namespaced_config_map("del").items == []


def test_invalid_bodies(api_server: ApiServer, api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="bad")))
    with pytest.raises(ApiException) as info:
        core.create_namespaced_secret("bad", client.V1Secret(metadata=client.V1ObjectMeta()))
    assert info.value.status == 422
    assert (
        body_of(info)["message"]
        == 'Secret "" is invalid: metadata.name: Required value: name or generateName is required'
    )
    with pytest.raises(ApiException) as info:
        core.create_namespaced_secret("bad", {"kind": "ConfigMap", "metadata": {"name": "x"}})
    assert info.value.status == 422
    assert body_of(info)["reason"] == "Invalid"
    with pytest.raises(ApiException) as info:
        core.create_namespaced_secret("bad", {"metadata": {"name": "Upper"}})
    assert "a lowercase RFC 1123 subdomain" in body_of(info)["message"]
    code, status = http(
        api_server,
        "POST",
        "/api/v1/namespaces/bad/secrets",
        b"{nope",
        headers={"Content-Type": "application/json"},
    )
    assert (code, status["reason"]) == (400, "BadRequest")
    with pytest.raises(ApiException) as info:
        core.create_namespaced_secret("missing", {"metadata": {"name": "x"}})
    assert info.value.status == 404
    assert body_of(info)["message"] == 'namespaces "missing" not found'
    code, status = http(api_server, "GET", "/api/v1/pods?watch=true")
    assert (code, status["reason"]) == (405, "MethodNotAllowed")
    assert "watch is not supported" in status["message"]


def test_namespace_deletion_cascades(api: client.ApiClient) -> None:
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    for ns in ("doomed", "kept"):
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
        core.create_namespaced_secret(ns, client.V1Secret(metadata=client.V1ObjectMeta(name="s")))
    core.create_namespaced_pod(
        "doomed", {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}
    )
    custom.create_namespaced_custom_object(*MACHINES, "doomed", "machines", {"metadata": {"name": "m"}})
    deleted = core.delete_namespace("doomed")
    assert deleted["status"]["phase"] == "Terminating"
    reads = (
        lambda: core.read_namespaced_secret("s", "doomed"),
        lambda: core.read_namespaced_pod("p", "doomed"),
        lambda: custom.get_namespaced_custom_object(*MACHINES, "doomed", "machines", "m"),
        lambda: core.read_namespace("doomed"),
    )
    for read in reads:
        with pytest.raises(ApiException) as info:
            read()
        assert info.value.status == 404
    assert core.read_namespaced_secret("s", "kept").metadata.name == "s"


def test_objects_are_json_in_etcd(api_server: ApiServer, api: client.ApiClient, seeded: None) -> None:
    etcd = client.CustomObjectsApi(api).get_cluster_custom_object(*OPERATOR, "etcds", "cluster")
    env = {**os.environ, "ETCDCTL_API": "3", "ETCDCTL_ENDPOINTS": api_server.etcd_url}
    out = subprocess.run(
        ["etcdctl", "get", "/kubernetes.io/operator.openshift.io/etcds/cluster", "-w", "json"],
        env=env, capture_output=True, text=True, timeout=20, check=True,
    )  # fmt: skip
    kv = json.loads(out.stdout)["kvs"][0]
    stored = json.loads(base64.b64decode(kv["value"]))
    assert stored["metadata"]["uid"] == etcd["metadata"]["uid"]
    assert "resourceVersion" not in stored["metadata"]
    assert str(kv["mod_revision"]) == etcd["metadata"]["resourceVersion"]
    keys = subprocess.run(
        ["etcdctl", "get", "/kubernetes.io/machine.openshift.io/machines/", "--prefix", "--keys-only"],
        env=env, capture_output=True, text=True, timeout=20, check=True,
    ).stdout.split()  # fmt: skip
    assert "/kubernetes.io/machine.openshift.io/machines/openshift-machine-api/demo-x-master-0" in keys


def test_etcd_down_is_503() -> None:
    with running_server("http://127.0.8.2:2379", etcd_timeout=1) as address:
        req = urllib.request.Request(f"http://{address}/api/v1/nodes")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(req, timeout=10)  # noqa: S310 - http to loopback
        status = json.loads(info.value.read())
    assert (info.value.code, status["reason"]) == (503, "ServiceUnavailable")
    assert "no etcd member answered" in status["message"]


def test_tls_needs_a_client_certificate(tmp_path: Path, etcd_server: str) -> None:
    spec = layout.make_spec(state_dir=tmp_path, prefix="127.0.8", masters=1, workers=0)
    pki.ensure_pki(spec)
    with running_server(etcd_server, ssl_context=apiserver.server_ssl_context(spec)) as address:
        anonymous = ssl.create_default_context(cafile=str(spec.api_ca))
        admin = ssl.create_default_context(cafile=str(spec.api_ca))
        admin.load_cert_chain(
            str(spec.pki_dir / "api" / "admin.crt"), str(spec.pki_dir / "api" / "admin.key")
        )

        def get(path: str, ctx: ssl.SSLContext) -> tuple[int, str]:
            url = f"https://{address}{path}"
            try:
                with urllib.request.urlopen(url, context=ctx, timeout=10) as resp:
                    return int(resp.status), ""
            except urllib.error.HTTPError as exc:
                return exc.code, json.loads(exc.read())["reason"]

        assert get("/version", anonymous) == (200, "")
        assert get("/api/v1/namespaces", anonymous) == (401, "Unauthorized")
        assert get("/api/v1/namespaces", admin) == (200, "")


# ---- server-side printing ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(45, "45s"), (119, "119s"), (125, "2m5s"), (300, "5m"), (630, "10m"), (11520, "3h12m"),
     (9 * 3600, "9h"), (183600, "2d3h"), (35 * 86400 + 5, "35d"), (800 * 86400, "2y70d")],
)  # fmt: skip
def test_human_duration(seconds: int, shown: str) -> None:
    assert tables.human_duration(dt.timedelta(seconds=seconds)) == shown


def test_table_answers(api_server: ApiServer, seeded: None) -> None:
    code, table = http(api_server, "GET", "/api/v1/nodes", headers={"Accept": TABLE_ACCEPT})
    assert code == 200
    assert (table["kind"], table["apiVersion"]) == ("Table", "meta.k8s.io/v1")
    columns = [(c["name"], c["priority"]) for c in table["columnDefinitions"]]
    assert columns[:5] == [("Name", 0), ("Status", 0), ("Roles", 0), ("Age", 0), ("Version", 0)]
    assert ("Internal-IP", 1) in columns
    rows = {r["cells"][0]: r for r in table["rows"]}
    assert rows["ip-127-0-8-1.ec2.internal"]["cells"][1:4] == ["Ready", "master", "2d3h"]
    assert rows["ip-127-0-8-11.ec2.internal"]["cells"][1] == "NotReady,SchedulingDisabled"
    assert rows["ip-127-0-8-1.ec2.internal"]["object"]["kind"] == "PartialObjectMetadata"
    _, full = http(api_server, "GET", "/api/v1/nodes?includeObject=Object", headers={"Accept": TABLE_ACCEPT})
    assert full["rows"][0]["object"]["kind"] == "Node"
    _, bare = http(api_server, "GET", "/api/v1/nodes?includeObject=None", headers={"Accept": TABLE_ACCEPT})
    assert "object" not in bare["rows"][0]


def test_pod_and_deployment_tables(api: client.ApiClient, api_server: ApiServer) -> None:
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="tables")))
    spec = {
        "nodeName": "n1",
        "containers": [{"name": "etcd", "image": "i"}, {"name": "etcdctl", "image": "i"}],
    }
    core.create_namespaced_pod("tables", {"metadata": {"name": "crash"}, "spec": spec})
    statuses = [
        {"name": "etcd", "ready": False, "restartCount": 4, "image": "i", "imageID": "",
         "state": {"waiting": {"reason": "CrashLoopBackOff"}}},
        {"name": "etcdctl", "ready": True, "restartCount": 1, "image": "i", "imageID": "",
         "state": {"running": {}}},
    ]  # fmt: skip
    core.patch_namespaced_pod_status(
        "crash",
        "tables",
        {"status": {"phase": "Running", "podIP": "10.0.0.5", "containerStatuses": statuses}},
    )
    _, table = http(
        api_server, "GET", "/api/v1/namespaces/tables/pods/crash", headers={"Accept": TABLE_ACCEPT}
    )
    assert [c["name"] for c in table["columnDefinitions"]][:5] == [
        "Name",
        "Ready",
        "Status",
        "Restarts",
        "Age",
    ]
    assert table["rows"][0]["cells"][:4] == ["crash", "1/2", "CrashLoopBackOff", 5]
    assert table["rows"][0]["cells"][5:7] == ["10.0.0.5", "n1"]
    apps = client.AppsV1Api(api)
    template = {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [{"name": "c", "image": "i:1"}]}}
    dspec = {"replicas": 3, "selector": {"matchLabels": {"app": "d"}}, "template": template}
    apps.create_namespaced_deployment("tables", {"metadata": {"name": "d"}, "spec": dspec})
    apps.patch_namespaced_deployment_status(
        "d", "tables", {"status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}}
    )
    _, table = http(
        api_server, "GET", "/apis/apps/v1/namespaces/tables/deployments", headers={"Accept": TABLE_ACCEPT}
    )
    names = [c["name"] for c in table["columnDefinitions"]]
    assert names[:5] == ["Name", "Ready", "Up-to-date", "Available", "Age"]
    assert table["rows"][0]["cells"][:4] == ["d", "2/3", 3, 2]
    assert table["rows"][0]["cells"][5:] == ["c", "i:1", "app=d"]


# ---- the real kubectl --------------------------------------------------------------------
@pytest.fixture(scope="module")
def kubectl(api_server: ApiServer, tmp_path_factory: pytest.TempPathFactory, seeded: None) -> Any:
    cache = tmp_path_factory.mktemp("kubecache")

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["kubectl", "--kubeconfig", str(api_server.kubeconfig), "--cache-dir", str(cache), *args],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        if check:
            assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}"
        return proc

    return run


def rows(out: str) -> list[list[str]]:
    return [line.split() for line in out.strip().splitlines()]


def test_kubectl_get_nodes(kubectl: Any) -> None:
    table = rows(kubectl("get", "nodes").stdout)
    assert table[0] == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    assert table[1] == ["ip-127-0-8-1.ec2.internal", "Ready", "master", "2d3h", "v1.21.1+051ac4f"]
    assert table[2][:4] == ["ip-127-0-8-11.ec2.internal", "NotReady,SchedulingDisabled", "worker", "15m"]
    wide = rows(kubectl("get", "nodes", "-o", "wide", "-l", "node-role.kubernetes.io/master").stdout)
    assert wide[0][5:7] == ["INTERNAL-IP", "EXTERNAL-IP"]
    assert wide[1][5:7] == ["127.0.8.1", "<none>"]
    assert len(wide) == 2


def test_kubectl_etcd_jsonpath_and_merge_patch(kubectl: Any) -> None:
    jsonpath = '-o=jsonpath={.items[0].status.conditions[?(@.type=="EtcdMembersAvailable")].message}'
    assert kubectl("get", "etcd", jsonpath).stdout == "3 members are available"
    patch = '-p={"spec": {"forceRedeploymentReason": "recovery-x"}}'
    assert (
        kubectl("patch", "etcd", "cluster", patch, "--type=merge").stdout.strip()
        == "etcd.operator.openshift.io/cluster patched"
    )
    again = kubectl("patch", "etcd", "cluster", patch, "--type=merge").stdout.strip()
    assert again == "etcd.operator.openshift.io/cluster patched (no change)"
    assert (
        kubectl("get", "etcd", "cluster", "-o=jsonpath={.spec.forceRedeploymentReason}").stdout
        == "recovery-x"
    )
    assert rows(kubectl("get", "etcd", "cluster").stdout)[0] == ["NAME", "AGE"]


def test_kubectl_get_csr_co_and_machines(kubectl: Any) -> None:
    csr = rows(kubectl("get", "csr").stdout)
    assert csr[0] == ["NAME", "AGE", "SIGNERNAME", "REQUESTOR", "CONDITION"]
    by_name = {r[0]: r for r in csr[1:]}
    assert by_name["csr-pending"][2:] == [
        "kubernetes.io/kubelet-serving",
        "system:node:ip-127-0-8-1.ec2.internal",
        "Pending",
    ]
    assert by_name["csr-issued"][-1] == "Approved,Issued"
    for args in (("get", "co"), ("get", "clusteroperators")):
        co = rows(kubectl(*args).stdout)
        assert co[0] == ["NAME", "VERSION", "AVAILABLE", "PROGRESSING", "DEGRADED", "SINCE"]
        assert co[1] == ["etcd", "4.8.12", "True", "False", "False", "3h12m"]
    machines = rows(kubectl("get", "machines", "-A").stdout)
    assert machines[0] == ["NAMESPACE", "NAME", "PHASE", "TYPE", "REGION", "ZONE", "AGE"]
    assert machines[1] == [
        "openshift-machine-api",
        "demo-x-master-0",
        "Running",
        "m4.xlarge",
        "us-east-1",
        "us-east-1a",
        "35d",
    ]


def test_kubectl_create_and_delete(kubectl: Any, tmp_path: Path) -> None:
    manifest = tmp_path / "objs.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: kubectl-ns}\n---\n"
        "apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: kubectl-ns}\ntype: kubernetes.io/tls\n"
        "data: {tls.crt: YQ==, tls.key: Yg==}\n---\n"
        "apiVersion: machine.openshift.io/v1beta1\nkind: Machine\n"
        "metadata: {name: demo-x-master-3, namespace: kubectl-ns}\nspec: {}\n"
    )
    created = kubectl("create", "-f", str(manifest)).stdout
    assert "secret/s created" in created
    assert "machine.machine.openshift.io/demo-x-master-3 created" in created
    secrets = rows(kubectl("get", "secrets", "-n", "kubectl-ns").stdout)
    assert secrets[0] == ["NAME", "TYPE", "DATA", "AGE"]
    assert secrets[1][:3] == ["s", "kubernetes.io/tls", "2"]
    out = kubectl("delete", "machine", "-n", "kubectl-ns", "demo-x-master-3").stdout
    assert out.strip() == 'machine.machine.openshift.io "demo-x-master-3" deleted'
    missing = kubectl("get", "machine", "-n", "kubectl-ns", "demo-x-master-3", check=False)
    assert missing.returncode == 1
    assert 'machines.machine.openshift.io "demo-x-master-3" not found' in missing.stderr
    assert "deleted" in kubectl("delete", "-f", str(manifest), "--ignore-not-found").stdout


def test_kubectl_protobuf_requests(kubectl: Any) -> None:
    """kubectl 1.32 sends typed objects as protobuf: create namespace/secret, certificate approve."""
    assert kubectl("create", "namespace", "proto").stdout.strip() == "namespace/proto created"
    kubectl("create", "secret", "generic", "s", "-n", "proto", "--from-literal=a=b")
    assert kubectl("get", "secret", "s", "-n", "proto", "-o=jsonpath={.data.a}").stdout == "Yg=="
    assert kubectl("certificate", "approve", "csr-pending").stdout.strip() == (
        "certificatesigningrequest.certificates.k8s.io/csr-pending approved"
    )
    cond = kubectl("get", "csr", "csr-pending", "-o=jsonpath={.status.conditions[0].type}").stdout
    assert cond == "Approved"


def test_kubectl_exec(kubectl: Any, api: client.ApiClient) -> None:
    """pods/exec is routed to podexec.handle_exec with the app's runner (a local one here)."""
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="exec")))
    core.create_namespaced_pod(
        "exec", {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}
    )
    assert kubectl("exec", "-n", "exec", "p", "--", "echo", "hello").stdout == "hello\n"
    failed = kubectl("exec", "-n", "exec", "p", "--", "sh", "-c", "exit 3", check=False)
    assert failed.returncode == 3
    missing = kubectl("exec", "-n", "exec", "nope", "--", "true", check=False)
    assert missing.returncode == 1
    assert 'pods "nope" not found' in missing.stderr
