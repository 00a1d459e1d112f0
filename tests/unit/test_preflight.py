"""`assess_backup` on realistic API objects: a healthy 4.8.12 cluster built by `Cluster`, then one
thing broken at a time, each refusal's sentence checked."""

from __future__ import annotations

import dataclasses
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from etcdguard.core import errors, preflight

pytestmark = pytest.mark.unit

Obj = dict[str, Any]

NOW = datetime(2021, 9, 27, 2, 15, tzinfo=UTC)
CLUSTER_ID = "3f2b6d1e-8d4c-4f5a-9e0b-2c7a1d9e6f40"
MASTERS = {
    "ip-10-0-175-108.ec2.internal": "10.0.175.108",
    "ip-10-0-131-183.ec2.internal": "10.0.131.183",
    "ip-10-0-154-204.ec2.internal": "10.0.154.204",
}
WORKERS = {"ip-10-0-140-12.ec2.internal": "10.0.140.12", "ip-10-0-199-7.ec2.internal": "10.0.199.7"}
ETCD_CONTAINERS = ("etcdctl", "etcd", "etcd-metrics", "etcd-health-monitor", "etcd-readyz")


def ts(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def cond(kind: str, status: str, *, reason: str = "AsExpected", message: str = "") -> Obj:
    out: Obj = {"type": kind, "status": status, "lastTransitionTime": ts(NOW - timedelta(days=2))}
    if reason:
        out["reason"] = reason
    if message:
        out["message"] = message
    return out


def history_entry(state: str, version: str, started: datetime) -> Obj:
    entry: Obj = {
        "state": state,
        "startedTime": ts(started),
        "version": version,
        "image": f"quay.io/openshift-release-dev/ocp-release@sha256:{version.replace('.', '') * 8}",
        "verified": state == "Completed",
    }
    if state == "Completed":
        entry["completionTime"] = ts(started + timedelta(minutes=45))
    else:
        entry["completionTime"] = None
    return entry


def node(
    name: str, ip: str, *, role: str = "master", ready: str = "True", taints: tuple[Obj, ...] = ()
) -> Obj:
    spec_taints = (
        [{"key": f"node-role.kubernetes.io/{role}", "effect": "NoSchedule"}] if role == "master" else []
    )
    spec_taints += list(taints)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                f"node-role.kubernetes.io/{role}": "",
                "node.openshift.io/os_id": "rhcos",
            },
        },
        "spec": {"providerID": f"aws:///us-east-1a/i-0{ip.replace('.', '')}", "taints": spec_taints},
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": ip},
                {"type": "Hostname", "address": name},
                {"type": "InternalDNS", "address": name},
            ],
            "conditions": [
                cond("MemoryPressure", "False", reason="KubeletHasSufficientMemory"),
                cond("DiskPressure", "False", reason="KubeletHasNoDiskPressure"),
                cond("PIDPressure", "False", reason="KubeletHasSufficientPID"),
                cond(
                    "Ready",
                    ready,
                    reason="KubeletReady" if ready == "True" else "NodeStatusUnknown",
                    message="kubelet is posting ready status"
                    if ready == "True"
                    else "Kubelet stopped posting node status.",
                ),
            ],
        },
    }


def etcd_pod(node_name: str, *, phase: str = "Running", ready: bool = True, app: str = "etcd") -> Obj:
    name = f"etcd-{node_name}" if app == "etcd" else f"installer-7-{node_name}"
    containers = ETCD_CONTAINERS if app == "etcd" else ("installer",)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "openshift-etcd",
            "labels": {"app": app, "k8s-app": app, "etcd": "true", "revision": "7"}
            if app == "etcd"
            else {"app": app},
        },
        "spec": {"nodeName": node_name, "hostNetwork": True},
        "status": {
            "phase": phase,
            "conditions": [cond("Ready", "True" if ready else "False", reason="")],
            "containerStatuses": [
                {
                    "name": c,
                    "ready": ready if c == "etcd" else True,
                    "restartCount": 0,
                    "started": True,
                    "state": {"running": {"startedAt": ts(NOW - timedelta(days=1))}},
                }
                for c in containers
            ],
        },
    }


