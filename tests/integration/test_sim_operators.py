"""The simulated etcd operator and static-pod operators, seen the way an admin sees them: the
real `kubectl` and `etcdctl` against one simulated cluster for the whole module.

Covered: the EtcdMembers* messages for a healthy cluster, for a stopped member (its manifest
moved away inside the host) and after it comes back; a forced redeployment of etcd and of the
kube-apiserver rolled out one node at a time; a member removed with etcdctl whose data dir is
deleted comes back as a new member on the next forced redeployment. The message builders are
also checked directly.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from etcdguard_sim import layout
from etcdguard_sim.controllers import _revisions, etcd_operator
from etcdguard_sim.hosts import ns as hostns

from tests.simtools import etcdctl, kubectl

pytestmark = pytest.mark.integration


# ---- helpers -------------------------------------------------------------------------------------
def _wait(what: str, probe: Callable[[], Any], *, timeout: float = 30.0, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"{what} did not happen within {timeout:.0f} s (last probe: {last!r})")


def _cr(spec: layout.SimSpec, kind: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(kubectl(spec, "get", kind, "cluster", "-o", "json").stdout)
    return out


def _condition(spec: layout.SimSpec, kind: str, ctype: str) -> dict[str, Any]:
    for cond in _cr(spec, kind)["status"]["conditions"]:
        if cond["type"] == ctype:
            return dict(cond)
    raise AssertionError(f"{kind}/cluster has no {ctype} condition")


def _in_host(spec: layout.SimSpec, node: layout.NodeSpec, *argv: str) -> None:
    pid = hostns.holder_pid(spec, node)
    assert pid is not None, f"host {node.name} has no namespace holder"
    subprocess.run(hostns.enter_argv(pid, list(argv)), check=True, capture_output=True, timeout=30)


def _members(spec: layout.SimSpec) -> list[dict[str, Any]]:
    proc = etcdctl(spec, "member", "list", "-w", "json", endpoints=spec.etcd_endpoints())
    assert proc.returncode == 0, proc.stderr
    members: list[dict[str, Any]] = json.loads(proc.stdout)["members"]
    return members


def _manifest_revision(spec: layout.SimSpec, node: layout.NodeSpec, component: str) -> str:
    path = spec.host_root(node) / "etc" / "kubernetes" / "manifests" / f"{component}-pod.yaml"
    return str(yaml.safe_load(path.read_text())["metadata"]["labels"]["revision"])


def _force_redeployment(spec: layout.SimSpec, kind: str, reason: str) -> None:
    patch = json.dumps({"spec": {"forceRedeploymentReason": reason}})
    kubectl(spec, "patch", kind, "cluster", f"-p={patch}", "--type=merge")


def _watch_rollout(spec: layout.SimSpec, kind: str, revision: int, *, timeout: float = 60.0) -> list[str]:
    """Poll the CR until every node is at `revision`; returns the Progressing messages seen and
    checks that no two nodes ever had a targetRevision at the same time."""
    seen: list[str] = []
    wanted = f"3 nodes are at revision {revision}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = _cr(spec, kind)["status"]
        targets = [ns["nodeName"] for ns in status["nodeStatuses"] if ns.get("targetRevision")]
        assert len(targets) <= 1, f"{kind}: more than one node installing at once: {targets}"
        cond = next(c for c in status["conditions"] if c["type"] == "NodeInstallerProgressing")
        entry = f"{cond['status']}|{cond.get('reason', '')}|{cond['message']}"
        if not seen or seen[-1] != entry:
            seen.append(entry)
        if cond["status"] == "False" and cond["message"] == wanted:
            return seen
        time.sleep(0.3)
    raise AssertionError(f"{kind} did not reach revision {revision} within {timeout:.0f} s: {seen}")


# ---- message builders -------------------------------------------------------------------------
def test_member_messages_follow_ceo_health_go() -> None:
    members = [
        {
            "ID": 1,
            "name": "a",
            "peerURLs": ["https://10.0.0.1:2380"],
            "clientURLs": ["https://10.0.0.1:2379"],
        },
        {
            "ID": 2,
            "name": "b",
            "peerURLs": ["https://10.0.0.2:2380"],
            "clientURLs": ["https://10.0.0.2:2379"],
        },
        {"ID": 3, "peerURLs": ["https://10.0.0.3:2380"]},
    ]
    assert etcd_operator.member_status_message(members[:2], {1, 2}) == "2 members are available"
    assert (
        etcd_operator.member_status_message(members, {1})
        == "1 of 3 members are available, b is unhealthy, NAME-PENDING-10.0.0.3 has not started"
    )
    conditions = {c["type"]: c for c in etcd_operator.member_conditions(members, {1})}
    assert conditions["EtcdMembersAvailable"]["status"] == "False"
    assert conditions["EtcdMembersAvailable"]["reason"] == "No quorum"
    assert conditions["EtcdMembersDegraded"]["reason"] == "UnhealthyMembers"
    assert conditions["EtcdMembersProgressing"]["reason"] == "MembersNotStarted"


def test_installer_messages_follow_library_go() -> None:
    statuses = [{"nodeName": "a", "currentRevision": 7}, {"nodeName": "b", "currentRevision": 7}]
    progressing, available = _revisions.installer_conditions(statuses, 8)
    assert progressing["status"] == "True"
    assert progressing["message"] == "2 nodes are at revision 7; 0 nodes have achieved new revision 8"
    assert (
        available["message"]
        == "2 nodes are active; 2 nodes are at revision 7; 0 nodes have achieved new revision 8"
    )
    statuses[0]["currentRevision"] = 8
    progressing, _ = _revisions.installer_conditions(statuses, 8)
    assert progressing["message"] == "1 nodes are at revision 7; 1 nodes are at revision 8"
    statuses[1]["currentRevision"] = 8
    progressing, available = _revisions.installer_conditions(statuses, 8)
    assert (progressing["status"], progressing["reason"]) == ("False", "AllNodesAtLatestRevision")
    assert available["message"] == "2 nodes are active; 2 nodes are at revision 8"


# ---- against the cluster ----------------------------------------------------------------------
def test_healthy_cluster(cluster: layout.SimSpec) -> None:
    available = _condition(cluster, "etcd", "EtcdMembersAvailable")
    assert (available["status"], available["reason"]) == ("True", "EtcdQuorate")
    assert available["message"] == "3 members are available"
    degraded = _condition(cluster, "etcd", "EtcdMembersDegraded")
    assert (degraded["status"], degraded["message"]) == ("False", "No unhealthy members found")
    out = kubectl(
        cluster, "get", "kubeapiserver", "-o=jsonpath={range .items[0].status.conditions"
        '[?(@.type=="NodeInstallerProgressing")]}{.reason}{"\\n"}{.message}{"\\n"}{end}',
    ).stdout  # fmt: skip
    assert out == "AllNodesAtLatestRevision\n3 nodes are at revision 12\n"

    def mirrors_running() -> bool:
        rows = kubectl(cluster, "get", "pods", "-n", "openshift-etcd", "--no-headers").stdout.splitlines()
        etcd_rows = [r.split() for r in rows if r.startswith("etcd-ip-")]
        return len(etcd_rows) == 3 and all(r[1:3] == ["5/5", "Running"] for r in etcd_rows)

    _wait("three etcd mirror pods 5/5 Running", mirrors_running)


def test_stopped_member_is_reported_and_recovers(cluster: layout.SimSpec) -> None:
    node = cluster.masters[2]
    _in_host(cluster, node, "mv", "/etc/kubernetes/manifests/etcd-pod.yaml", "/tmp")
    try:
        expected = f"2 of 3 members are available, {node.name} is unhealthy"
        _wait(
            "the unhealthy member message",
            lambda: _condition(cluster, "etcd", "EtcdMembersAvailable")["message"] == expected,
            timeout=45,
        )
        degraded = _condition(cluster, "etcd", "EtcdMembersDegraded")
        assert (degraded["status"], degraded["reason"], degraded["message"]) == (
            "True",
            "UnhealthyMembers",
            expected,
        )

        def not_ready() -> bool:  # the mirror pod follows the kubelet's report a pass later
            pod = kubectl(
                cluster,
                "get",
                "pods",
                "-n",
                "openshift-etcd",
                f"etcd-{node.name}",
                "--no-headers",
                check=False,
            )
            return pod.returncode != 0 or pod.stdout.split()[1] == "0/5"

        _wait("the mirror pod at 0/5", not_ready, timeout=45)
    finally:
        _in_host(cluster, node, "mv", "/tmp/etcd-pod.yaml", "/etc/kubernetes/manifests/")
    _wait(
        "all members available again",
        lambda: _condition(cluster, "etcd", "EtcdMembersAvailable")["message"] == "3 members are available",
        timeout=60,
    )
    _wait(
        "the mirror pod back at 5/5",
        lambda: (
            kubectl(
                cluster, "get", "pods", "-n", "openshift-etcd", f"etcd-{node.name}", check=False
            ).stdout.find("5/5")
            >= 0
        ),
    )


def test_forced_redeployment_rolls_etcd_out_node_by_node(cluster: layout.SimSpec) -> None:
    _force_redeployment(cluster, "etcd", "recovery-2021-06-25 19:00:35.123456789+00:00")
    seen = _watch_rollout(cluster, "etcd", 8)
    assert any(s.startswith("True||") and "revision 8" in s for s in seen), seen
    assert seen[-1] == "False|AllNodesAtLatestRevision|3 nodes are at revision 8"
    available = _condition(cluster, "etcd", "StaticPodsAvailable")
    assert available["message"] == "3 nodes are active; 3 nodes are at revision 8"
    assert {_manifest_revision(cluster, n, "etcd") for n in cluster.masters} == {"8"}
    cr = _cr(cluster, "etcd")
    assert cr["status"]["latestAvailableRevision"] == 8
    assert all(ns["currentRevision"] == 8 for ns in cr["status"]["nodeStatuses"])
    pods = kubectl(cluster, "get", "pods", "-n", "openshift-etcd", "--no-headers").stdout
    for node in cluster.masters:
        assert f"installer-8-{node.name}" in pods
    members = _members(cluster)
    assert sorted(m.get("name", "") for m in members) == sorted(n.name for n in cluster.masters)
    _wait(
        "all members available after the rollout",
        lambda: _condition(cluster, "etcd", "EtcdMembersAvailable")["message"] == "3 members are available",
        timeout=15,
    )


def test_forced_redeployment_of_the_kube_apiserver(cluster: layout.SimSpec) -> None:
    _force_redeployment(cluster, "kubeapiserver", "recovery-kas")
    seen = _watch_rollout(cluster, "kubeapiserver", 13)
    assert "True||2 nodes are at revision 12; 1 nodes are at revision 13" in seen or any(
        "revision 13" in s and s.startswith("True||") for s in seen
    ), seen
    assert {_manifest_revision(cluster, n, "kube-apiserver") for n in cluster.masters} == {"13"}
    out = kubectl(
        cluster, "get", "kubeapiserver", "-o=jsonpath={range .items[0].status.conditions"
        '[?(@.type=="NodeInstallerProgressing")]}{.reason}{"\\n"}{.message}{"\\n"}{end}',
    ).stdout  # fmt: skip
    assert out == "AllNodesAtLatestRevision\n3 nodes are at revision 13\n"
    # A second pass of the same reason makes no new revision.
    time.sleep(2)
    assert _cr(cluster, "kubeapiserver")["status"]["latestAvailableRevision"] == 13


def test_removed_member_comes_back_on_forced_redeployment(cluster: layout.SimSpec) -> None:
    node = cluster.masters[2]
    member = next(m for m in _members(cluster) if m.get("name") == node.name)
    proc = etcdctl(
        cluster, "member", "remove", format(member["ID"], "x"), endpoints=[cluster.masters[0].etcd_client_url]
    )
    assert proc.returncode == 0, proc.stderr
    _in_host(cluster, node, "rm", "-rf", "/var/lib/etcd/member")
    _wait(
        "two members left",
        lambda: _condition(cluster, "etcd", "EtcdMembersAvailable")["message"] == "2 members are available",
        timeout=15,
    )
    _force_redeployment(cluster, "etcd", "single-master-recovery-2021-06-25")
    _watch_rollout(cluster, "etcd", 9, timeout=90)

    def three_started() -> bool:
        members = _members(cluster)
        return len(members) == 3 and all(m.get("clientURLs") for m in members)

    _wait("three started members", three_started, timeout=20)
    names = sorted(m["name"] for m in _members(cluster))
    assert names == sorted(n.name for n in cluster.masters)
    new_id = next(m["ID"] for m in _members(cluster) if m["name"] == node.name)
    assert new_id != member["ID"]
    _wait(
        "all members available",
        lambda: _condition(cluster, "etcd", "EtcdMembersAvailable")["message"] == "3 members are available",
        timeout=60,
    )
