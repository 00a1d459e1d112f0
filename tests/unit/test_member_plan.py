"""`member_plan` on realistic API objects and etcdctl output: a healthy 4.8 cluster of three
control-plane nodes, then one member broken at a time (machine stopped, node NotReady or
unreachable, etcd pod crash-looping), each refusal's sentence checked, and the guards that keep
`etcdctl member remove` from taking the wrong member."""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from etcdguard_sim.hosts import csrgen

from etcdguard.core import csr, errors, member_plan, member_steps
from etcdguard.core.member_plan import Member

pytestmark = pytest.mark.unit

Obj = dict[str, Any]
INFRA = "demo-8qw5l"
MASTERS = {
    "ip-10-0-131-183.ec2.internal": "10.0.131.183",
    "ip-10-0-154-204.ec2.internal": "10.0.154.204",
    "ip-10-0-164-97.ec2.internal": "10.0.164.97",
}
NAMES = list(MASTERS)
SICK = NAMES[0]
IDS = {SICK: 0x6FC1E7C9DB35841D, NAMES[1]: 0xCA8C2990A0AA29D1, NAMES[2]: 0x757B6793E2408B6C}


def node(name: str, *, ready: str = "True", taints: Sequence[str] = ()) -> Obj:
    return {
        "metadata": {"name": name, "labels": {"node-role.kubernetes.io/master": ""}},
        "spec": {"taints": [{"key": k, "effect": "NoExecute"} for k in taints]},
        "status": {
            "conditions": [{"type": "Ready", "status": ready, "message": "kubelet is posting ready status"}],
            "addresses": [{"type": "InternalIP", "address": MASTERS[name]}],
        },
    }


def machine(name: str, index: int, *, state: str = "running") -> Obj:
    return {
        "apiVersion": "machine.openshift.io/v1beta1",
        "kind": "Machine",
        "metadata": {
            "name": f"{INFRA}-master-{index}",
            "namespace": "openshift-machine-api",
            "labels": {"machine.openshift.io/cluster-api-machine-role": "master"},
            "annotations": {"machine.openshift.io/instance-state": state},
            "generation": 2,
            "resourceVersion": "13291",
            "uid": "a282eb70-40a2-4e89-8009-d05dd420d31a",
            "creationTimestamp": "2021-06-25T10:00:00Z",
            "managedFields": [{"manager": "machine-controller"}],
            "selfLink": f"/apis/machine.openshift.io/v1beta1/namespaces/openshift-machine-api/machines/{INFRA}-master-{index}",
        },
        "spec": {
            "providerSpec": {"value": {"kind": "AWSMachineProviderConfig"}},
            "providerID": "aws:///us-east-1a/i-0fdb",
        },
        "status": {
            "phase": "Running",
            "nodeRef": {"kind": "Node", "name": name},
            "addresses": [
                {"type": "InternalIP", "address": MASTERS[name]},
                {"type": "InternalDNS", "address": name},
                {"type": "Hostname", "address": name},
            ],
            "providerStatus": {"instanceState": state},
        },
    }


def pod(name: str, *, etcd: Obj | None = None) -> Obj:
    status = etcd or {"ready": True, "restartCount": 0, "state": {"running": {}}}
    return {
        "metadata": {"name": f"etcd-{name}", "labels": {"app": "etcd"}},
        "spec": {"nodeName": name},
        "status": {"phase": "Running", "containerStatuses": [{"name": "etcd", **status}]},
    }


def etcd_cr(message: str, *, status: str = "True") -> Obj:
    return {
        "status": {"conditions": [{"type": "EtcdMembersAvailable", "status": status, "message": message}]}
    }


def members(*names: str) -> list[Member]:
    return [
        Member(
            id=IDS[n],
            name=n,
            peer_urls=(f"https://{MASTERS[n]}:2380",),
            client_urls=(f"https://{MASTERS[n]}:2379",),
        )
        for n in names
    ]


UNHEALTHY = f"2 of 3 members are available, {SICK} is unhealthy"
CRASHLOOP = {
    "ready": False,
    "restartCount": 7,
    "state": {
        "waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m0s restarting failed container"}
    },
    "lastState": {"terminated": {"reason": "Error", "exitCode": 1}},
}


