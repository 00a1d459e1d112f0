"""replace-etcd-member (guide 4.2) end to end on a simulated cluster of its own (the session's `sim`
stays healthy), the operator's answer given through the Prefect API from a background thread, as
the UI would. The cases share one cluster, in file order; each leaves it as the next expects:

(0) a stopped machine that comes back while the flow waits (wait_for_machine_s) -> nothing replaced
(a) a stopped machine, approval refused -> nothing changed (but a backup was taken first)
(b) the same stopped machine, its member already removed by an "interrupted run", run again naming
    the member, approved -> Machine re-created, three healthy members (4.2.4.1)
(c) a crash-looping etcd pod -> member replaced on the same host, healthy (4.2.4.2)
(d) quorum lost -> refused with the pointer to restore-cluster, no approval asked, nothing changed
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from etcdguard_sim import layout
from etcdguard_sim.faults import cluster as faults_cluster
from etcdguard_sim.runtime import control
from etcdguard_sim.seed import profiles
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    TaskRunFilter,
    TaskRunFilterName,
    TaskRunFilterState,
    TaskRunFilterStateType,
)
from prefect.client.schemas.objects import StateType

from etcdguard.core import errors, profile
from flows.replace_member import ReplaceOutcome, replace_etcd_member
from tasks.replace_member import newest_backup
from tests import simtools
from tests.approvals import Operator, approve

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("prefect_server")]

T = TypeVar("T")
CLUSTER = "replace"
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, prefect_server: None) -> Iterator[layout.SimSpec]:
    state_dir: Path = tmp_path_factory.mktemp("sim-replace")
    try:
        spec = control.up(state_dir, cluster_name=CLUSTER)
        profiles.write_profile(spec, state_dir / "profiles")
        yield spec
    finally:
        control.down(state_dir)
        print("\nreplace-etcd-member timings (s):", json.dumps(TIMINGS, indent=1))


@pytest.fixture(autouse=True)
def _profiles(cluster: layout.SimSpec, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETCDGUARD_PROFILES", str(cluster.state_dir / "profiles"))


def fresh(spec: layout.SimSpec) -> layout.SimSpec:
    return layout.SimSpec.load(spec.state_dir)


def wait_for(what: str, probe: Callable[[], T | None], *, timeout: float = 90.0) -> T:
    deadline = time.monotonic() + timeout
    while not (value := probe()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.5)
    return value


def kget(spec: layout.SimSpec, *args: str) -> Any:
    return json.loads(simtools.kubectl(spec, "get", *args, "-o", "json").stdout)


def members_message(spec: layout.SimSpec) -> str:
    conditions = kget(spec, "etcd", "cluster")["status"]["conditions"]
    return str(next(c["message"] for c in conditions if c["type"] == "EtcdMembersAvailable"))


def member_names(spec: layout.SimSpec, via: layout.NodeSpec) -> list[str]:
    proc = simtools.etcdctl(spec, "member", "list", "-w", "json", node=via)
    assert proc.returncode == 0, proc.stderr
    return sorted(str(m.get("name", "")) for m in json.loads(proc.stdout)["members"])


def endpoint_health(spec: layout.SimSpec, via: layout.NodeSpec) -> dict[str, bool]:
    proc = simtools.etcdctl(spec, "endpoint", "health", "--cluster", "-w", "json", node=via)
    return {h["endpoint"]: h["health"] for h in json.loads(proc.stdout or "[]")}


def machines(spec: layout.SimSpec) -> list[str]:
    return sorted(
        m["metadata"]["name"] for m in kget(spec, "machines", "-n", "openshift-machine-api")["items"]
    )


def secrets(spec: layout.SimSpec) -> list[str]:
    items = kget(spec, "secrets", "-n", "openshift-etcd")["items"]
    return sorted(s["metadata"]["name"] for s in items if s["metadata"]["name"].startswith("etcd-"))


def run_flow(answer: dict[str, Any] | None, **params: Any) -> tuple[ReplaceOutcome, Operator]:
    operator = Operator("replace-etcd-member", answer)
    operator.start()
    try:
        return replace_etcd_member(CLUSTER, **params), operator
    finally:
        operator.join(timeout=5)
        assert operator.error is None


def start_after_diagnosis(spec: layout.SimSpec, node: str) -> None:
    """Start the node's machine once the flow's diagnosis saw it stopped (its read-cluster task
    completed), as a machine that comes back while the flow waits."""
    deadline = time.monotonic() + 60
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            done = client.read_task_runs(
                task_run_filter=TaskRunFilter(
                    name=TaskRunFilterName(like_="read-cluster"),
                    state=TaskRunFilterState(type=TaskRunFilterStateType(any_=[StateType.COMPLETED])),
                )
            )
            if done:
                break
            time.sleep(0.5)
    faults_cluster.start_machine(spec, node)


def test_a_machine_that_comes_back_is_not_replaced(cluster: layout.SimSpec) -> None:
    sick = cluster.masters[0]
    faults_cluster.stop_machine(cluster, sick.name)
    wait_for(
        "the member to be unhealthy", lambda: members_message(cluster).endswith(f"{sick.name} is unhealthy")
    )
    before = machines(cluster)
    starter = threading.Thread(target=start_after_diagnosis, args=(cluster, sick.name), daemon=True)
    starter.start()
    started = time.monotonic()
    try:
        # Nobody answers: a paused run would fail after 10 s with ApprovalRejected.
        outcome = replace_etcd_member(CLUSTER, wait_for_machine_s=120, approval_timeout_s=10)
    finally:
        starter.join(timeout=60)
    TIMINGS["(0) wait for the machine to come back"] = round(time.monotonic() - started, 1)
    assert (outcome.status, outcome.node, outcome.state) == ("came-back", sick.name, "machine-not-running")
    assert outcome.message.startswith(f"The machine of {sick.name} came back")
    assert machines(cluster) == before
    wait_for(
        "3 members are available", lambda: members_message(cluster) == "3 members are available", timeout=30
    )


def test_refused_approval_changes_nothing(cluster: layout.SimSpec) -> None:
    sick = cluster.masters[0]
    faults_cluster.stop_machine(cluster, sick.name)
    wait_for(
        "the member to be unhealthy", lambda: members_message(cluster).endswith(f"{sick.name} is unhealthy")
    )
    via = cluster.masters[1]
    before = (member_names(cluster, via), machines(cluster), secrets(cluster))
    started = time.monotonic()
    with pytest.raises(errors.ApprovalRejected, match=r"sre-on-call refused replace-etcd-member on replace"):
        run_flow(approve(CLUSTER, approve=False))
    TIMINGS["(a) diagnosis + backup + refused approval"] = round(time.monotonic() - started, 1)
    assert (member_names(cluster, via), machines(cluster), secrets(cluster)) == before
    # The backup the guide requires first (4.2.1) was taken (with a member down) before the form.
    backup = newest_backup.fn(profile.load_profile(CLUSTER))
    assert backup is not None
    assert datetime.now(UTC) - backup[1] < timedelta(minutes=10)
    assert sick.name in before[0]


def test_stopped_machine_is_replaced(cluster: layout.SimSpec) -> None:
    sick = cluster.masters[0]
    assert members_message(cluster).endswith(f"{sick.name} is unhealthy")  # left so by (a)
    via = cluster.masters[1]
    # An earlier run stopped right after `etcdctl member remove` (done here by hand): the run
    # naming the member picks up from there.
    listed = json.loads(simtools.etcdctl(cluster, "member", "list", "-w", "json", node=via).stdout)["members"]
    old_id = format(next(m["ID"] for m in listed if m.get("name") == sick.name), "x")
    assert simtools.etcdctl(cluster, "member", "remove", old_id, node=via).returncode == 0
    wait_for("2 members are available", lambda: members_message(cluster) == "2 members are available")
    started = time.monotonic()
    outcome, operator = run_flow(approve(CLUSTER), member=sick.name)
    TIMINGS["(b) 4.2.4.1 whole flow"] = round(time.monotonic() - started, 1)
    TIMINGS.update({f"(b) {k}": v for k, v in outcome.timings.items()})
    assert operator.resumed is not None
    assert (outcome.status, outcome.node, outcome.procedure, outcome.state) == (
        "replaced",
        sick.name,
        "4.2.4.1",
        "machine-not-running",
    )
    assert outcome.new_machine == f"{cluster.infra_id}-master-3"
    assert outcome.backup_id is not None
    assert any(step.endswith("h old) is recent enough") for step in outcome.steps)  # the backup of (a)
    spec = fresh(cluster)
    assert sick.name not in [n.name for n in spec.nodes]
    assert outcome.new_node in [n.name for n in spec.masters]
    assert f"{cluster.infra_id}-master-0" not in machines(cluster)
    assert member_names(cluster, via) == sorted(n.name for n in spec.masters)

    def all_healthy() -> dict[str, bool] | None:
        health = endpoint_health(cluster, via)
        return health if health and all(health.values()) else None

    health = wait_for("every endpoint healthy", all_healthy)
    assert sorted(health) == sorted(n.etcd_client_url for n in spec.masters)
    assert f"the member of {sick.name} was already removed" in outcome.steps
    wait_for(
        "3 members are available", lambda: members_message(cluster) == "3 members are available", timeout=30
    )


def test_crash_looping_etcd_pod_is_replaced(cluster: layout.SimSpec) -> None:
    spec = fresh(cluster)
    sick = spec.masters[1]
    via = next(n for n in spec.masters if n.name != sick.name)
    faults_cluster.etcd_crashloop(spec, sick.name)

    def crash_looping() -> bool:
        found = kget(cluster, "pod", "-n", "openshift-etcd", f"etcd-{sick.name}")
        etcd = next(s for s in found["status"]["containerStatuses"] if s["name"] == "etcd")
        return "waiting" in etcd["state"] or "terminated" in etcd["state"]

    wait_for("the etcd pod to show Error or CrashLoopBackOff (guide 4.2.3 step 3)", crash_looping)
    wait_for(
        "the member to be unhealthy", lambda: members_message(cluster).endswith(f"{sick.name} is unhealthy")
    )
    started = time.monotonic()
    outcome, _ = run_flow(approve(CLUSTER))
    TIMINGS["(c) 4.2.4.2 whole flow"] = round(time.monotonic() - started, 1)
    TIMINGS.update({f"(c) {k}": v for k, v in outcome.timings.items()})
    assert (outcome.status, outcome.node, outcome.procedure, outcome.state) == (
        "replaced",
        sick.name,
        "4.2.4.2",
        "etcd-crash-looping",
    )
    assert outcome.new_machine is None
    assert member_names(cluster, via) == sorted(n.name for n in spec.masters)
    health = endpoint_health(cluster, via)
    assert sorted(health) == sorted(n.etcd_client_url for n in spec.masters)
    assert all(health.values()), health
    root = spec.host_root(sick)
    assert (root / "var/lib/etcd-backup/etcd-pod.yaml").is_file()
    assert (root / "tmp/etcd/member/wal").is_dir()  # the broken data, where the guide moves it
    assert (root / "etc/kubernetes/manifests/etcd-pod.yaml").is_file()  # the redeployment put etcd back
    reason = kget(cluster, "etcd", "cluster")["spec"]["forceRedeploymentReason"]
    assert reason.startswith("single-master-recovery-")
    # Run again: the member is healthy, nothing is done (no approval asked: it would time out).
    wait_for(
        "3 members are available", lambda: members_message(cluster) == "3 members are available", timeout=30
    )
    again = replace_etcd_member(CLUSTER, member=sick.name, approval_timeout_s=10)
    assert (again.status, again.message) == (
        "nothing-to-do",
        f"The etcd member of {sick.name} is healthy: 3 members are available.",
    )


def test_lost_quorum_is_refused_towards_restore_cluster(cluster: layout.SimSpec) -> None:
    spec = fresh(cluster)
    stopped = faults_cluster.lose_quorum(spec)
    survivor = next(n for n in spec.masters if n.name not in stopped)
    wait_for(
        "the API to stop answering",
        lambda: simtools.kubectl(spec, "get", "nodes", check=False).returncode != 0,
    )

    def host_state() -> dict[str, list[str]]:
        out = {}
        for node in spec.masters:
            root = spec.host_root(node)
            out[node.name] = sorted(
                [p.name for p in (root / "etc/kubernetes/manifests").glob("*.yaml")]
                + [p.name for p in (root / "var/lib/etcd").glob("*")]
            )
        return out

    before = host_state()
    started = time.monotonic()
    operator = Operator("replace-etcd-member", approve(CLUSTER), timeout=15)
    operator.start()
    try:
        with pytest.raises(errors.PreflightRefused, match=r"restore-cluster flow \(guide 4\.3\.2\)"):
            replace_etcd_member(CLUSTER)
    finally:
        operator.join(timeout=20)
    assert operator.error is None
    assert operator.resumed is None  # no approval was asked
    TIMINGS["(d) refusal on lost quorum"] = round(time.monotonic() - started, 1)
    assert host_state() == before
    assert "etcd-pod.yaml" in before[survivor.name]
