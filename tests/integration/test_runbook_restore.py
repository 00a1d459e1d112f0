"""The guide's 4.3.2.2 (restore to an earlier cluster state) scripted by hand, after a 4.1 backup:
the commands as written (`oc` -> `kubectl`, `oc rsh` -> `kubectl exec`, `oc debug node` +
`chroot /host` -> `ssh` + `sudo`: see `tests.guidetools`), the backup carried off the host and
onto the recovery host with `scp`. No etcdguard code runs except `etcdguard.core.csr.validate_csr`,
the admin's check of a CSR before approving it.

(a) two control-plane hosts lost (their EC2 instances stopped): restore on the survivor, then
    re-create the other two control-plane Machines one at a time (step 11), force the
    redeployments (steps 13-15), three healthy members (step 16);
(b) a namespace with a ConfigMap deleted after the backup, every host up: stop the static pods of
    the other hosts (step 4), restore, force the redeployments: the namespace is back.

Each case runs on its own cluster. Seconds per phase are printed at the end (`pytest -s`).
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from etcdguard_sim import layout
from etcdguard_sim.faults import cluster as faults_cluster
from etcdguard_sim.runtime import control

from etcdguard.core import csr as csrcheck
from tests import guidetools as g

# A cluster start and a full restore take 2-3 minutes here, more on a loaded machine.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

BACKUP_ON_HOST = "/home/core/assets/backup"
RESTORE_DIR = "/home/core/backup"
MACHINES = "kubectl get machines -n openshift-machine-api -o wide"
OPERATORS = ("etcd", "kubeapiserver", "kubecontrollermanager", "kubescheduler")
# What cluster-restore.sh prints, in this order (the guide's sample output, revisions aside).
RESTORE_OUTPUT = (
    "...stopping kube-apiserver-pod.yaml",  # the script's own order (STATIC_POD_LIST, then etcd)
    "...stopping kube-controller-manager-pod.yaml",
    "...stopping kube-scheduler-pod.yaml",
    "...stopping etcd-pod.yaml",
    "Waiting for container etcd to stop",
    "Waiting for container kube-scheduler to stop",
    "Moving etcd data-dir /var/lib/etcd/member to /var/lib/etcd-backup",
    "starting restore-etcd static pod",
    "starting kube-apiserver-pod.yaml",
    "starting kube-controller-manager-pod.yaml",
    "starting kube-scheduler-pod.yaml",
)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[layout.SimSpec, g.Timings]]:
    state_dir = tmp_path / "sim"
    timings = g.Timings("4.3.2.2 phases (s)")
    try:
        started = time.monotonic()
        spec = control.up(state_dir)
        timings.add("cluster up", time.monotonic() - started)
        yield spec, timings
    finally:
        control.down(state_dir)
        print("\n" + timings.report())


def _fresh(spec: layout.SimSpec) -> layout.SimSpec:
    return layout.SimSpec.load(spec.state_dir)


def _ssh_ok(spec: layout.SimSpec, node: str, command: str) -> str:
    done = g.ssh(spec, node, command)
    assert done.returncode == 0, f"`{command}` on {node} failed ({done.returncode}): {done.stderr}"
    return done.stdout


def _api_up(spec: layout.SimSpec) -> bool:
    return g.run(spec, "kubectl get namespaces --request-timeout=5s").returncode == 0


def _etcd_pods(spec: layout.SimSpec) -> list[list[str]]:
    return g.rows(g.run(spec, g.ETCD_PODS).stdout)


# ---- 4.1 --------------------------------------------------------------------------------------------
def _backup(spec: layout.SimSpec, node: str, local: Path) -> list[str]:
    """4.1 on `node`, then the backup directory copied off the host to `local/backup`."""
    out = _ssh_ok(spec, node, f"sudo -E /usr/local/bin/cluster-backup.sh {BACKUP_ON_HOST}")
    assert f"snapshot db and kube resources are successfully saved to {BACKUP_ON_HOST}" in out
    for resource in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd"):
        assert re.search(rf"^found latest {resource}: /etc/kubernetes/static-pod-resources/{resource}-pod-\d+$",
                         out, re.MULTILINE), out  # fmt: skip
    files = sorted(_ssh_ok(spec, node, f"sudo ls {BACKUP_ON_HOST}").split())
    assert len(files) == 2, files
    assert re.fullmatch(r"snapshot_\d{4}-\d\d-\d\d_\d{6}\.db", files[0]), files
    assert re.fullmatch(r"static_kuberesources_\d{4}-\d\d-\d\d_\d{6}\.tar\.gz", files[1]), files
    # The tarball is root's (mode 600): hand the directory to core, then copy it off the host.
    _ssh_ok(spec, node, f"sudo chown -R core:core {BACKUP_ON_HOST}")
    copied = g.scp(spec, "-r", f"{node}:{BACKUP_ON_HOST}", str(local))
    assert copied.returncode == 0, copied.stderr
    assert sorted(p.name for p in (local / "backup").iterdir()) == files
    return files


# ---- 4.3.2.2 ----------------------------------------------------------------------------------------
def _copy_to_recovery(spec: layout.SimSpec, recovery: str, local: Path, files: list[str]) -> None:
    """Step 3: the backup directory to /home/core/ of the recovery host."""
    copied = g.scp(spec, "-r", str(local / "backup"), f"{recovery}:/home/core/")
    assert copied.returncode == 0, copied.stderr
    assert sorted(_ssh_ok(spec, recovery, f"ls {RESTORE_DIR}").split()) == files


def _shows_nothing(spec: layout.SimSpec, node: str, command: str) -> bool:
    done = g.ssh(spec, node, command)
    return done.returncode == 1 and done.stdout == ""  # grep found nothing (255 would be ssh's own)


def _stop_static_pods(spec: layout.SimSpec, node: str) -> None:
    """Step 4 b-f on a host that is not the recovery host."""
    for manifest, container in (("etcd-pod.yaml", "etcd"), ("kube-apiserver-pod.yaml", "kube-apiserver")):
        _ssh_ok(spec, node, f"sudo mv /etc/kubernetes/manifests/{manifest} /tmp")
        check = f"sudo crictl ps | grep {container} | grep -v operator"
        g.wait_for(
            f"`{check}` on {node} to show nothing",
            functools.partial(_shows_nothing, spec, node, check),
            timeout=60,
        )
    _ssh_ok(spec, node, "sudo mv /var/lib/etcd/ /tmp")
    assert _ssh_ok(spec, node, "sudo ls /tmp/etcd").split() == ["member"]


def _restore(spec: layout.SimSpec, recovery: str) -> str:
    """Step 7: cluster-restore.sh on the recovery host; checks its output against the guide's."""
    done = g.ssh_long(spec, recovery, f"sudo -E /usr/local/bin/cluster-restore.sh {RESTORE_DIR}", timeout=600)
    assert done.returncode == 0, f"cluster-restore.sh failed ({done.returncode}): {done.stdout}{done.stderr}"
    at = [next((i for i, line in enumerate(done.stdout.splitlines()) if line.startswith(want)), -1)
          for want in RESTORE_OUTPUT]  # fmt: skip
    assert -1 not in at, done.stdout
    assert at == sorted(at), done.stdout
    for component in ("kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        assert re.search(rf"^static-pod-resources/{component}-pod-\d+/{component}-pod\.yaml$",
                         done.stdout, re.MULTILINE), done.stdout  # fmt: skip
    manifests = _ssh_ok(spec, recovery, "ls /etc/kubernetes/manifests").split()
    assert sorted(manifests) == sorted(
        [
            "etcd-pod.yaml",
            "kube-apiserver-pod.yaml",
            "kube-controller-manager-pod.yaml",
            "kube-scheduler-pod.yaml",
        ]
    )
    # The old data is kept; the restore pod deletes snapshot.db once it has restored it.
    assert "member" in _ssh_ok(spec, recovery, "sudo ls /var/lib/etcd-backup").split()
    return done.stdout