def world(**overrides: Any) -> dict[str, Any]:
    """The diagnose() inputs of a cluster where `SICK`'s member is unhealthy (cause: overrides)."""
    base: dict[str, Any] = {
        "etcd": etcd_cr(UNHEALTHY),
        "nodes": [node(n) for n in NAMES],
        "machines": [machine(n, i) for i, n in enumerate(NAMES)],
        "etcd_pods": [pod(n) for n in NAMES],
        "csrs": [],
        "members": members(*NAMES),
    }
    base.update(overrides)
    return base


# ---- diagnosis ---------------------------------------------------------------------------------
def test_stopped_machine_calls_for_4_2_4_1() -> None:
    found = member_plan.diagnose(
        **world(
            machines=[machine(n, i, state="stopped" if n == SICK else "running") for i, n in enumerate(NAMES)]
        )
    )
    assert (found.action, found.node, found.state, found.procedure) == (
        "replace",
        SICK,
        "machine-not-running",
        "4.2.4.1",
    )
    assert found.address == MASTERS[SICK]
    assert found.machine == f"{INFRA}-master-0"
    assert f"Machine {INFRA}-master-0: instance state stopped" in found.evidence
    assert not found.resumed


@pytest.mark.parametrize(
    ("sick_node", "evidence"),
    [
        (
            node(SICK, ready="Unknown", taints=["node.kubernetes.io/unreachable"]),
            "has the node.kubernetes.io/unreachable taint",
        ),
        (node(SICK, ready="False"), "is NotReady (Ready False"),
    ],
)
def test_unreachable_or_not_ready_node_calls_for_4_2_4_1(sick_node: Obj, evidence: str) -> None:
    found = member_plan.diagnose(**world(nodes=[sick_node, *(node(n) for n in NAMES[1:])]))
    assert (found.state, found.procedure) == ("node-not-ready", "4.2.4.1")
    assert any(evidence in line for line in found.evidence)


@pytest.mark.parametrize(
    "etcd",
    [
        CRASHLOOP,
        {"ready": False, "restartCount": 7, "state": {"terminated": {"reason": "Error", "exitCode": 1}}},
        {
            "ready": False,
            "restartCount": 3,
            "state": {"running": {}},
            "lastState": {"terminated": {"reason": "Error"}},
        },
    ],
)
def test_crash_looping_pod_on_a_ready_node_calls_for_4_2_4_2(etcd: Obj) -> None:
    found = member_plan.diagnose(**world(etcd_pods=[pod(SICK, etcd=etcd), *(pod(n) for n in NAMES[1:])]))
    assert (found.state, found.procedure) == ("etcd-crash-looping", "4.2.4.2")
    assert any(line.startswith(f"pod etcd-{SICK}: container etcd") for line in found.evidence)


def test_lost_quorum_points_to_restore_cluster() -> None:
    with pytest.raises(
        errors.PreflightRefused, match=r"lost quorum .*restore-cluster flow \(guide 4\.3\.2\)"
    ):
        member_plan.diagnose(
            **world(
                etcd=etcd_cr("1 of 3 members are available, a is unhealthy, b is unhealthy", status="False")
            )
        )


def test_pending_kubelet_csrs_point_to_recover_expired_certs() -> None:
    pending = csr.CsrView.from_object(
        csrgen.csr_object(
            "csr-abcde",
            pem=csrgen.make_client_csr(SICK),
            signer_name=csrgen.CLIENT_SIGNER,
            username=csrgen.BOOTSTRAPPER_USERNAME,
            groups=csrgen.BOOTSTRAPPER_GROUPS,
            usages=csrgen.CLIENT_USAGES,
            conditions=(),
        )
    )
    sick_node = node(SICK, ready="Unknown", taints=["node.kubernetes.io/unreachable"])
    with pytest.raises(
        errors.PreflightRefused, match=r"csr-abcde.*recover-expired-certs flow \(guide 4\.3\.3\)"
    ):
        member_plan.diagnose(**world(nodes=[sick_node, *(node(n) for n in NAMES[1:])], csrs=[pending]))
    other = dataclasses.replace(pending, name="csr-other", request_pem=csrgen.make_client_csr(NAMES[1]))
    found = member_plan.diagnose(**world(nodes=[sick_node, *(node(n) for n in NAMES[1:])], csrs=[other]))
    assert found.state == "node-not-ready"  # another node's CSR is not this member's problem


def test_all_members_available_is_nothing_to_do() -> None:
    found = member_plan.diagnose(**world(etcd=etcd_cr("3 members are available")))
    assert found.action == "nothing-to-do"
    assert found.message == "No unhealthy etcd member: 3 members are available."


