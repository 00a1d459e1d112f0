"""The simulator's cluster faults (`etcdguard_sim.faults.cluster`), each checked with the guide's
own diagnostic commands (sections 4.2.2, 4.2.3 and 4.3.3) through the real `kubectl`, `ssh` and
`etcdctl`, then undone where the guide expects the cluster to recover by itself.

One cluster for the module; the tests run in file order and each leaves the cluster healthy,
except the last two (the crash-looping member and the expired certificates, which need the
guide's procedures: see test_runbooks). Seconds from each fault to its symptoms are printed at
the end (`pytest -s`).
"""

from __future__ import annotations

import time

import pytest
from etcdguard_sim import layout
from etcdguard_sim.faults import cluster as faults_cluster

from tests import guidetools as g

pytestmark = pytest.mark.integration

TIMINGS = g.Timings("fault -> symptom (s)")


def _healthy(spec: layout.SimSpec) -> bool:
    """What the guide's checks show on a healthy cluster: every machine running, no unreachable
    or NotReady master, every etcd member available."""
    return (
        not g.lines(g.run(spec, g.MACHINES_NOT_RUNNING).stdout)
        and g.run(spec, g.UNREACHABLE).returncode == 1
        and g.run(spec, g.NOT_READY_MASTERS).returncode == 1
        and g.members_message(spec) == "3 members are available"
    )


def _unhealthy_message(node: str) -> str:
    return f"2 of 3 members are available, {node} is unhealthy"


def _etcd_row(spec: layout.SimSpec, node: str) -> list[str] | None:
    return next((r for r in g.rows(g.run(spec, g.ETCD_PODS).stdout) if r[0] == f"etcd-{node}"), None)


# ---- argument checks ---------------------------------------------------------------------------
def test_faults_refuse_impossible_requests(cluster: layout.SimSpec) -> None:
    with pytest.raises(ValueError, match="unknown fault 'melt-down': use one of stop-machine"):
        faults_cluster.run_fault(cluster, "melt-down")
    with pytest.raises(ValueError, match="needs a control-plane host"):
        faults_cluster.node_unreachable(cluster, cluster.workers[0].name)
    with pytest.raises(ValueError, match="leaves etcd its quorum: name at least 2"):
        faults_cluster.lose_quorum(cluster, nodes=[cluster.masters[1].name])
    with pytest.raises(ValueError, match="no node named 'ip-nowhere'"):
        faults_cluster.stop_machine(cluster, "ip-nowhere")
    with pytest.raises(ValueError, match="does not exist, so there is nothing to delete"):
        faults_cluster.delete_critical_object(cluster, name="no-such-namespace")
    assert set(faults_cluster.FAULTS) >= {
        "stop-machine", "start-machine", "node-not-ready", "node-ready", "etcd-crashloop",
        "lose-quorum", "delete-namespace", "expire-certs",
    }  # fmt: skip
    g.wait_for("a healthy cluster", lambda: _healthy(cluster))


# ---- faults the cluster recovers from by itself --------------------------------------------------
def test_stopped_machine(cluster: layout.SimSpec) -> None:
    node = cluster.masters[2].name
    t0 = time.monotonic()
    faults_cluster.run_fault(cluster, "stop-machine", node=node)
    stopped, took = g.wait_for(
        "the stopped machine", lambda: g.lines(g.run(cluster, g.MACHINES_NOT_RUNNING).stdout), since=t0
    )
    TIMINGS.add("stop-machine: `grep -v running` shows it", took)
    assert stopped == [f"{node}\tstopped"]
    tainted, took = g.wait_for(
        "the unreachable taint", lambda: g.lines(g.run(cluster, g.UNREACHABLE).stdout), since=t0
    )
    TIMINGS.add("stop-machine: unreachable taint", took)
    assert tainted == [
        f"{node}\tnode-role.kubernetes.io/master node.kubernetes.io/unreachable node.kubernetes.io/unreachable"
    ]
    _, took = g.wait_for(
        "the unhealthy member message",
        lambda: g.members_message(cluster) == _unhealthy_message(node),
        since=t0,
    )
    TIMINGS.add("stop-machine: `2 of 3 members ... unhealthy`", took)
    not_ready = g.rows(g.ok(cluster, g.NOT_READY_MASTERS))
    assert [r[:3] for r in not_ready] == [[node, "NotReady", "master"]]
    assert g.ssh(cluster, node, "true").returncode == 255  # the host is off

    t0 = time.monotonic()
    faults_cluster.run_fault(cluster, "start-machine", node=node)
    _, took = g.wait_for("the cluster to recover", lambda: _healthy(cluster), timeout=60, since=t0)
    TIMINGS.add("start-machine: healthy again", took)
    assert g.ssh(cluster, node, "true").returncode == 0