def cluster_operator(name: str, *, progressing: str | None = "False", message: str = "") -> Obj:
    conditions = [cond("Degraded", "False", message="NodeControllerDegraded: All master nodes are ready")]
    if progressing is not None:
        conditions.append(
            cond(
                "Progressing",
                progressing,
                message=message or "NodeInstallerProgressing: 3 nodes are at revision 7",
            )
        )
    conditions.append(cond("Available", "True", message="StaticPodsAvailable: 3 nodes are active"))
    return {
        "apiVersion": "config.openshift.io/v1",
        "kind": "ClusterOperator",
        "metadata": {"name": name},
        "spec": {},
        "status": {"conditions": conditions, "versions": [{"name": "operator", "version": "4.8.12"}]},
    }


@dataclasses.dataclass
class Cluster:
    """A healthy 4.8.12 cluster, installed on 4.8.10 a month ago; change fields to break it."""

    history: list[Obj] = dataclasses.field(
        default_factory=lambda: [
            history_entry("Completed", "4.8.12", NOW - timedelta(days=3)),
            history_entry("Completed", "4.8.10", NOW - timedelta(days=30)),
        ]
    )
    desired: str = "4.8.12"
    cv_progressing: str = "False"
    cluster_id: Any = CLUSTER_ID
    nodes: list[Obj] = dataclasses.field(
        default_factory=lambda: [
            node(name, ip, role="worker") if name in WORKERS else node(name, ip)
            for name, ip in [*list(MASTERS.items())[:2], *WORKERS.items(), list(MASTERS.items())[2]]
        ]
    )
    members_available: str | None = "True"
    members_message: str = "3 members are available"
    etcd_pods: list[Obj] = dataclasses.field(
        default_factory=lambda: (
            [etcd_pod(name) for name in MASTERS]
            + [etcd_pod(name, app="installer", phase="Succeeded", ready=False) for name in MASTERS]
        )
    )
    operators: dict[str, Obj] = dataclasses.field(
        default_factory=lambda: {
            name: cluster_operator(name)
            for name in ("authentication", *preflight.BACKUP_OPERATORS, "machine-config")
        }
    )
    proxy: Obj | None = dataclasses.field(
        default_factory=lambda: {"spec": {"trustedCA": {"name": ""}}, "status": {}}
    )
    apiserver: Obj | None = dataclasses.field(
        default_factory=lambda: {"spec": {"audit": {"profile": "Default"}}, "status": {}}
    )

    def clusterversion(self) -> Obj:
        return {
            "apiVersion": "config.openshift.io/v1",
            "kind": "ClusterVersion",
            "metadata": {"name": "version"},
            "spec": {"channel": "stable-4.8", "clusterID": self.cluster_id},
            "status": {
                "conditions": [
                    cond(
                        "Available", "True", reason="", message=f"Done applying {self.history[0]['version']}"
                    ),
                    cond("Failing", "False", reason=""),
                    cond("Progressing", self.cv_progressing, reason="", message="Cluster version is 4.8.12"),
                ],
                "desired": {"version": self.desired, "image": "quay.io/openshift-release-dev/ocp-release"},
                "history": self.history,
                "observedGeneration": 1,
            },
        }

    def etcd(self) -> Obj:
        conditions = [cond("NodeInstallerProgressing", "False", reason="AllNodesAtLatestRevision")]
        if self.members_available is not None:
            conditions.append(
                cond(
                    "EtcdMembersAvailable",
                    self.members_available,
                    reason="EtcdQuorate" if self.members_available == "True" else "No quorum",
                    message=self.members_message,
                )
            )
        return {
            "apiVersion": "operator.openshift.io/v1",
            "kind": "Etcd",
            "metadata": {"name": "cluster"},
            "status": {"latestAvailableRevision": 7, "conditions": conditions},
        }

    def assess(
        self, *, force: bool = False, min_age: timedelta = timedelta(hours=24)
    ) -> preflight.BackupPreflight:
        return preflight.assess_backup(
            clusterversion=self.clusterversion(),
            nodes=self.nodes,
            etcd=self.etcd(),
            etcd_pods=self.etcd_pods,
            cluster_operators=list(self.operators.values()),
            proxy=self.proxy,
            apiserver=self.apiserver,
            now=NOW,
            min_age=min_age,
            force=force,
        )

    def replace_node(self, name: str, new: Obj) -> None:
        self.nodes = [new if n["metadata"]["name"] == name else n for n in self.nodes]

    def replace_etcd_pod(self, name: str, new: Obj | None) -> None:
        kept = [p for p in self.etcd_pods if p["metadata"]["name"] != f"etcd-{name}"]
        self.etcd_pods = kept if new is None else [*kept, new]


