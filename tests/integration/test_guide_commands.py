"""The guide's own `oc` commands, run with the real `kubectl` (oc is not available; `oc` is
replaced by `kubectl` and the rest of each command is left as written), against the simulated
cluster over TLS: they must print what the guide shows for a healthy cluster.

One deliberate change: the guide's 4.2.2 command filters on `EtcMembersAvailable` (a typo in the
4.8 Japanese guide; it prints an empty line on any cluster). The condition is
`EtcdMembersAvailable`, which is what the command here asks for.
"""

from __future__ import annotations

import datetime as dt
import re

import pytest
from etcdguard_sim import layout

from tests.simtools import kubectl

pytestmark = pytest.mark.integration


def _rows(out: str) -> list[list[str]]:
    return [line.split() for line in out.strip().splitlines()]


def test_get_master_nodes_shows_three_ready_masters(sim: layout.SimSpec) -> None:
    out = kubectl(sim, "get", "nodes", "-l", "node-role.kubernetes.io/master").stdout
    rows = _rows(out)
    assert rows[0] == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    assert sorted(r[0] for r in rows[1:]) == sorted(n.name for n in sim.masters)
    for row in rows[1:]:
        assert row[1] == "Ready"
        assert row[2] == "master"
        assert row[4].startswith("v1.21.")


def test_get_worker_nodes(sim: layout.SimSpec) -> None:
    rows = _rows(kubectl(sim, "get", "nodes", "-l", "node-role.kubernetes.io/worker").stdout)
    assert sorted(r[0] for r in rows[1:]) == sorted(n.name for n in sim.workers)
    assert {r[2] for r in rows[1:]} == {"worker"}


def test_etcd_members_available_message(sim: layout.SimSpec) -> None:
    out = kubectl(
        sim,
        "get",
        "etcd",
        '-o=jsonpath={range .items[0].status.conditions[?(@.type=="EtcdMembersAvailable")]}{.message}{"\\n"}',
    ).stdout
    assert [line for line in out.splitlines() if line] == ["3 members are available"]


def test_machines_instance_state_all_running(sim: layout.SimSpec) -> None:
    out = kubectl(
        sim,
        "get",
        "machines",
        "-A",
        '-o=jsonpath={range .items[*]}{@.status.nodeRef.name}{"\\t"}'
        '{@.status.providerStatus.instanceState}{"\\n"}',
    ).stdout
    lines = [line.split("\t") for line in out.strip().splitlines()]
    assert sorted(name for name, _ in lines) == sorted(n.name for n in sim.nodes)
    assert [line for line in lines if line[1] != "running"] == []  # `| grep -v running` is empty


def test_machines_wide_table(sim: layout.SimSpec) -> None:
    rows = _rows(kubectl(sim, "get", "machines", "-n", "openshift-machine-api", "-o", "wide").stdout)
    assert rows[0][:6] == ["NAME", "PHASE", "TYPE", "REGION", "ZONE", "AGE"]
    names = {r[0] for r in rows[1:]}
    assert {n.machine_name for n in sim.nodes} == names
    assert {r[1] for r in rows[1:]} == {"Running"}


def test_nodes_without_unreachable_taint(sim: layout.SimSpec) -> None:
    out = kubectl(
        sim,
        "get",
        "nodes",
        "-o",
        'jsonpath={range .items[*]}{"\\n"}{.metadata.name}{"\\t"}{range .spec.taints[*]}{.key}{" "}',
    ).stdout
    assert "unreachable" not in out
    master_lines = [ln for ln in out.splitlines() if ln.split("\t")[0] in {n.name for n in sim.masters}]
    assert len(master_lines) == 3
    assert all("node-role.kubernetes.io/master" in ln for ln in master_lines)


def test_etcd_pods_running(sim: layout.SimSpec) -> None:
    out = kubectl(sim, "get", "pods", "-n", "openshift-etcd").stdout
    rows = _rows(out)
    assert rows[0] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    etcd_rows = [r for r in rows[1:] if r[0].startswith("etcd-") and "quorum-guard" not in r[0]]
    assert sorted(r[0] for r in etcd_rows) == sorted(f"etcd-{n.name}" for n in sim.masters)
    for row in etcd_rows:
        ready, total = row[1].split("/")
        assert ready == total
        assert row[2] == "Running"
        assert row[3] == "0"
    assert len([r for r in rows[1:] if r[0].startswith("etcd-quorum-guard")]) == 3