def _single_member(spec: layout.SimSpec, recovery: str) -> list[csrcheck.CsrVerdict]:
    """Steps 9-10: approve CSRs until the restored etcd runs on the recovery host (crictl) and the
    API lists its pod Running; returns the CSRs approved meanwhile."""
    approved: list[csrcheck.CsrVerdict] = []

    def up() -> bool:
        approved.extend(g.approve_pending(spec))
        ps = g.ssh(spec, recovery, "sudo crictl ps | grep etcd | grep -v operator")
        # CONTAINER IMAGE CREATED(several words) STATE NAME ATTEMPT POD-ID
        if ps.returncode != 0 or not any(r[-4:-2] == ["Running", "etcd"] for r in g.rows(ps.stdout)):
            return False
        mine = [r for r in _etcd_pods(spec) if r[0] == f"etcd-{recovery}"]
        return bool(mine) and mine[0][2] == "Running"

    g.wait_for("the single-member control plane", up, timeout=300, every=2.0)
    # The restored member is alone in its cluster (the restore pod's only container is etcd). Right
    # after the kubelets restart, the mirror pod can be re-created between `kubectl get` and
    # `kubectl exec` (NotFound): ask again, as the admin would.
    members: list[list[str]] = []

    def alone() -> bool:
        nonlocal members
        try:
            members = g.member_rows(spec, f"etcd-{recovery}")
        except AssertionError:  # `kubectl exec` failed: the pod is being re-created
            return False
        return [(m[1], m[2]) for m in members] == [("started", recovery)]

    g.wait_for("the restored member alone in its cluster", alone, timeout=60, every=2.0)
    return approved