def test_a_node_without_member_is_pointed_out() -> None:
    found = member_plan.diagnose(
        **world(etcd=etcd_cr("2 members are available"), members=members(*NAMES[1:]))
    )
    assert found.action == "nothing-to-do"
    assert f"control-plane node(s) {SICK} have no etcd member" in found.message
    assert "member=<node name>" in found.message


def test_a_named_healthy_member_is_nothing_to_do() -> None:
    found = member_plan.diagnose(**world(etcd=etcd_cr("3 members are available")), member=NAMES[1])
    assert (found.action, found.node) == ("nothing-to-do", NAMES[1])


def test_unhealthy_member_without_a_known_cause_is_undetermined() -> None:
    found = member_plan.diagnose(**world())
    assert (found.action, found.node, found.procedure) == ("undetermined", SICK, None)
    assert "none of the guide's cases (4.2.3) applies" in found.message


def test_several_unhealthy_members_need_a_name() -> None:
    message = f"3 of 5 members are available, {SICK} is unhealthy, {NAMES[1]} is unhealthy"
    with pytest.raises(errors.PreflightRefused, match=r"2 etcd members are unhealthy .*member=<node name>"):
        member_plan.diagnose(**world(etcd=etcd_cr(message)))


def test_a_member_being_added_is_waited_for() -> None:
    message = "2 of 3 members are available, NAME-PENDING-10.0.133.53 has not started"
    with pytest.raises(errors.PreflightRefused, match=r"NAME-PENDING-10\.0\.133\.53 has not started"):
        member_plan.diagnose(**world(etcd=etcd_cr(message)))


def test_a_removed_member_resumes_the_same_procedure() -> None:
    stopped = [machine(n, i, state="stopped" if n == SICK else "running") for i, n in enumerate(NAMES)]
    found = member_plan.diagnose(
        **world(etcd=etcd_cr("2 members are available"), machines=stopped, members=members(*NAMES[1:])),
        member=SICK,
    )
    assert (found.action, found.procedure, found.resumed) == ("replace", "4.2.4.1", True)
    # 4.2.4.2 interrupted after the manifest was moved: no pod, no member, node Ready.
    found = member_plan.diagnose(
        **world(
            etcd=etcd_cr("2 members are available"),
            etcd_pods=[pod(n) for n in NAMES[1:]],
            members=members(*NAMES[1:]),
        ),
        member=SICK,
    )
    assert (found.procedure, found.resumed) == ("4.2.4.2", True)


def test_a_machine_already_replaced_resumes_from_its_copy() -> None:
    old = machine(SICK, 0, state="stopped")
    new = member_steps.clean_machine(old, new_name=f"{INFRA}-master-3", node=SICK)
    found = member_plan.diagnose(
        **world(
            etcd=etcd_cr("2 members are available"),
            nodes=[node(n) for n in NAMES[1:]],
            machines=[new, *(machine(n, i) for i, n in enumerate(NAMES) if n != SICK)],
            members=members(*NAMES[1:]),
        ),
        member=SICK,
    )
    assert (found.procedure, found.resumed, found.address) == ("4.2.4.1", True, None)
    assert found.message == f"Machine {INFRA}-master-3 is replacing the machine of {SICK}; waiting for it."


def test_an_unknown_name_is_refused() -> None:
    with pytest.raises(errors.PreflightRefused, match=r"No Node and no Machine is named 'ip-1-2-3-4'"):
        member_plan.diagnose(**world(), member="ip-1-2-3-4")


# ---- removal guards ----------------------------------------------------------------------------
HEALTHY = {f"https://{MASTERS[n]}:2379" for n in NAMES[1:]}


def test_the_member_matching_name_and_peer_url_is_removed() -> None:
    target = member_plan.plan_removal(members(*NAMES), node=SICK, address=MASTERS[SICK], healthy_urls=HEALTHY)
    assert target is not None
    assert target.hex_id == "6fc1e7c9db35841d"


def test_an_already_removed_member_is_skipped() -> None:
    assert (
        member_plan.plan_removal(members(*NAMES[1:]), node=SICK, address=MASTERS[SICK], healthy_urls=HEALTHY)
        is None
    )