def test_etcd_secrets_of_a_node(sim: layout.SimSpec) -> None:
    node = sim.masters[0]
    rows = _rows(kubectl(sim, "get", "secrets", "-n", "openshift-etcd").stdout)
    mine = [r for r in rows if node.name in r[0]]  # `| grep <node>`
    assert sorted(r[0] for r in mine) == sorted(
        f"etcd-{k}-{node.name}" for k in ("peer", "serving", "serving-metrics")
    )
    assert all(r[1] == "kubernetes.io/tls" and r[2] == "2" for r in mine)


def test_patch_etcd_force_redeployment(sim: layout.SimSpec) -> None:
    reason = "recovery-" + dt.datetime.now(dt.UTC).isoformat(sep=" ")
    out = kubectl(
        sim,
        "patch",
        "etcd",
        "cluster",
        f'-p={{ "spec": {{ "forceRedeploymentReason": "{reason}" }} }}',
        "--type=merge",
    ).stdout
    assert out.strip() == "etcd.operator.openshift.io/cluster patched"
    got = kubectl(sim, "get", "etcd", "cluster", "-o", "jsonpath={.spec.forceRedeploymentReason}").stdout
    assert got == reason


def test_get_csr(sim: layout.SimSpec) -> None:
    rows = _rows(kubectl(sim, "get", "csr").stdout)
    assert rows[0] == ["NAME", "AGE", "SIGNERNAME", "REQUESTOR", "CONDITION"]
    assert len(rows) > 1
    assert {r[-1] for r in rows[1:]} <= {"Approved,Issued", "Pending", "Approved", "Denied"}
    signers = {r[2] for r in rows[1:]}
    assert "kubernetes.io/kube-apiserver-client-kubelet" in signers
    assert "kubernetes.io/kubelet-serving" in signers


def test_get_clusteroperators(sim: layout.SimSpec) -> None:
    rows = _rows(kubectl(sim, "get", "clusteroperators").stdout)
    assert rows[0] == ["NAME", "VERSION", "AVAILABLE", "PROGRESSING", "DEGRADED", "SINCE"]
    by_name = {r[0]: r for r in rows[1:]}
    for name in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        assert by_name[name][1:5] == [sim.ocp_version, "True", "False", "False"]


def test_kubelet_signer_not_after(sim: layout.SimSpec) -> None:
    out = kubectl(
        sim,
        "-n",
        "openshift-kube-apiserver-operator",
        "get",
        "secret",
        "kube-apiserver-to-kubelet-signer",
        "-o",
        r"jsonpath={.metadata.annotations.auth\.openshift\.io/certificate-not-after}",
    ).stdout
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", out), out
    not_after = dt.datetime.strptime(out, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    assert not_after > dt.datetime.now(dt.UTC)


def test_exec_etcdctl_member_list(sim: layout.SimSpec) -> None:
    pod = f"etcd-{sim.masters[1].name}"
    out = kubectl(
        sim, "exec", "-n", "openshift-etcd", pod, "-c", "etcdctl", "--",
        "etcdctl", "member", "list", "-w", "table",
    ).stdout  # fmt: skip
    header = next(ln for ln in out.splitlines() if ln.startswith("|"))
    assert [c.strip() for c in header.strip("|").split("|")][:4] == ["ID", "STATUS", "NAME", "PEER ADDRS"]
    members = [ln for ln in out.splitlines() if ln.startswith("| ") and "started" in ln]
    assert len(members) == 3
    for node in sim.masters:
        assert any(node.name in ln and f"https://{node.ip}:2380" in ln for ln in members)


def test_exec_nonzero_exit_code_propagates(sim: layout.SimSpec) -> None:
    pod = f"etcd-{sim.masters[0].name}"
    proc = kubectl(
        sim, "exec", "-n", "openshift-etcd", pod, "-c", "etcdctl", "--",
        "etcdctl", "get", "--bogus-flag",
    check=False)  # fmt: skip
    assert proc.returncode != 0
    assert "unknown flag" in proc.stderr