def _machine_rows(spec: layout.SimSpec) -> list[list[str]]:
    return g.rows(g.ok(spec, MACHINES))[1:]


def _recreate_machine(spec: layout.SimSpec, node: str, workdir: Path) -> tuple[str, str, dict[str, float]]:
    """Step 11 a-g for the machine of `node` (as 4.2.4.1 step 3), then its CSRs until the new node is
    Ready and the Machine Running; returns (new machine, new node, seconds per part)."""
    start = time.monotonic()
    took: dict[str, float] = {}

    # 11a. The restored Machine says `running`, as at the backup, until the machine API has seen
    # the instance again: wait for it to show the lost host's machine `stopped`, as the guide does.
    def stopped() -> list[list[str]] | None:
        rows = _machine_rows(spec)
        return rows if any(node in r and r[-1] == "stopped" for r in rows) else None

    rows, _ = g.wait_for(f"the machine of {node} shown stopped", stopped, timeout=60)
    machine = next(r for r in rows if node in r)[0]
    g.ok(
        spec,
        f"kubectl get machine {machine} -n openshift-machine-api -o yaml > new-master-machine.yaml",
        cwd=workdir,
    )
    saved = yaml.safe_load((workdir / "new-master-machine.yaml").read_text())
    saved.pop("status")
    indexes = [int(r[0].rsplit("-", 1)[1]) for r in rows if "-master-" in r[0]]
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
    (workdir / "new-master-machine.yaml").write_text(yaml.safe_dump(saved))
    deleted = g.ok(spec, f"kubectl delete machine -n openshift-machine-api {machine}")
    assert deleted.strip() == f'machine.machine.openshift.io "{machine}" deleted'
    assert machine not in [r[0] for r in _machine_rows(spec)]
    created = g.ok(spec, "kubectl apply -f new-master-machine.yaml", cwd=workdir)
    assert created.strip() == f"machine.machine.openshift.io/{new_name} created"

    def phase(*wanted: str) -> list[str] | None:
        found = [r for r in g.rows(g.run(spec, MACHINES).stdout) if r[0] == new_name]
        return found[0] if found and found[0][1] in wanted else None

    _, took["Provisioned"] = g.wait_for(f"{new_name} Provisioned", lambda: phase("Provisioned", "Running"),
                                        timeout=120, since=start)  # fmt: skip
    new_node = next(n.name for n in _fresh(spec).masters if n.machine_name == new_name)

    approved: list[csrcheck.CsrVerdict] = []

    def ready() -> bool:
        approved.extend(g.approve_pending(spec))
        got = g.rows(g.run(spec, f"kubectl get node {new_node} --no-headers").stdout)
        return bool(got) and got[0][1] == "Ready"

    _, took["node Ready"] = g.wait_for(f"node {new_node} Ready", ready, timeout=180, every=1.0, since=start)
    running, took["Running"] = g.wait_for(
        f"{new_name} Running", lambda: phase("Running"), timeout=60, since=start
    )
    # The new kubelet's node-bootstrapper (client) and serving CSRs, each reviewed, then approved.
    assert sorted((v.kind, v.node_name) for v in approved) == [("client", new_node), ("serving", new_node)]
    assert running[6] == new_node, running
    assert running[-1] == "running", running
    assert g.run(spec, f"kubectl get node {node}").returncode == 1  # the lost node went with its machine
    return new_name, new_node, took