def test_a_member_matching_only_by_name_is_not_removed() -> None:
    listed = members(*NAMES)
    listed[0] = Member(id=IDS[SICK], name=SICK, peer_urls=("https://10.0.9.9:2380",), client_urls=())
    with pytest.raises(errors.PreflightRefused, match=r"matches .* only by name"):
        member_plan.plan_removal(listed, node=SICK, address=MASTERS[SICK], healthy_urls=HEALTHY)


def test_two_matching_members_are_not_removed() -> None:
    listed = [*members(*NAMES[1:]), Member(id=1, name=SICK, peer_urls=("https://10.0.9.9:2380",), client_urls=()),
              Member(id=2, name="", peer_urls=(f"https://{MASTERS[SICK]}:2380",), client_urls=())]  # fmt: skip
    with pytest.raises(errors.PreflightRefused, match=r"more than 3"):
        member_plan.plan_removal(listed, node=SICK, address=MASTERS[SICK], healthy_urls=HEALTHY)
    with pytest.raises(errors.PreflightRefused, match=r"^2 members match node"):
        member_plan.plan_removal(listed[1:], node=SICK, address=MASTERS[SICK], healthy_urls=HEALTHY)


def test_removal_that_would_lose_quorum_is_refused() -> None:
    only_one = {f"https://{MASTERS[NAMES[1]]}:2379"}
    with pytest.raises(
        errors.PreflightRefused, match=r"leave 1 healthy of 2 members, fewer than a quorum of 2"
    ):
        member_plan.plan_removal(members(*NAMES), node=SICK, address=MASTERS[SICK], healthy_urls=only_one)


def test_a_healthy_member_is_not_removed() -> None:
    everyone = HEALTHY | {f"https://{MASTERS[SICK]}:2379"}
    with pytest.raises(errors.PreflightRefused, match=r"answers healthy now"):
        member_plan.plan_removal(members(*NAMES), node=SICK, address=MASTERS[SICK], healthy_urls=everyone)


def test_more_than_three_members_are_listed_and_refused() -> None:
    listed = [*members(*NAMES), Member(id=0x5EB0D6B8CA24730C, name="ip-10-0-133-53.ec2.internal",
                                       peer_urls=("https://10.0.133.53:2380",), client_urls=())]  # fmt: skip
    with pytest.raises(errors.PreflightRefused, match=r"4 members, more than 3: .*5eb0d6b8ca24730c"):
        member_plan.plan_removal(listed, node=SICK, address=MASTERS[SICK], healthy_urls=HEALTHY)


# ---- etcdctl output ----------------------------------------------------------------------------
def test_member_list_and_health_json_are_read() -> None:
    text = json.dumps(
        {"header": {"cluster_id": 1}, "members": [
            {"ID": IDS[SICK], "name": SICK, "peerURLs": [f"https://{MASTERS[SICK]}:2380"], "clientURLs": [f"https://{MASTERS[SICK]}:2379"]},
            {"ID": 42, "peerURLs": ["https://10.0.133.53:2380"]},
        ]}
    )  # fmt: skip
    parsed = member_plan.parse_members(text)
    assert [(m.hex_id, m.name, m.started) for m in parsed] == [
        ("6fc1e7c9db35841d", SICK, True),
        ("2a", "", False),
    ]
    with pytest.raises(errors.IntegrityError, match=r"not a member list"):
        member_plan.parse_members("Error: context deadline exceeded")
    health = '[{"endpoint":"https://10.0.0.5:2379","health":true},{"endpoint":"https://10.0.0.6:2379","health":false}]'
    assert member_plan.health_urls(health) == {"https://10.0.0.5:2379": True, "https://10.0.0.6:2379": False}
    assert member_plan.health_urls("garbage") == {}


def test_verification_wants_one_healthy_started_member_per_node() -> None:
    plane = dict(MASTERS)
    all_healthy = {f"https://{ip}:2379": True for ip in MASTERS.values()}
    assert member_steps.check_members(members(*NAMES), all_healthy, control_plane=plane).done
    two = member_steps.check_members(members(*NAMES[1:]), all_healthy, control_plane=plane)
    assert not two.done
    assert f"no started member for {SICK}" in two.message
    sick = member_steps.check_members(
        members(*NAMES), {**all_healthy, f"https://{MASTERS[SICK]}:2379": False}, control_plane=plane
    )
    assert (sick.done, sick.extra) == (False, ())
    assert "unhealthy endpoints" in sick.message
    stranger = Member(
        id=9, name="ip-10-0-1-1.ec2.internal", peer_urls=("https://10.0.1.1:2380",), client_urls=()
    )
    extra = member_steps.check_members([*members(*NAMES), stranger], all_healthy, control_plane=plane)
    assert extra.extra == (stranger,) or stranger in extra.extra
    assert "ip-10-0-1-1.ec2.internal" in extra.message


