"""The same operations as the guide's commands, through the `kubernetes` Python client with the
simulated cluster's kubeconfig (TLS verified, client-certificate authentication)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import pytest
from etcdguard_sim import layout
from kubernetes import client, config, dynamic, stream
from kubernetes.client.exceptions import ApiException

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api(sim: layout.SimSpec) -> Iterator[client.ApiClient]:
    api_client = config.new_client_from_config(config_file=str(sim.kubeconfig))
    try:
        yield api_client
    finally:
        api_client.close()


def test_list_masters_with_label_selector(api: client.ApiClient, sim: layout.SimSpec) -> None:
    nodes = client.CoreV1Api(api).list_node(label_selector="node-role.kubernetes.io/master")
    assert sorted(n.metadata.name for n in nodes.items) == sorted(n.name for n in sim.masters)
    for node in nodes.items:
        ready = next(c for c in node.status.conditions if c.type == "Ready")
        assert ready.status == "True"
        assert {a.type: a.address for a in node.status.addresses}["InternalIP"] == sim.node(
            node.metadata.name
        ).ip


def test_field_selector_on_pods(api: client.ApiClient, sim: layout.SimSpec) -> None:
    node = sim.masters[2]
    pods = client.CoreV1Api(api).list_namespaced_pod(
        "openshift-etcd", field_selector=f"spec.nodeName={node.name}", label_selector="app=etcd"
    )
    assert [p.metadata.name for p in pods.items] == [f"etcd-{node.name}"]


def test_etcd_operator_conditions_and_merge_patch(api: client.ApiClient) -> None:
    custom = client.CustomObjectsApi(api)
    etcd: dict[str, Any] = custom.get_cluster_custom_object("operator.openshift.io", "v1", "etcds", "cluster")
    conditions = {c["type"]: c for c in etcd["status"]["conditions"]}
    assert conditions["EtcdMembersAvailable"]["reason"] == "EtcdQuorate"
    assert conditions["NodeInstallerProgressing"]["reason"] == "AllNodesAtLatestRevision"
    reason = f"recovery-{dt.datetime.now(dt.UTC).isoformat()}"
    patched = custom.patch_cluster_custom_object(
        "operator.openshift.io", "v1", "etcds", "cluster", {"spec": {"forceRedeploymentReason": reason}}
    )
    assert patched["spec"]["forceRedeploymentReason"] == reason
    assert int(patched["metadata"]["resourceVersion"]) > int(etcd["metadata"]["resourceVersion"])


def test_stale_resource_version_is_a_conflict(api: client.ApiClient) -> None:
    custom = client.CustomObjectsApi(api)
    proxy = custom.get_cluster_custom_object("config.openshift.io", "v1", "proxies", "cluster")
    custom.patch_cluster_custom_object(
        "config.openshift.io", "v1", "proxies", "cluster", {"metadata": {"labels": {"touched": "yes"}}}
    )
    with pytest.raises(ApiException) as info:
        custom.replace_cluster_custom_object("config.openshift.io", "v1", "proxies", "cluster", proxy)
    assert info.value.status == 409
    assert "the object has been modified" in info.value.body


def test_missing_object_is_404(api: client.ApiClient) -> None:
    with pytest.raises(ApiException) as info:
        client.CoreV1Api(api).read_namespaced_secret("nope", "openshift-etcd")
    assert info.value.status == 404
    assert json.loads(info.value.body)["message"] == 'secrets "nope" not found'


def test_clusterversion_history_and_dynamic_client(api: client.ApiClient, sim: layout.SimSpec) -> None:
    dyn = dynamic.DynamicClient(api)
    cv_api = dyn.resources.get(api_version="config.openshift.io/v1", kind="ClusterVersion")
    cv = cv_api.get(name="version").to_dict()
    completed = [h for h in cv["status"]["history"] if h["state"] == "Completed"]
    assert completed[0]["version"] == sim.ocp_version
    assert cv["spec"]["clusterID"] == sim.cluster_id
    machines = dyn.resources.get(api_version="machine.openshift.io/v1beta1", kind="Machine")
    items = machines.get(namespace="openshift-machine-api").to_dict()["items"]
    assert {m["metadata"]["name"] for m in items} == {n.machine_name for n in sim.nodes}


def test_csr_listing(api: client.ApiClient) -> None:
    csrs = client.CertificatesV1Api(api).list_certificate_signing_request()
    assert csrs.items
    assert all(any(c.type == "Approved" for c in (x.status.conditions or [])) for x in csrs.items)


def test_exec_etcdctl_through_stream(api: client.ApiClient, sim: layout.SimSpec) -> None:
    core = client.CoreV1Api(api)
    out = stream.stream(
        core.connect_get_namespaced_pod_exec,
        f"etcd-{sim.masters[0].name}",
        "openshift-etcd",
        container="etcdctl",
        command=["etcdctl", "endpoint", "health", "--cluster", "-w", "json"],
        stdout=True,
        stderr=True,
        stdin=False,
        tty=False,
        _preload_content=False,
    )
    try:
        out.run_forever(timeout=30)
        stdout = out.read_stdout()
        assert out.returncode == 0
    finally:
        out.close()
        out.sock.sock.close()
    assert stdout.count('"health":true') == 3