def refused(cluster: Cluster, *, force: bool = False) -> str:
    with pytest.raises(errors.PreflightRefused) as info:
        cluster.assess(force=force)
    return str(info.value)


def names(result: preflight.BackupPreflight) -> list[str]:
    return [c.name for c in result.candidates]


# ---- the happy path ---------------------------------------------------------------------------
def test_healthy_cluster_gives_zstream_id_and_sorted_master_candidates() -> None:
    result = Cluster().assess()

    assert result.ocp_version == "4.8.12"
    assert result.cluster_id == uuid.UUID(CLUSTER_ID)
    assert result.encryption is None
    assert result.proxy_env == {}
    assert result.notes == ()
    assert result.candidates == (
        preflight.NodeCandidate(name="ip-10-0-131-183.ec2.internal", address="10.0.131.183"),
        preflight.NodeCandidate(name="ip-10-0-154-204.ec2.internal", address="10.0.154.204"),
        preflight.NodeCandidate(name="ip-10-0-175-108.ec2.internal", address="10.0.175.108"),
    )
    assert not set(names(result)) & set(WORKERS)


def test_zstream_is_the_first_completed_entry_not_a_failed_older_attempt() -> None:
    cluster = Cluster(
        history=[
            history_entry("Completed", "4.8.12", NOW - timedelta(days=2)),
            history_entry("Partial", "4.8.11", NOW - timedelta(days=5)),
            history_entry("Completed", "4.8.10", NOW - timedelta(days=40)),
        ]
    )
    assert cluster.assess().ocp_version == "4.8.12"


def test_control_plane_label_counts_as_master_and_internal_ip_is_the_address() -> None:
    cluster = Cluster()
    renamed = node("ip-10-0-131-183.ec2.internal", "10.0.131.183")
    labels = renamed["metadata"]["labels"]
    del labels["node-role.kubernetes.io/master"]
    labels["node-role.kubernetes.io/control-plane"] = ""
    # The Hostname/InternalDNS entries come first here: the InternalIP is still the one used.
    renamed["status"]["addresses"].reverse()
    cluster.replace_node("ip-10-0-131-183.ec2.internal", renamed)

    result = cluster.assess()

    assert result.candidates[0] == preflight.NodeCandidate(
        name="ip-10-0-131-183.ec2.internal", address="10.0.131.183"
    )


def test_proxy_status_becomes_the_proxy_environment() -> None:
    proxy = {
        "spec": {
            "httpProxy": "http://spec-only.example:3128",
            "trustedCA": {"name": "user-ca-bundle"},
        },
        "status": {
            "httpProxy": "http://proxy.corp.example:3128",
            "httpsProxy": "http://proxy.corp.example:3129",
            "noProxy": ".cluster.local,.svc,10.0.0.0/16,api-int.demo.example.com,localhost",
        },
    }
    result = Cluster(proxy=proxy).assess()

    assert result.proxy_env == {
        "HTTP_PROXY": "http://proxy.corp.example:3128",
        "HTTPS_PROXY": "http://proxy.corp.example:3129",
        "NO_PROXY": ".cluster.local,.svc,10.0.0.0/16,api-int.demo.example.com,localhost",
    }
    assert preflight.proxy_env({"spec": {"httpProxy": "http://x:1"}, "status": {"httpsProxy": ""}}) == {}
    assert Cluster(proxy=None).assess().proxy_env == {}