def _force_redeployments(spec: layout.SimSpec, timings: g.Timings, label: str) -> dict[str, int]:
    """Steps 13-15: each operator's redeployment, then its NodeInstallerProgressing until
    AllNodesAtLatestRevision on every control-plane node; returns the revision each reached."""
    reached = {}
    masters = len(_fresh(spec).masters)
    for resource in OPERATORS:
        start = time.monotonic()
        before = int(
            g.ok(spec, f"kubectl get {resource} cluster -o jsonpath='{{.status.latestAvailableRevision}}'")
        )
        patched = g.ok(spec, g.FORCE_REDEPLOYMENT.format(resource=resource))
        assert patched.strip() == f"{resource}.operator.openshift.io/cluster patched"
        reason = g.ok(spec, f"kubectl get {resource} cluster -o jsonpath='{{.spec.forceRedeploymentReason}}'")
        assert re.fullmatch(r"recovery-\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{9}[+-]\d\d:\d\d", reason), reason
        seen: list[list[str]] = []

        def done(resource: str = resource, before: int = before, seen: list[list[str]] = seen) -> int | None:
            got = g.node_installer(spec, resource)
            seen[:] = [got]
            match = re.fullmatch(rf"{masters} nodes are at revision (\d+)", got[1]) if len(got) == 2 else None
            ok = got[:1] == ["AllNodesAtLatestRevision"] and match and int(match.group(1)) > before
            return int(match.group(1)) if ok and match else None

        try:
            reached[resource], took = g.wait_for(f"{resource} AllNodesAtLatestRevision", done, timeout=300,
                                                 every=1.0, since=start)  # fmt: skip
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last NodeInstallerProgressing: {seen}") from None
        assert reached[resource] == before + 1
        timings.add(f"{label} step 13-15 {resource} redeployed", took)
    return reached


def _verify(
    spec: layout.SimSpec, expected_nodes: list[str], timings: g.Timings, label: str, since: float
) -> None:
    """Step 16: an etcd pod per control-plane host, Running; three healthy members."""

    def pods() -> list[list[str]] | None:
        rows = _etcd_pods(spec)
        ok = sorted(r[0] for r in rows) == sorted(f"etcd-{n}" for n in expected_nodes)
        return rows if ok and all(r[1:3] == ["5/5", "Running"] for r in rows) else None

    g.wait_for("an etcd pod Running on every control-plane host", pods, timeout=120, every=1.0)
    pod = f"etcd-{expected_nodes[0]}"
    last: list[str] = []

    def healthy() -> list[str] | None:
        health = g.rsh(spec, pod, "etcdctl endpoint health --cluster")
        found = [line for line in g.lines(health.stdout + health.stderr) if " is healthy" in line]
        last[:] = [str(health.returncode), health.stdout, health.stderr]
        return found if health.returncode == 0 and len(found) == len(expected_nodes) else None

    try:
        found, took = g.wait_for("every member healthy", healthy, timeout=120, every=1.0, since=since)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the last `etcdctl endpoint health --cluster` gave {last}") from None
    timings.add(f"{label} whole 4.3.2.2 until every member healthy", took)
    assert sorted(line.split(" is healthy")[0] for line in found) == _fresh(spec).etcd_endpoints()
    rows = g.member_rows(spec, pod)
    assert sorted(c[2] for c in rows) == sorted(expected_nodes)
    assert {c[1] for c in rows} == {"started"}
    g.wait_for("every member available",
               lambda: g.members_message(spec) == f"{len(expected_nodes)} members are available")  # fmt: skip