def test_node_not_ready(cluster: layout.SimSpec) -> None:
    node = cluster.masters[1].name
    t0 = time.monotonic()
    faults_cluster.run_fault(cluster, "node-not-ready", node=node)
    not_ready, took = g.wait_for(
        "NotReady", lambda: g.rows(g.run(cluster, g.NOT_READY_MASTERS).stdout), since=t0
    )
    TIMINGS.add("node-not-ready: NotReady", took)
    assert [r[:3] for r in not_ready] == [[node, "NotReady", "master"]]
    taints = g.ok(
        cluster, f"kubectl get node {node} -o jsonpath='{{range .spec.taints[*]}}{{.key}}{{\" \"}}'"
    )
    assert taints.split().count("node.kubernetes.io/not-ready") == 2
    assert not g.lines(g.run(cluster, g.MACHINES_NOT_RUNNING).stdout)  # the machine still runs
    assert g.run(cluster, g.UNREACHABLE).returncode == 1
    assert g.members_message(cluster) == "3 members are available"

    t0 = time.monotonic()
    faults_cluster.run_fault(cluster, "node-ready", node=node)
    _, took = g.wait_for("the node to be Ready", lambda: _healthy(cluster), since=t0)
    TIMINGS.add("node-ready: healthy again", took)


def test_node_unreachable_while_its_machine_runs(cluster: layout.SimSpec) -> None:
    node = cluster.masters[0].name
    t0 = time.monotonic()
    faults_cluster.run_fault(cluster, "node-unreachable", node=node)
    tainted, took = g.wait_for(
        "the unreachable taint", lambda: g.lines(g.run(cluster, g.UNREACHABLE).stdout), since=t0
    )
    TIMINGS.add("node-unreachable: unreachable taint", took)
    assert len(tainted) == 1
    assert tainted[0].startswith(f"{node}\t")
    assert tainted[0].split("\t")[1].split().count("node.kubernetes.io/unreachable") == 2
    assert not g.lines(g.run(cluster, g.MACHINES_NOT_RUNNING).stdout)  # guide 4.2.3 step 2: machine runs
    assert [r[:2] for r in g.rows(g.ok(cluster, g.NOT_READY_MASTERS))] == [[node, "NotReady"]]
    assert g.members_message(cluster) == "3 members are available"  # its containers keep running
    assert g.ssh(cluster, node, "systemctl is-active kubelet").stdout.strip() == "inactive"

    t0 = time.monotonic()
    faults_cluster.run_fault(cluster, "node-reachable", node=node)
    _, took = g.wait_for("the node to be Ready", lambda: _healthy(cluster), since=t0)
    TIMINGS.add("node-reachable: healthy again", took)


def test_lost_quorum_refuses_connections(cluster: layout.SimSpec) -> None:
    t0 = time.monotonic()
    stopped = faults_cluster.run_fault(cluster, "lose-quorum")
    assert stopped == [n.name for n in cluster.masters[1:]]
    refused = f"The connection to the server {cluster.api_host}:6443 was refused - did you specify the right host or port?"

    def api_refuses() -> bool:
        return refused in g.run(cluster, "kubectl get nodes").stderr

    _, took = g.wait_for("the API to refuse connections", api_refuses, timeout=30, since=t0)
    TIMINGS.add("lose-quorum: kubectl connection refused", took)
    survivor = cluster.masters[0]
    crt, key = cluster.etcd_cert(survivor, "peer")
    health = g.run(
        cluster,
        f"ETCDCTL_API=3 etcdctl --cacert={cluster.etcd_ca} --cert={crt} --key={key} "
        f"--endpoints={survivor.etcd_client_url} --command-timeout=3s endpoint health",
    )
    assert health.returncode == 1
    assert f"{survivor.etcd_client_url} is unhealthy: failed to commit proposal" in health.stderr

    t0 = time.monotonic()
    assert faults_cluster.run_fault(cluster, "regain-quorum") == stopped
    _, took = g.wait_for(
        "the API to answer again",
        lambda: g.run(cluster, "kubectl get nodes").returncode == 0,
        timeout=60,
        since=t0,
    )
    TIMINGS.add("regain-quorum: API answers again", took)
    _, took = g.wait_for("the cluster to recover", lambda: _healthy(cluster), timeout=60, since=t0)
    TIMINGS.add("regain-quorum: healthy again", took)