@pytest.mark.parametrize(
    ("apiserver", "expected"),
    [
        ({"spec": {"encryption": {"type": "aescbc"}}}, "aescbc"),
        ({"spec": {"encryption": {"type": "identity"}}}, "identity"),
        ({"spec": {"encryption": {"type": ""}}}, None),
        ({"spec": {"audit": {"profile": "Default"}}}, None),
        (None, None),
    ],
)
def test_encryption_comes_from_the_apiserver(apiserver: Obj | None, expected: str | None) -> None:
    assert Cluster(apiserver=apiserver).assess().encryption == expected


# ---- cluster age ------------------------------------------------------------------------------
def young() -> Cluster:
    return Cluster(history=[history_entry("Completed", "4.8.12", NOW - timedelta(hours=23))])


def test_cluster_younger_than_24_hours_is_refused() -> None:
    message = refused(young())
    assert "installed 23.0 h ago" in message
    assert "24 h after installation" in message
    assert "first certificate rotation" in message
    assert "run with force=True" in message


def test_force_allows_a_young_cluster_with_a_note() -> None:
    result = young().assess(force=True)
    assert result.ocp_version == "4.8.12"
    assert len(result.candidates) == 3
    assert any(n.startswith("forced: The cluster was installed 23.0 h ago") for n in result.notes)


def test_age_counts_from_the_installation_not_the_last_upgrade() -> None:
    cluster = Cluster(
        history=[
            history_entry("Completed", "4.8.12", NOW - timedelta(hours=2)),
            history_entry("Completed", "4.8.10", NOW - timedelta(hours=25)),
        ]
    )
    assert cluster.assess().notes == ()


# ---- upgrades ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"cv_progressing": "True"}, "the ClusterVersion condition Progressing is True"),
        (
            {
                "history": [
                    history_entry("Partial", "4.8.13", NOW - timedelta(minutes=20)),
                    history_entry("Completed", "4.8.12", NOW - timedelta(days=3)),
                    history_entry("Completed", "4.8.10", NOW - timedelta(days=30)),
                ]
            },
            "the newest ClusterVersion history entry (4.8.13, started 2021-09-27T01:55:00Z) is Partial",
        ),
        ({"desired": "4.8.13"}, "status.desired.version is 4.8.13 while the current z-stream is 4.8.12"),
    ],
)
@pytest.mark.parametrize("force", [False, True])
def test_an_upgrade_in_progress_is_refused_even_with_force(
    change: dict[str, Any], expected: str, force: bool
) -> None:
    message = refused(Cluster(**change), force=force)
    assert message.startswith("The cluster is upgrading: ")
    assert expected in message
    assert "Back up after the upgrade completes" in message


# ---- operators --------------------------------------------------------------------------------
@pytest.mark.parametrize("operator", preflight.BACKUP_OPERATORS)
def test_a_progressing_control_plane_operator_is_refused_and_force_skips_it(operator: str) -> None:
    cluster = Cluster()
    cluster.operators[operator] = cluster_operator(
        operator, progressing="True", message="NodeInstallerProgressing: 1 nodes are at revision 8"
    )

    message = refused(cluster)

    assert (
        f"These operators are Progressing: {operator} (NodeInstallerProgressing: 1 nodes are at revision 8)"
        in message
    )
    assert "run with force=True" in message
    result = cluster.assess(force=True)
    assert len(result.candidates) == 3
    assert "forced: ClusterOperator Progressing checks skipped (cluster-backup.sh --force)." in result.notes