# ---- the cases --------------------------------------------------------------------------------------
def test_a_restore_after_losing_two_control_plane_hosts(
    cluster: tuple[layout.SimSpec, g.Timings], tmp_path: Path
) -> None:
    spec, timings = cluster
    recovery = spec.masters[0].name
    g.ok(spec, "kubectl create namespace before-backup")
    g.ok(spec, "kubectl create configmap kept -n before-backup --from-literal=state=backed-up")
    # 4.1 on a host that is about to be lost: the copy off the host is what survives.
    start = time.monotonic()
    files = _backup(spec, spec.masters[1].name, tmp_path)
    timings.add("(a) 4.1 backup, copied off the host", time.monotonic() - start)
    g.ok(spec, "kubectl create namespace after-backup")

    lost = faults_cluster.lose_quorum(spec)
    assert lost == [m.name for m in spec.masters[1:]]
    _, took = g.wait_for("the API to stop answering", lambda: not _api_up(spec), timeout=60)
    timings.add("(a) lose_quorum until the API is down", took)

    start = time.monotonic()
    # 1-2. The recovery host answers over SSH; the lost ones do not (step 4 cannot run there: the
    # guide restores them by re-creating their machines, step 11).
    assert _ssh_ok(spec, recovery, "sudo crictl ps | grep etcd | grep -v operator")
    for node in lost:
        assert g.ssh(spec, node, "true").returncode == 255
    _copy_to_recovery(spec, recovery, tmp_path, files)
    timings.add("(a) steps 1-3 (SSH, copy the backup)", time.monotonic() - start)
    phase = time.monotonic()
    _restore(spec, recovery)
    timings.add("(a) step 7 cluster-restore.sh", time.monotonic() - phase)
    phase = time.monotonic()
    _ssh_ok(spec, recovery, "sudo systemctl restart kubelet.service")  # 8 (the others are down)
    approved = _single_member(spec, recovery)
    print(f"\n(a) steps 9-10 approved {[(v.kind, v.node_name) for v in approved]}")
    timings.add("(a) steps 8-10 until the single member's pod runs", time.monotonic() - phase)
    nodes = g.rows(g.ok(spec, g.MASTERS))[1:]
    assert sorted(r[0] for r in nodes) == sorted(n.name for n in spec.masters)  # as of the backup
    assert [r[1] for r in nodes if r[0] == recovery] == ["Ready"]

    new_nodes = []
    for node in lost:  # 11, one machine at a time
        phase = time.monotonic()
        new_machine, new_node, parts = _recreate_machine(spec, node, tmp_path)
        new_nodes.append(new_node)
        for what, seconds in parts.items():
            timings.add(f"(a) step 11 {new_machine}: {what}", seconds)
        timings.add(f"(a) step 11 {new_machine} replaces the machine of {node}", time.monotonic() - phase)
    assert not set(new_nodes) & set(lost)
    print(f"\n(a) before step 13, EtcdMembersAvailable says: {g.members_message(spec)!r}")
    assert sorted(n.name for n in _fresh(spec).masters) == sorted([recovery, *new_nodes])
    assert [r[0] for r in _machine_rows(spec) if "-master-" in r[0]] == [
        spec.masters[0].machine_name,
        *(re.sub(r"-\d+$", f"-{i}", spec.masters[0].machine_name) for i in (3, 4)),
    ]
    _force_redeployments(spec, timings, "(a)")
    _verify(spec, [recovery, *new_nodes], timings, "(a)", since=start)

    # The cluster is as it was at the backup.
    assert (
        g.ok(spec, "kubectl get configmap kept -n before-backup -o jsonpath='{.data.state}'") == "backed-up"
    )
    assert g.run(spec, "kubectl get namespace after-backup").returncode == 1
    assert [v.name for v in g.verdicts(spec)] == []  # no CSR left pending
    masters = g.rows(g.ok(spec, "kubectl get nodes -l node-role.kubernetes.io/master --no-headers"))
    assert sorted(r[0] for r in masters) == sorted([recovery, *new_nodes])
    assert {r[1] for r in masters} == {"Ready"}