# ---- faults that need the guide's procedures --------------------------------------------------------
def test_deleted_namespace_is_gone_with_its_contents(cluster: layout.SimSpec) -> None:
    before = g.ok(cluster, "kubectl get configmaps,persistentvolumeclaims,deployments -n shop -o name")
    assert "deployment.apps/storefront" in before
    gone = faults_cluster.run_fault(cluster, "delete-namespace", name="shop")
    assert isinstance(gone, dict)
    assert gone["metadata"]["name"] == "shop"
    proc = g.run(cluster, "kubectl get namespace shop")
    assert proc.returncode == 1
    assert 'Error from server (NotFound): namespaces "shop" not found' in proc.stderr
    left = g.run(cluster, "kubectl get configmaps,persistentvolumeclaims,deployments -n shop")
    assert left.stdout == ""
    assert "No resources found in shop namespace." in left.stderr
    assert "payments" in g.ok(cluster, "kubectl get namespaces")  # only what was named goes


def test_crash_looping_etcd_member(cluster: layout.SimSpec) -> None:
    node = cluster.masters[2].name
    t0 = time.monotonic()
    faults_cluster.run_fault(cluster, "etcd-crashloop", node=node)

    def crashing() -> list[str] | None:
        row = _etcd_row(cluster, node)
        return row if row and row[2] in ("Error", "CrashLoopBackOff") and int(row[3]) >= 2 else None

    row, took = g.wait_for("the crash-looping etcd pod", crashing, since=t0)
    TIMINGS.add("etcd-crashloop: Error/CrashLoopBackOff, 2 restarts", took)
    assert row[1] == "4/5"
    _, took = g.wait_for(
        "the unhealthy member", lambda: g.members_message(cluster) == _unhealthy_message(node), since=t0
    )
    TIMINGS.add("etcd-crashloop: `2 of 3 members ... unhealthy`", took)
    others = [r for r in g.rows(g.ok(cluster, g.ETCD_PODS)) if r[0] != f"etcd-{node}"]
    assert [r[1:3] for r in others] == [["5/5", "Running"]] * 2
    # 4.2.3 step 3: the machines run and every master is Ready, so this is the crash-loop case.
    assert not g.lines(g.run(cluster, g.MACHINES_NOT_RUNNING).stdout)
    assert {r[1] for r in g.rows(g.ok(cluster, g.MASTERS))[1:]} == {"Ready"}
    healthy_pod = f"etcd-{cluster.masters[0].name}"
    health = g.rsh(cluster, healthy_pod, "etcdctl endpoint health --cluster")
    assert health.returncode == 1
    assert f"{cluster.node(node).etcd_client_url} is unhealthy" in health.stderr
    # The restarts keep counting, with a growing back-off.
    restarts = int(row[3])

    def restarted() -> list[str] | None:
        row = _etcd_row(cluster, node)
        return row if row and int(row[3]) > restarts else None

    again, _ = g.wait_for("more restarts", restarted, timeout=20)
    assert again[2] in ("Error", "CrashLoopBackOff")


def test_expired_certificates_wait_for_an_admin(cluster: layout.SimSpec) -> None:
    t0 = time.monotonic()
    expired = faults_cluster.expire_certificates(cluster)
    assert sorted(expired) == sorted(n.name for n in cluster.nodes)

    def all_not_ready() -> bool:
        table = g.rows(g.ok(cluster, "kubectl get nodes"))[1:]
        return len(table) == len(cluster.nodes) and {r[1] for r in table} == {"NotReady"}

    _, took = g.wait_for("every node NotReady", all_not_ready, since=t0)
    TIMINGS.add("expire-certs: every node NotReady", took)

    def bootstrapper_csrs() -> list[list[str]] | None:
        pending = [r for r in g.rows(g.ok(cluster, "kubectl get csr")) if r[-1] == "Pending"]
        return pending if len(pending) == len(cluster.nodes) else None

    pending, took = g.wait_for("a pending CSR per node", bootstrapper_csrs, since=t0)
    TIMINGS.add("expire-certs: a pending CSR per node", took)
    for r in pending:
        assert r[2:4] == [
            "kubernetes.io/kube-apiserver-client-kubelet",
            "system:serviceaccount:openshift-machine-config-operator:node-bootstrapper",
        ]
    verdicts = g.verdicts(cluster)
    assert sorted(v.node_name or "" for v in verdicts) == sorted(n.name for n in cluster.nodes)
    assert all(v.approve and v.kind == "client" for v in verdicts), verdicts
    # Nobody approves them: the cluster stays so (the machine approver refuses existing nodes).
    time.sleep(3)
    assert all_not_ready()
    assert len(g.verdicts(cluster)) == len(cluster.nodes)