def test_all_progressing_operators_are_named_and_unknown_counts_as_progressing() -> None:
    cluster = Cluster()
    cluster.operators["etcd"] = cluster_operator("etcd", progressing="Unknown", message="")
    cluster.operators["kube-scheduler"] = cluster_operator("kube-scheduler", progressing="True", message="x")
    # A progressing operator that cluster-backup.sh does not look at is irrelevant.
    cluster.operators["machine-config"] = cluster_operator("machine-config", progressing="True")

    message = refused(cluster)

    assert "kube-scheduler (x)" in message
    assert "etcd (NodeInstallerProgressing: 3 nodes are at revision 7)" in message
    assert "machine-config" not in message


@pytest.mark.parametrize("missing", ["condition", "operator"])
def test_an_operator_without_a_progressing_condition_is_refused(missing: str) -> None:
    cluster = Cluster()
    if missing == "condition":
        cluster.operators["kube-controller-manager"] = cluster_operator(
            "kube-controller-manager", progressing=None
        )
    else:
        del cluster.operators["kube-controller-manager"]

    message = refused(cluster)

    assert "ClusterOperator kube-controller-manager has no Progressing condition" in message
    assert "Could not find the status" in message
    assert len(cluster.assess(force=True).candidates) == 3


# ---- quorum and members -----------------------------------------------------------------------
@pytest.mark.parametrize("force", [False, True])
def test_lost_quorum_is_refused_and_points_to_restore_cluster(force: bool) -> None:
    cluster = Cluster(
        members_available="False",
        members_message="1 of 3 members are available, ip-10-0-131-183.ec2.internal is unhealthy, "
        "ip-10-0-154-204.ec2.internal is unhealthy",
    )

    message = refused(cluster, force=force)

    assert message.startswith("etcd has lost quorum (1 of 3 members are available, ")
    assert "restore-cluster flow" in message
    assert "newest verified backup of this cluster's z-stream" in message


def test_no_members_available_condition_is_refused() -> None:
    message = refused(Cluster(members_available=None))
    assert "reports no EtcdMembersAvailable condition" in message
    assert "oc get etcd -o yaml" in message


def test_an_unhealthy_member_is_excluded_and_noted() -> None:
    cluster = Cluster(
        members_message="2 of 3 members are available, ip-10-0-131-183.ec2.internal is unhealthy"
    )

    result = cluster.assess()

    assert names(result) == ["ip-10-0-154-204.ec2.internal", "ip-10-0-175-108.ec2.internal"]
    assert result.notes == (
        "etcd members not healthy, not used for the backup: ip-10-0-131-183.ec2.internal.",
    )


def test_unstarted_members_are_excluded_and_name_pending_ones_ignored() -> None:
    cluster = Cluster(
        members_message="2 of 4 members are available, ip-10-0-175-108.ec2.internal has not started, "
        "NAME-PENDING-10.0.160.9 has not started"
    )

    result = cluster.assess()

    assert names(result) == ["ip-10-0-131-183.ec2.internal", "ip-10-0-154-204.ec2.internal"]
    assert result.notes == (
        "etcd members not healthy, not used for the backup: ip-10-0-175-108.ec2.internal.",
    )
    assert preflight.unhealthy_members(cluster.etcd()) == {"ip-10-0-175-108.ec2.internal"}


def test_only_pending_members_leave_every_node_a_candidate() -> None:
    result = Cluster(
        members_message="3 of 4 members are available, NAME-PENDING-10.0.160.9 has not started"
    ).assess()
    assert len(result.candidates) == 3
    assert result.notes == ()


