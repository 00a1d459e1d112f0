"""The seed data of the simulated OpenShift 4.8 cluster: shapes, consistency between objects, and
the exact messages the guide's commands print for a healthy cluster."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from etcdguard_sim import layout
from etcdguard_sim.api import resources
from etcdguard_sim.seed import objects as seed
from hypothesis import given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.unit

NOW = dt.datetime(2021, 10, 1, 9, 30, 15, tzinfo=dt.UTC)
Obj = dict[str, Any]


def _spec(*, masters: int = 3, workers: int = 3, version: str = "4.8.12") -> layout.SimSpec:
    return layout.make_spec(
        state_dir=Path("/nonexistent/seed-test"),
        prefix="127.1.0",
        masters=masters,
        workers=workers,
        ocp_version=version,
    )


SPEC = _spec()
OBJECTS = seed.seed_objects(SPEC, now=NOW)


def _time(value: str) -> dt.datetime:
    return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)


def _of(objects: list[Obj], kind: str, namespace: str | None = None) -> list[Obj]:
    return [
        o
        for o in objects
        if o["kind"] == kind and (namespace is None or o["metadata"].get("namespace") == namespace)
    ]


def _one(objects: list[Obj], kind: str, name: str) -> Obj:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{len(found)} {kind} objects named {name}"
    return found[0]


def _condition(obj: Obj, kind: str) -> Obj:
    found = [c for c in obj["status"]["conditions"] if c["type"] == kind]
    assert len(found) == 1, f"{obj['kind']} {obj['metadata']['name']} has {len(found)} {kind} conditions"
    return found[0]


# ---- structure --------------------------------------------------------------------------------
def _check_structure(spec: layout.SimSpec, objects: list[Obj]) -> None:
    served = {(r.group_version, r.kind): r for r in resources.REGISTRY}
    seen_namespace = True
    namespaces: set[str] = set()
    for obj in objects:
        meta = obj["metadata"]
        assert obj["apiVersion"], obj
        assert obj["kind"], obj
        assert meta["name"], obj
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", meta["creationTimestamp"])
        assert _time(meta["creationTimestamp"]) <= NOW
        resource = served.get((obj["apiVersion"], obj["kind"]))
        assert resource is not None, f"the simulated API does not serve {obj['apiVersion']} {obj['kind']}"
        if obj["kind"] == "Namespace":
            assert seen_namespace, f"namespace {meta['name']} comes after a non-namespace object"
            namespaces.add(meta["name"])
            continue
        seen_namespace = False
        if resource.namespaced:
            assert meta.get("namespace") in namespaces, f"{obj['kind']} {meta['name']} has no namespace"
        else:
            assert "namespace" not in meta, f"cluster-scoped {obj['kind']} {meta['name']} has a namespace"
    keys = Counter((o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects)
    assert [k for k, n in keys.items() if n > 1] == []
    uids = Counter(o["metadata"]["uid"] for o in objects)
    assert [u for u, n in uids.items() if n > 1] == []
    assert json.loads(json.dumps(objects)) == objects  # plain JSON, as POSTed


def test_every_object_is_served_named_unique_and_after_its_namespace() -> None:
    _check_structure(SPEC, OBJECTS)
    assert {o["metadata"]["name"] for o in _of(OBJECTS, "Namespace")} == set(seed.NAMESPACES)


@settings(max_examples=15, deadline=None)
@given(masters=st.integers(1, 9), workers=st.integers(0, 9), patch=st.integers(0, 30))
def test_structure_holds_for_any_cluster_shape(masters: int, workers: int, patch: int) -> None:
    spec = _spec(masters=masters, workers=workers, version=f"4.8.{patch}")
    objects = seed.seed_objects(spec, now=NOW, encryption="identity")
    _check_structure(spec, objects)
    etcd = _one(objects, "Etcd", "cluster")
    assert _condition(etcd, "EtcdMembersAvailable")["message"] == f"{masters} members are available"
    assert len(_of(objects, "Node")) == masters + workers
    history = _one(objects, "ClusterVersion", "version")["status"]["history"]
    assert history[0]["version"] == spec.ocp_version
    assert _time(history[-1]["startedTime"]) == NOW - seed.INSTALL_AGE


def test_same_input_gives_the_same_objects() -> None:
    again = seed.seed_objects(SPEC, now=NOW)
    assert again == OBJECTS
    later = seed.seed_objects(SPEC, now=NOW + dt.timedelta(hours=1))
    assert later != OBJECTS
    assert [o["metadata"]["uid"] for o in later] == [o["metadata"]["uid"] for o in OBJECTS]


def test_refuses_a_naive_now_and_an_unknown_encryption_type() -> None:
    with pytest.raises(ValueError, match="no time zone"):
        seed.seed_objects(SPEC, now=dt.datetime(2021, 10, 1, 9, 30))
    with pytest.raises(ValueError, match=r"'aesgcm' is not an etcd encryption type of OpenShift 4\.8"):
        seed.seed_objects(SPEC, now=NOW, encryption="aesgcm")  # type: ignore[arg-type]


def test_now_in_another_time_zone_gives_utc_times() -> None:
    tokyo = NOW.astimezone(dt.timezone(dt.timedelta(hours=9)))
    assert seed.seed_objects(SPEC, now=tokyo) == OBJECTS


# ---- cluster version, operators, operator CRs --------------------------------------------------
def test_cluster_version_history() -> None:
    cv = _one(OBJECTS, "ClusterVersion", "version")
    assert cv["spec"]["clusterID"] == SPEC.cluster_id
    assert cv["spec"]["channel"] == "stable-4.8"
    history = cv["status"]["history"]
    completed = [h for h in history if h["state"] == "Completed"]
    assert completed[0]["version"] == SPEC.ocp_version == cv["status"]["desired"]["version"]
    assert [h["version"] for h in history] == ["4.8.12", "4.8.10"]
    assert [h["verified"] for h in history] == [True, False]
    starts = [_time(h["startedTime"]) for h in history]
    assert starts == sorted(starts, reverse=True)  # newest first
    assert NOW - starts[-1] > dt.timedelta(hours=24)
    assert starts[-1] == NOW - seed.INSTALL_AGE
    assert all(h["image"].startswith("quay.io/openshift-release-dev/ocp-release@sha256:") for h in history)
    assert _condition(cv, "Available")["message"] == "Done applying 4.8.12"
    progressing = _condition(cv, "Progressing")
    assert (progressing["status"], progressing["message"]) == ("False", "Cluster version is 4.8.12")


def test_a_cluster_installed_at_its_current_version_has_one_history_entry() -> None:
    spec = _spec(version="4.8.0")
    history = _one(seed.seed_objects(spec, now=NOW), "ClusterVersion", "version")["status"]["history"]
    assert [(h["version"], h["state"]) for h in history] == [("4.8.0", "Completed")]
    with pytest.raises(ValueError, match=r"'4\.8' is not of the form X\.Y\.Z"):
        seed.seed_objects(_spec(version="4.8"), now=NOW)


def test_cluster_operators_are_healthy_at_the_current_version() -> None:
    operators = {o["metadata"]["name"]: o for o in _of(OBJECTS, "ClusterOperator")}
    required = {
        "authentication", "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler",
        "machine-api", "machine-config", "network", "openshift-apiserver", "ingress", "console", "dns",
    }  # fmt: skip
    assert required <= set(operators)
    for name, co in operators.items():
        states = {c["type"]: c["status"] for c in co["status"]["conditions"]}
        assert states == {
            "Available": "True",
            "Progressing": "False",
            "Degraded": "False",
            "Upgradeable": "True",
        }
        versions = {v["name"]: v["version"] for v in co["status"]["versions"]}
        assert versions["operator"] == SPEC.ocp_version, name
    assert {v["name"] for v in operators["etcd"]["status"]["versions"]} >= {"etcd", "operator"}
    kas_versions = {v["name"]: v["version"] for v in operators["kube-apiserver"]["status"]["versions"]}
    assert kas_versions["kube-apiserver"] == seed.KUBELET_VERSION[1:].split("+")[0]


def test_static_pod_operators_have_every_master_at_the_latest_revision() -> None:
    operators = {
        "Etcd": "etcd",
        "KubeAPIServer": "kube-apiserver",
        "KubeControllerManager": "kube-controller-manager",
        "KubeScheduler": "kube-scheduler",
    }
    for kind, operand in operators.items():
        cr = _one(OBJECTS, kind, "cluster")
        revision = layout.INITIAL_REVISIONS[operand]
        assert cr["spec"]["forceRedeploymentReason"] == ""
        assert cr["spec"]["managementState"] == "Managed"
        assert cr["status"]["latestAvailableRevision"] == revision
        assert cr["status"]["nodeStatuses"] == [
            {"nodeName": n.name, "currentRevision": revision} for n in SPEC.masters
        ]
        installer = _condition(cr, "NodeInstallerProgressing")
        assert (installer["status"], installer["reason"]) == ("False", "AllNodesAtLatestRevision")
        assert installer["message"] == f"3 nodes are at revision {revision}"
        assert _condition(cr, "StaticPodsAvailable")["message"] == (
            f"3 nodes are active; 3 nodes are at revision {revision}"
        )
        degraded = [c for c in cr["status"]["conditions"] if c["type"].endswith("Degraded")]
        assert degraded
        assert {c["status"] for c in degraded} == {"False"}


def test_etcd_member_conditions_as_the_operator_writes_them() -> None:
    etcd = _one(OBJECTS, "Etcd", "cluster")
    got = {c["type"]: (c["status"], c["reason"], c.get("message")) for c in etcd["status"]["conditions"]}
    assert got["EtcdMembersAvailable"] == ("True", "EtcdQuorate", "3 members are available")
    assert got["EtcdMembersDegraded"] == ("False", "AsExpected", "No unhealthy members found")
    assert got["EtcdMembersProgressing"] == ("False", "AsExpected", "No unstarted etcd members found")
    single = _one(seed.seed_objects(_spec(masters=1), now=NOW), "Etcd", "cluster")
    assert _condition(single, "EtcdMembersAvailable")["message"] == "1 members are available"
    assert _condition(single, "NodeInstallerProgressing")["message"] == "1 nodes are at revision 7"


# ---- nodes and machines -----------------------------------------------------------------------
def test_nodes_are_ready_with_role_labels_and_addresses() -> None:
    nodes = {o["metadata"]["name"]: o for o in _of(OBJECTS, "Node")}
    assert set(nodes) == {n.name for n in SPEC.nodes}
    for spec_node in SPEC.nodes:
        node = nodes[spec_node.name]
        labels = node["metadata"]["labels"]
        assert labels[f"node-role.kubernetes.io/{spec_node.role}"] == ""
        assert labels["kubernetes.io/hostname"] == spec_node.name
        assert labels["topology.kubernetes.io/zone"] == spec_node.zone
        assert labels["node.kubernetes.io/instance-type"] == (
            "m5.xlarge" if spec_node.role == "master" else "m5.large"
        )
        assert node["spec"]["providerID"] == f"aws:///{spec_node.zone}/{spec_node.instance_id}"
        taints = [t["key"] for t in node["spec"].get("taints", [])]
        assert taints == (["node-role.kubernetes.io/master"] if spec_node.role == "master" else [])
        ready = _condition(node, "Ready")
        assert (ready["status"], ready["reason"]) == ("True", "KubeletReady")
        for pressure in ("MemoryPressure", "DiskPressure", "PIDPressure"):
            assert _condition(node, pressure)["status"] == "False"
        addresses = {(a["type"], a["address"]) for a in node["status"]["addresses"]}
        assert addresses == {("InternalIP", spec_node.ip), ("Hostname", spec_node.name),
                             ("InternalDNS", spec_node.name)}  # fmt: skip
        assert node["status"]["nodeInfo"]["kubeletVersion"] == seed.KUBELET_VERSION


def test_machines_point_at_their_nodes() -> None:
    nodes = {o["metadata"]["name"]: o for o in _of(OBJECTS, "Node")}
    machines = _of(OBJECTS, "Machine", "openshift-machine-api")
    assert {m["metadata"]["name"] for m in machines} == {n.machine_name for n in SPEC.nodes}
    for machine in machines:
        spec_node = next(n for n in SPEC.nodes if n.machine_name == machine["metadata"]["name"])
        ref = machine["status"]["nodeRef"]
        assert ref["name"] == spec_node.name
        assert ref["uid"] == nodes[ref["name"]]["metadata"]["uid"]
        internal_ip = [a["address"] for a in machine["status"]["addresses"] if a["type"] == "InternalIP"]
        assert internal_ip == [spec_node.ip]
        internal_dns = [a["address"] for a in machine["status"]["addresses"] if a["type"] == "InternalDNS"]
        assert internal_dns == [spec_node.name]
        assert machine["spec"]["providerID"] == nodes[ref["name"]]["spec"]["providerID"]
        assert machine["metadata"]["annotations"]["machine.openshift.io/instance-state"] == "running"
        assert machine["metadata"]["labels"]["machine.openshift.io/cluster-api-cluster"] == SPEC.infra_id
        assert machine["status"]["phase"] == "Running"
        provider = machine["status"]["providerStatus"]
        assert (provider["instanceId"], provider["instanceState"]) == (spec_node.instance_id, "running")
        assert provider["conditions"][0]["reason"] == "MachineCreationSucceeded"
        value = machine["spec"]["providerSpec"]["value"]
        assert value["kind"] == "AWSMachineProviderConfig"
        assert value["placement"]["availabilityZone"] == spec_node.zone


# ---- openshift-etcd ---------------------------------------------------------------------------
def test_exactly_three_etcd_secrets_per_master() -> None:
    secrets = _of(OBJECTS, "Secret", "openshift-etcd")
    for node in SPEC.nodes:
        mine = sorted(s["metadata"]["name"] for s in secrets if node.name in s["metadata"]["name"])  # | grep
        expected = [f"etcd-{k}-{node.name}" for k in ("peer", "serving", "serving-metrics")]
        assert mine == (expected if node.role == "master" else [])
        for secret in (s for s in secrets if s["metadata"]["name"] in mine):
            assert secret["type"] == "kubernetes.io/tls"
            assert set(secret["data"]) == {"tls.crt", "tls.key"}
            assert b"etcdguard-sim placeholder" in base64.b64decode(secret["data"]["tls.crt"])


def test_etcd_pods_quorum_guard_and_installers() -> None:
    pods = {p["metadata"]["name"]: p for p in _of(OBJECTS, "Pod", "openshift-etcd")}
    revision = str(layout.INITIAL_REVISIONS["etcd"])
    for node in SPEC.masters:
        pod = pods[f"etcd-{node.name}"]
        assert pod["metadata"]["labels"] == {
            "app": "etcd",
            "k8s-app": "etcd",
            "etcd": "true",
            "revision": revision,
        }
        assert (pod["spec"]["nodeName"], pod["spec"]["hostNetwork"]) == (node.name, True)
        assert [c["name"] for c in pod["spec"]["containers"]] == [
            "etcdctl", "etcd", "etcd-metrics", "etcd-health-monitor", "etcd-readyz",
        ]  # fmt: skip
        status = pod["status"]
        assert (status["phase"], status["podIP"]) == ("Running", node.ip)
        assert all(c["ready"] and c["restartCount"] == 0 and "running" in c["state"]
                   for c in status["containerStatuses"])  # fmt: skip
        for prefix in ("installer", "revision-pruner"):
            done = pods[f"{prefix}-{revision}-{node.name}"]
            assert done["status"]["phase"] == "Succeeded"
            assert done["status"]["containerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"
    guard = _one(OBJECTS, "Deployment", "etcd-quorum-guard")
    assert guard["spec"]["replicas"] == guard["status"]["readyReplicas"] == 3
    guard_pods = [p for name, p in pods.items() if name.startswith("etcd-quorum-guard-")]
    assert sorted(p["spec"]["nodeName"] for p in guard_pods) == sorted(n.name for n in SPEC.masters)
    assert all(
        re.fullmatch(r"etcd-quorum-guard-[a-z0-9]{10}-[a-z0-9]{5}", p["metadata"]["name"]) for p in guard_pods
    )
    scripts = _one(OBJECTS, "ConfigMap", "etcd-scripts")
    assert set(scripts["data"]) == {
        "etcd.env",
        "cluster-backup.sh",
        "cluster-restore.sh",
        "etcd-common-tools",
    }
    assert f'export ETCDCTL_ENDPOINTS="{",".join(SPEC.etcd_endpoints())}"' in scripts["data"]["etcd.env"]


def test_other_control_plane_pods_run_on_every_master() -> None:
    for namespace, prefix, operand in (
        ("openshift-kube-apiserver", "kube-apiserver", "kube-apiserver"),
        ("openshift-kube-controller-manager", "kube-controller-manager", "kube-controller-manager"),
        ("openshift-kube-scheduler", "openshift-kube-scheduler", "kube-scheduler"),
    ):
        pods = _of(OBJECTS, "Pod", namespace)
        assert sorted(p["metadata"]["name"] for p in pods) == sorted(
            f"{prefix}-{n.name}" for n in SPEC.masters
        )
        for pod in pods:
            assert pod["status"]["phase"] == "Running"
            assert pod["metadata"]["labels"]["revision"] == str(layout.INITIAL_REVISIONS[operand])


# ---- certificates and config --------------------------------------------------------------------
def test_kubelet_signer_is_valid_for_365_days_from_install() -> None:
    signer = _one(OBJECTS, "Secret", "kube-apiserver-to-kubelet-signer")
    assert signer["metadata"]["namespace"] == "openshift-kube-apiserver-operator"
    assert signer["type"] == "kubernetes.io/tls"
    annotations = signer["metadata"]["annotations"]
    not_after = annotations["auth.openshift.io/certificate-not-after"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", not_after)
    not_before = dt.datetime.fromisoformat(annotations["auth.openshift.io/certificate-not-before"])
    assert not_before == NOW - seed.INSTALL_AGE
    assert _time(not_after) - not_before == dt.timedelta(days=365)


def test_old_kubelet_csrs_are_approved_and_issued() -> None:
    csrs = _of(OBJECTS, "CertificateSigningRequest")
    by_signer = Counter(c["spec"]["signerName"] for c in csrs)
    assert by_signer == {"kubernetes.io/kube-apiserver-client-kubelet": len(SPEC.nodes),
                         "kubernetes.io/kubelet-serving": len(SPEC.nodes)}  # fmt: skip
    for csr in csrs:
        assert re.fullmatch(r"csr-[a-z0-9]{5}", csr["metadata"]["name"])
        approved = _condition(csr, "Approved")
        assert (approved["status"], approved["reason"]) == ("True", "NodeCSRApprove")
        assert approved["message"] == "This CSR was approved by the Node CSR Approver"
        assert csr["status"]["certificate"]
        assert b"CERTIFICATE REQUEST" in base64.b64decode(csr["spec"]["request"])
        if csr["spec"]["signerName"] == "kubernetes.io/kubelet-serving":
            assert csr["spec"]["username"].startswith("system:node:ip-127-1-0-")
            assert "server auth" in csr["spec"]["usages"]
        else:
            assert csr["spec"]["username"].endswith(":node-bootstrapper")


def test_cluster_config_proxy_apiserver_infrastructure() -> None:
    proxy = _one(OBJECTS, "Proxy", "cluster")
    assert (proxy["spec"], proxy["status"]) == ({"trustedCA": {"name": ""}}, {})
    assert "encryption" not in _one(OBJECTS, "APIServer", "cluster")["spec"]
    for kind in ("identity", "aescbc"):
        objects = seed.seed_objects(SPEC, now=NOW, encryption=kind)  # type: ignore[arg-type]
        assert _one(objects, "APIServer", "cluster")["spec"]["encryption"] == {"type": kind}
    infra = _one(OBJECTS, "Infrastructure", "cluster")["status"]
    assert (infra["infrastructureName"], infra["platform"], infra["apiServerURL"]) == (
        SPEC.infra_id, "AWS", SPEC.api_url,
    )  # fmt: skip


# ---- user workloads ---------------------------------------------------------------------------
def test_user_workloads_have_bound_attached_volumes() -> None:
    nodes = {n.name for n in SPEC.nodes}
    pvs = {o["metadata"]["name"]: o for o in _of(OBJECTS, "PersistentVolume")}
    attachments = _of(OBJECTS, "VolumeAttachment")
    for namespace in ("shop", "payments"):
        kinds = Counter(o["kind"] for o in OBJECTS if o["metadata"].get("namespace") == namespace)
        for kind in ("Deployment", "Service", "ConfigMap", "Secret", "PersistentVolumeClaim", "Pod"):
            assert kinds[kind] >= 1, f"{namespace} has no {kind}"
        for pvc in _of(OBJECTS, "PersistentVolumeClaim", namespace):
            pv = pvs[pvc["spec"]["volumeName"]]
            assert pv["spec"]["claimRef"]["name"] == pvc["metadata"]["name"]
            assert pv["spec"]["claimRef"]["uid"] == pvc["metadata"]["uid"]
            assert pvc["status"]["phase"] == pv["status"]["phase"] == "Bound"
            mine = [
                a
                for a in attachments
                if a["spec"]["source"]["persistentVolumeName"] == pv["metadata"]["name"]
            ]
            assert len(mine) == 1
            assert mine[0]["spec"]["nodeName"] in nodes
            assert mine[0]["status"]["attached"] is True
            pods = _of(OBJECTS, "Pod", namespace)
            assert [p["spec"]["nodeName"] for p in pods] == [mine[0]["spec"]["nodeName"]]
