"""The guide's procedures 4.3.3, 4.2.4.2 and 4.2.4.1, scripted step by step with the commands
as written (`oc` -> `kubectl`, `oc rsh` -> `kubectl exec`, `oc debug node` + `chroot /host` ->
`ssh` + `sudo`: see `tests.guidetools`), each recovering the simulated cluster from the fault
that calls for it. No etcdguard code runs except `etcdguard.core.csr.validate_csr`, used where the
guide says to review a CSR before approving it.

One cluster for the module, in file order: each procedure leaves the cluster healthy for the
next. Seconds per step are printed at the end (`pytest -s`).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import yaml
from etcdguard_sim import layout
from etcdguard_sim.faults import cluster as faults_cluster

from tests import guidetools as g

pytestmark = pytest.mark.integration

TIMINGS = g.Timings("runbook steps (s)")


def _fresh(spec: layout.SimSpec) -> layout.SimSpec:
    return layout.SimSpec.load(spec.state_dir)


def _members(spec: layout.SimSpec, pod: str) -> list[tuple[str, str, str]]:
    """`etcdctl member list -w table` in the pod: (ID, STATUS, NAME) per row."""
    out = g.rsh(spec, pod, "etcdctl member list -w table")
    assert out.returncode == 0, out.stderr
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in out.stdout.splitlines()]
    return [(c[0], c[1], c[2]) for c in cells if len(c) == 6 and re.fullmatch("[0-9a-f]+", c[0])]


def _etcd_pods(spec: layout.SimSpec) -> list[list[str]]:
    return g.rows(g.run(spec, g.ETCD_PODS).stdout)


def _healthy_pod(spec: layout.SimSpec, unhealthy: str) -> str:
    """4.2.4.x step 1a: an etcd pod that is not on the affected node, and runs."""
    rows = _etcd_pods(spec)
    pod = next(r[0] for r in rows if r[0] != f"etcd-{unhealthy}" and r[1:3] == ["5/5", "Running"])
    return pod


def _remove_member(spec: layout.SimSpec, node: str) -> str:
    """Step 1 (4.2.4.1) / 2 (4.2.4.2): remove the member through a healthy etcd pod; returns the pod."""
    pod = _healthy_pod(spec, node)
    member_id = next(mid for mid, _, name in _members(spec, pod) if name == node)
    removed = g.rsh(spec, pod, f"etcdctl member remove {member_id}")
    assert removed.returncode == 0, removed.stderr
    # etcdctl prints both IDs with `%16x`: an ID of fewer than 16 hex digits is space-padded.
    assert re.fullmatch(rf"Member +{member_id} removed from cluster +[0-9a-f]+\n", removed.stdout), (
        removed.stdout
    )
    assert node not in [name for _, _, name in _members(spec, pod)]
    return pod


def _delete_secrets(spec: layout.SimSpec, node: str) -> None:
    """Step 2 (4.2.4.1) / 3 (4.2.4.2): the peer, serving and metrics secrets of the old member."""
    listed = g.rows(g.ok(spec, f"kubectl get secrets -n openshift-etcd | grep {node}"))
    assert [(r[0], r[1]) for r in listed] == [
        (f"etcd-{kind}-{node}", "kubernetes.io/tls") for kind in ("peer", "serving", "serving-metrics")
    ]
    for kind in ("peer", "serving", "serving-metrics"):
        out = g.ok(spec, f"kubectl delete secret -n openshift-etcd etcd-{kind}-{node}")
        assert out.strip() == f'secret "etcd-{kind}-{node}" deleted'


def _ready_nodes(spec: layout.SimSpec) -> bool:
    table = g.rows(g.ok(spec, "kubectl get nodes"))[1:]
    return bool(table) and all(r[1] == "Ready" for r in table)


# ---- 4.3.3 ------------------------------------------------------------------------------------------
def test_4_3_3_recover_from_expired_certificates(cluster: layout.SimSpec) -> None:
    faults_cluster.expire_certificates(cluster)
    g.wait_for(
        "every node NotReady",
        lambda: not any(r[1] == "Ready" for r in g.rows(g.ok(cluster, "kubectl get nodes"))[1:]),
    )
    start = time.monotonic()
    approved: list[str] = []

    def step() -> bool:
        # 1. `oc get csr`; 2. `oc describe csr <name>` for each pending one, checked with the
        # validator; 3-4. `oc adm certificate approve <name>` for the valid ones.
        pending = [r[0] for r in g.rows(g.ok(cluster, "kubectl get csr")) if r[-1] == "Pending"]
        for name in pending:
            described = g.ok(cluster, f"kubectl describe csr {name}")
            assert re.search(r"^Status:\s+Pending$", described, re.MULTILINE), described
        approved.extend(v.name for v in g.approve_valid(cluster))
        return _ready_nodes(cluster)

    _, took = g.wait_for("every node Ready", step, timeout=90, every=1.0)
    TIMINGS.add("4.3.3: approve CSRs until every node is Ready", took)
    nodes = len(_fresh(cluster).nodes)
    assert len(approved) == 2 * nodes  # a node-bootstrapper (client) and a serving CSR per node
    assert [r for r in g.rows(g.ok(cluster, "kubectl get csr")) if r[-1] == "Pending"] == []
    assert len({v.name for v in g.verdicts(cluster)}) == 0
    assert time.monotonic() - start < 90


# ---- 4.2.4.2 ----------------------------------------------------------------------------------------
def test_4_2_4_2_replace_a_crash_looping_member(cluster: layout.SimSpec) -> None:
    node = cluster.masters[2].name
    faults_cluster.etcd_crashloop(cluster, node)
    g.wait_for(
        "the crash-looping pod",
        lambda: any(
            r[0] == f"etcd-{node}" and r[2] in ("Error", "CrashLoopBackOff") for r in _etcd_pods(cluster)
        ),
    )
    g.wait_for("the unhealthy member", lambda: g.members_message(cluster).endswith(f"{node} is unhealthy"))
    start = time.monotonic()
    old_id = next(mid for mid, _, name in _members(cluster, _healthy_pod(cluster, node)) if name == node)

    # 1. Stop the crash-looping pod: move its manifest and the data directory away on the host.
    for command in (
        "sudo mkdir /var/lib/etcd-backup",
        "sudo mv /etc/kubernetes/manifests/etcd-pod.yaml /var/lib/etcd-backup/",
        "sudo mv /var/lib/etcd/ /tmp",
    ):
        done = g.ssh(cluster, node, command)
        assert done.returncode == 0, f"{command}: {done.stderr}"
    # 2. Remove the unhealthy member; 3. delete its secrets.
    pod = _remove_member(cluster, node)
    _delete_secrets(cluster, node)
    TIMINGS.add("4.2.4.2: steps 1-3 (host, member, secrets)", time.monotonic() - start)
    # 4. Force a redeployment.
    patched = g.ok(
        cluster,
        """kubectl patch etcd cluster -p='{"spec": {"forceRedeploymentReason": "single-master-recovery-'"$( date --rfc-3339=ns )"'"}}' --type=merge""",
    )
    assert patched.strip() == "etcd.operator.openshift.io/cluster patched"
    reason = g.ok(cluster, "kubectl get etcd cluster -o jsonpath='{.spec.forceRedeploymentReason}'")
    assert re.fullmatch(r"single-master-recovery-\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{9}[+-]\d\d:\d\d", reason)

    # Verification: every member healthy (`etcdctl endpoint health --cluster` in a running pod).
    last: list[str] = []

    def all_healthy() -> list[str] | None:
        health = g.rsh(cluster, pod, "etcdctl endpoint health --cluster")
        # etcdctl 3.4 writes these lines to stderr, after kubectl's "Defaulted container" line.
        found = [line for line in g.lines(health.stdout + health.stderr) if " is healthy" in line]
        last[:] = [str(health.returncode), health.stdout, health.stderr]
        return found if health.returncode == 0 and len(found) == 3 else None

    try:
        healthy, took = g.wait_for(
            "three healthy endpoints", all_healthy, timeout=120, every=1.0, since=start
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the last `etcdctl endpoint health --cluster` gave {last}") from None
    TIMINGS.add("4.2.4.2: whole procedure until 3 endpoints healthy", took)
    urls = sorted(line.split(" is healthy")[0] for line in healthy)
    assert urls == _fresh(cluster).etcd_endpoints()
    assert all(" is healthy: successfully committed proposal: took = " in line for line in healthy)
    members = _members(cluster, pod)
    assert sorted(name for _, _, name in members) == sorted(n.name for n in _fresh(cluster).masters)
    assert {status for _, status, _ in members} == {"started"}
    assert old_id not in [mid for mid, _, _ in members]
    g.wait_for(
        "three etcd pods 5/5 Running",
        lambda: [r[1:3] for r in _etcd_pods(cluster)] == [["5/5", "Running"]] * 3,
        timeout=30,
    )
    # The data of the broken member stays where the admin moved it.
    assert g.ssh(cluster, node, "sudo test -d /tmp/etcd/member/wal").returncode == 0


# ---- 4.2.4.1 ----------------------------------------------------------------------------------------
def test_4_2_4_1_replace_the_member_of_a_stopped_machine(cluster: layout.SimSpec, tmp_path: Path) -> None:
    old = cluster.masters[0]
    node = old.name
    faults_cluster.stop_machine(cluster, node)
    g.wait_for(
        "the stopped machine",
        lambda: g.lines(g.run(cluster, g.MACHINES_NOT_RUNNING).stdout) == [f"{node}\tstopped"],
    )
    g.wait_for("the unhealthy member", lambda: g.members_message(cluster).endswith(f"{node} is unhealthy"))
    start = time.monotonic()

    # 1. Remove the unhealthy member; 2. delete its secrets.
    pod = _remove_member(cluster, node)
    _delete_secrets(cluster, node)
    # 3a. The machine of the unhealthy member.
    wide = g.rows(g.ok(cluster, "kubectl get machines -n openshift-machine-api -o wide"))
    row = next(r for r in wide if node in r)
    machine, state = row[0], row[-1]
    assert state == "stopped"
    # 3b. Save it; 3c. give it the next free index and remove what must not be copied.
    g.ok(
        cluster,
        f"kubectl get machine {machine} -n openshift-machine-api -o yaml > new-master-machine.yaml",
        cwd=tmp_path,
    )
    saved = yaml.safe_load((tmp_path / "new-master-machine.yaml").read_text())
    saved.pop("status")
    indexes = [int(r[0].rsplit("-", 1)[1]) for r in wide[1:] if "-master-" in r[0]]
    new_name = re.sub(r"-\d+$", f"-{max(indexes) + 1}", machine)
    meta = saved["metadata"]
    meta["name"] = new_name
    if "selfLink" in meta:  # gone from the API since Kubernetes 1.20; the guide still names it
        meta["selfLink"] = (
            f"/apis/machine.openshift.io/v1beta1/namespaces/openshift-machine-api/machines/{new_name}"
        )
    saved["spec"].pop("providerID")
    for key in ("annotations", "generation", "resourceVersion", "uid"):
        meta.pop(key, None)
    (tmp_path / "new-master-machine.yaml").write_text(yaml.safe_dump(saved))
    # 3d. Delete the old machine; 3e. check it is gone; 3f. create the new one; 3g. check it.
    g.ok(cluster, f"kubectl delete machine -n openshift-machine-api {machine}")
    assert machine not in g.ok(cluster, "kubectl get machines -n openshift-machine-api -o wide")
    created = g.ok(cluster, "kubectl apply -f new-master-machine.yaml", cwd=tmp_path)
    assert created.strip() == f"machine.machine.openshift.io/{new_name} created"
    TIMINGS.add("4.2.4.1: steps 1-3f (member, secrets, machine)", time.monotonic() - start)

    def machine_row() -> list[str] | None:
        found = [
            r
            for r in g.rows(g.ok(cluster, "kubectl get machines -n openshift-machine-api -o wide"))
            if r[0] == new_name
        ]
        return found[0] if found else None

    def phase(wanted: str) -> list[str] | None:
        row = machine_row()
        return row if row is not None and row[1] == wanted else None

    _, took = g.wait_for("the new machine Provisioned", lambda: phase("Provisioned"), since=start)
    TIMINGS.add("4.2.4.1: new machine Provisioned", took)
    new_node = _fresh(cluster).node(
        next(n.name for n in _fresh(cluster).masters if n.machine_name == new_name)
    )
    assert new_node.name != node

    # The new node's kubelet asks for certificates: review (validator) and approve them.
    def node_ready() -> bool:
        g.approve_valid(cluster, node=new_node.name)
        ready = g.rows(g.run(cluster, f"kubectl get node {new_node.name} --no-headers").stdout)
        return bool(ready) and ready[0][1] == "Ready"

    _, took = g.wait_for("the new node Ready", node_ready, timeout=60, every=1.0, since=start)
    TIMINGS.add("4.2.4.1: new node Ready (CSRs approved)", took)
    running, _ = g.wait_for("the new machine Running", lambda: phase("Running"))
    assert g.verdicts(cluster) == []  # every CSR of the new node was valid and is approved
    assert running[6] == new_node.name
    assert running[-1] == "running"

    # Verification: every etcd pod runs; with only two, force a redeployment.
    def three_pods() -> bool:
        rows = _etcd_pods(cluster)
        return len(rows) == 3 and all(r[1:3] == ["5/5", "Running"] for r in rows)

    try:
        g.wait_for("three etcd pods", three_pods, timeout=60, every=1.0)
    except AssertionError:
        if len(_etcd_pods(cluster)) != 2:
            raise
        g.ok(
            cluster,
            """kubectl patch etcd cluster -p='{"spec": {"forceRedeploymentReason": "recovery-'"$( date --rfc-3339=ns )"'"}}' --type=merge""",
        )
        g.wait_for("three etcd pods after the redeployment", three_pods, timeout=90, every=1.0)
    names = sorted(r[0] for r in _etcd_pods(cluster))
    survivors = [n.name for n in cluster.masters if n.name != node]
    assert names == sorted(f"etcd-{n}" for n in [*survivors, new_node.name])

    seen: list[object] = []

    def three_members() -> list[tuple[str, str, str]] | None:
        members = _members(cluster, pod)
        seen[:] = [members]
        return members if len(members) == 3 and {s for _, s, _ in members} == {"started"} else None

    try:
        members, took = g.wait_for("three started members", three_members, timeout=60, since=start)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the last member list: {seen}") from None
    TIMINGS.add("4.2.4.1: whole procedure until 3 members started", took)
    assert sorted(name for _, _, name in members) == sorted([*survivors, new_node.name])
    g.wait_for("every member available", lambda: g.members_message(cluster) == "3 members are available")
    assert g.run(cluster, f"kubectl get node {node}").returncode == 1  # the old node is gone
    assert (
        g.ssh(cluster, new_node.name, "sudo test -f /etc/kubernetes/manifests/etcd-pod.yaml").returncode == 0
    )