# ---- nodes and etcd pods ----------------------------------------------------------------------
UNREACHABLE = {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute", "timeAdded": ts(NOW)}


@pytest.mark.parametrize(
    "broken",
    [
        pytest.param(node("ip-10-0-154-204.ec2.internal", "10.0.154.204", ready="False"), id="not-ready"),
        pytest.param(node("ip-10-0-154-204.ec2.internal", "10.0.154.204", ready="Unknown"), id="unknown"),
        pytest.param(
            node("ip-10-0-154-204.ec2.internal", "10.0.154.204", taints=(UNREACHABLE,)), id="unreachable"
        ),
    ],
)
def test_a_node_not_ready_or_unreachable_is_excluded(broken: Obj) -> None:
    cluster = Cluster()
    cluster.replace_node("ip-10-0-154-204.ec2.internal", broken)
    assert names(cluster.assess()) == ["ip-10-0-131-183.ec2.internal", "ip-10-0-175-108.ec2.internal"]


def test_a_master_without_internal_ip_is_excluded() -> None:
    cluster = Cluster()
    bare = node("ip-10-0-154-204.ec2.internal", "10.0.154.204")
    bare["status"]["addresses"] = [a for a in bare["status"]["addresses"] if a["type"] != "InternalIP"]
    cluster.replace_node("ip-10-0-154-204.ec2.internal", bare)
    assert "ip-10-0-154-204.ec2.internal" not in names(cluster.assess())


@pytest.mark.parametrize(
    "pod",
    [
        pytest.param(etcd_pod("ip-10-0-175-108.ec2.internal", ready=False), id="not-ready"),
        pytest.param(etcd_pod("ip-10-0-175-108.ec2.internal", phase="Pending"), id="pending"),
        pytest.param(etcd_pod("ip-10-0-175-108.ec2.internal", phase="Failed", ready=False), id="failed"),
        pytest.param(None, id="missing"),
    ],
)
def test_a_node_whose_etcd_pod_is_not_running_and_ready_is_excluded(pod: Obj | None) -> None:
    cluster = Cluster()
    cluster.replace_etcd_pod("ip-10-0-175-108.ec2.internal", pod)
    assert names(cluster.assess()) == ["ip-10-0-131-183.ec2.internal", "ip-10-0-154-204.ec2.internal"]


def test_only_the_etcd_container_decides_readiness() -> None:
    pod = etcd_pod("ip-10-0-175-108.ec2.internal")
    for status in pod["status"]["containerStatuses"]:
        status["ready"] = status["name"] == "etcd"
    cluster = Cluster()
    cluster.replace_etcd_pod("ip-10-0-175-108.ec2.internal", pod)
    assert "ip-10-0-175-108.ec2.internal" in names(cluster.assess())


def test_no_candidate_is_refused() -> None:
    cluster = Cluster(
        members_message="2 of 3 members are available, ip-10-0-131-183.ec2.internal is unhealthy"
    )
    cluster.replace_node(
        "ip-10-0-154-204.ec2.internal", node("ip-10-0-154-204.ec2.internal", "10.0.154.204", ready="False")
    )
    cluster.replace_etcd_pod("ip-10-0-175-108.ec2.internal", None)

    for force in (False, True):
        message = refused(cluster, force=force)
        assert message.startswith("No control-plane node is healthy enough to take the backup on")
        assert "replace-etcd-member flow" in message


@pytest.mark.parametrize("bad", ["not-a-uuid", "", None, "3f2b6d1e-8d4c-4f5a-9e0b"])
def test_a_bad_cluster_id_is_refused(bad: Any) -> None:
    message = refused(Cluster(cluster_id=bad))
    assert re.search(rf"ClusterVersion spec\.clusterID {re.escape(repr(bad))} is not a UUID", message)
    assert "oc get clusterversion version -o yaml" in message


def test_condition_finds_by_type() -> None:
    etcd = Cluster().etcd()
    found = preflight.condition(etcd, "EtcdMembersAvailable")
    assert found is not None
    assert found["reason"] == "EtcdQuorate"
    assert preflight.condition(etcd, "EtcdMembersDegraded") is None
    assert preflight.condition({"status": {"conditions": "garbage"}}, "Ready") is None