def test_b_restore_a_deleted_namespace(cluster: tuple[layout.SimSpec, g.Timings], tmp_path: Path) -> None:
    spec, timings = cluster
    recovery = spec.masters[0].name
    others = [m.name for m in spec.masters[1:]]
    g.ok(spec, "kubectl create namespace orders")
    g.ok(spec, "kubectl create configmap prices -n orders --from-literal=apple=100")
    start = time.monotonic()
    files = _backup(spec, others[0], tmp_path)
    timings.add("(b) 4.1 backup, copied off the host", time.monotonic() - start)

    before = faults_cluster.delete_critical_object(spec, kind="namespace", name="orders")
    assert before["metadata"]["name"] == "orders"
    g.wait_for("the namespace gone", lambda: g.run(spec, "kubectl get namespace orders").returncode == 1)
    assert g.run(spec, "kubectl get configmap prices -n orders").returncode == 1

    start = time.monotonic()
    for node in [recovery, *others]:  # 2
        assert g.ssh(spec, node, "true").returncode == 0
    _copy_to_recovery(spec, recovery, tmp_path, files)  # 3
    proxy = yaml.safe_load(g.ok(spec, "kubectl get proxy cluster -o yaml"))  # 6: no proxy to export
    assert not any((proxy.get("spec") or {}).get(k) for k in ("httpProxy", "httpsProxy", "noProxy"))
    timings.add("(b) steps 1-3, 6 (SSH, copy the backup, proxy)", time.monotonic() - start)
    phase = time.monotonic()
    for node in others:  # 4
        _stop_static_pods(spec, node)
    timings.add("(b) step 4 stop the static pods of the other hosts", time.monotonic() - phase)
    phase = time.monotonic()
    _restore(spec, recovery)  # 7
    timings.add("(b) step 7 cluster-restore.sh", time.monotonic() - phase)
    phase = time.monotonic()
    for node in [recovery, *others]:  # 8
        _ssh_ok(spec, node, "sudo systemctl restart kubelet.service")
    approved = _single_member(spec, recovery)  # 9-10
    print(f"\n(b) steps 9-10 approved {[(v.kind, v.node_name) for v in approved]}")
    timings.add("(b) steps 8-10 until the single member's pod runs", time.monotonic() - phase)
    # Step 11 re-creates the machines of lost hosts (11a, 11h); none is lost here, so every machine
    # stays and the forced etcd redeployment gives the other hosts their members back.
    _force_redeployments(spec, timings, "(b)")  # 13-15
    _verify(spec, [recovery, *others], timings, "(b)", since=start)  # 16

    assert g.ok(spec, "kubectl get namespace orders -o jsonpath='{.status.phase}'") == "Active"
    assert g.ok(spec, "kubectl get configmap prices -n orders -o jsonpath='{.data.apple}'") == "100"
    assert [v.name for v in g.verdicts(spec)] == []
    for node in others:  # what the admin moved aside stays there
        assert {"etcd", "etcd-pod.yaml", "kube-apiserver-pod.yaml"} <= set(
            _ssh_ok(spec, node, "sudo ls /tmp").split()
        )