# ---- the machine, the redeployment -------------------------------------------------------------
def test_next_machine_name_takes_the_next_free_index() -> None:
    existing = [f"{INFRA}-master-{i}" for i in range(3)] + [f"{INFRA}-worker-us-east-1a-wbtgd"]
    assert member_steps.next_machine_name(f"{INFRA}-master-0", existing) == f"{INFRA}-master-3"
    assert (
        member_steps.next_machine_name(f"{INFRA}-master-0", [*existing, f"{INFRA}-master-7"])
        == f"{INFRA}-master-8"
    )
    with pytest.raises(errors.PreflightRefused, match=r"does not end in a number"):
        member_steps.next_machine_name("oddly-named", existing)


def test_clean_machine_follows_step_3c() -> None:
    old = machine(SICK, 0, state="stopped")
    before = copy.deepcopy(old)
    new = member_steps.clean_machine(old, new_name=f"{INFRA}-master-3", node=SICK)
    assert old == before  # the input is not changed
    assert "status" not in new
    assert "providerID" not in new["spec"]
    assert new["spec"]["providerSpec"] == old["spec"]["providerSpec"]
    assert new["metadata"] == {
        "name": f"{INFRA}-master-3",
        "namespace": "openshift-machine-api",
        "labels": old["metadata"]["labels"],
        "annotations": {
            member_plan.REPLACES_NODE_ANNOTATION: SICK,
            member_steps.REPLACES_MACHINE_ANNOTATION: f"{INFRA}-master-0",
        },
    }


def test_redeploy_reason_is_date_rfc_3339_ns() -> None:
    moment = datetime(2021, 6, 25, 19, 0, 35, 123456, tzinfo=UTC)
    assert member_steps.redeploy_reason("single-master-recovery", moment) == (
        "single-master-recovery-2021-06-25 19:00:35.123456000+00:00"
    )
    east = moment.astimezone(timezone(timedelta(hours=9)))
    assert member_steps.redeploy_reason("recovery", east) == "recovery-2021-06-26 04:00:35.123456000+09:00"
    with pytest.raises(ValueError, match="aware datetime"):
        member_steps.redeploy_reason("recovery", datetime(2021, 1, 1))


def test_rollout_is_done_only_when_every_node_has_the_new_revision() -> None:
    def cr(reason: str, revisions: Sequence[int], latest: int = 8) -> Obj:
        return {"status": {"latestAvailableRevision": latest,
                           "conditions": [{"type": "NodeInstallerProgressing", "reason": reason, "message": "m"}],
                           "nodeStatuses": [{"nodeName": n, "currentRevision": r} for n, r in zip(NAMES, revisions, strict=True)]}}  # fmt: skip

    assert member_steps.rollout_done(cr("AllNodesAtLatestRevision", [8, 8, 8]), after=7) == (
        True,
        "latest revision 8: m",
    )
    assert not member_steps.rollout_done(cr("", [8, 7, 7]), after=7)[0]
    assert not member_steps.rollout_done(cr("AllNodesAtLatestRevision", [7, 7, 7], latest=7), after=7)[0]


def test_approval_summary_names_member_state_procedure_and_changes() -> None:
    found = member_plan.diagnose(**world(etcd_pods=[pod(SICK, etcd=CRASHLOOP), *(pod(n) for n in NAMES[1:])]))
    text = member_steps.approval_summary(
        cluster="demo", diagnosis=found, backup="`demo/4.8.12/2021-06-25T190035Z`, 1.0 h old",
        member_to_remove="6fc1e7c9db35841d", new_machine=None,
    )  # fmt: skip
    assert text.startswith(f"# Replace the etcd member of `{SICK}` on `demo` (guide 4.2.4.2)\n")
    assert "- state: **etcd-crash-looping**" in text
    assert "`/var/lib/etcd/` moved to `/tmp`" in text
    assert (
        f"`etcdctl member remove` of member 6fc1e7c9db35841d (name `{SICK}`, peer URL `https://{MASTERS[SICK]}:2380`)"
        in text
    )
    assert "single-master-recovery-<time>" in text
