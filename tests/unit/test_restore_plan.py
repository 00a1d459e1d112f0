"""The restore-cluster decisions: z-stream source, recovery host, lost hosts, the guide's machine
cleaning, redeployment reasons and rollout completion."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from etcdguard.core import errors, restore_plan
from etcdguard.core.restore_plan import HostProbe

pytestmark = pytest.mark.unit

NOW = datetime(2021, 6, 25, 19, 0, 35, 123456, tzinfo=UTC)


def _cv(version: str, *, desired: str | None = None) -> dict[str, object]:
    return {
        "status": {
            "desired": {"version": desired or version},
            "history": [{"state": "Completed", "version": version, "startedTime": "2021-01-01T00:00:00Z"}],
        }
    }


def _probe(
    name: str, *, reachable: bool = True, data: bool = True, etcd: bool = True, **kw: Any
) -> HostProbe:
    return HostProbe(
        name=name, address=f"10.0.0.{name[-1]}", reachable=reachable, data_dir=data, etcd_running=etcd, **kw
    )


def test_zstream_prefers_the_api_then_the_member_then_the_newest_backup() -> None:
    api = restore_plan.cluster_zstream(
        clusterversion=_cv("4.8.12"), member_clusterversion=_cv("4.8.11"), newest_backup_version="4.8.10"
    )
    assert (api.version, api.certain) == ("4.8.12", True)
    member = restore_plan.cluster_zstream(
        clusterversion=None, member_clusterversion=_cv("4.8.11"), newest_backup_version="4.8.10"
    )
    assert (member.version, member.certain) == ("4.8.11", True)
    assumed = restore_plan.cluster_zstream(
        clusterversion=None, member_clusterversion=None, newest_backup_version="4.8.10"
    )
    assert (assumed.version, assumed.certain) == ("4.8.10", False)
    assert "ASSUMED" in assumed.source
    with pytest.raises(errors.NotFoundError, match="nothing to restore from"):
        restore_plan.cluster_zstream(
            clusterversion=None, member_clusterversion=None, newest_backup_version=None
        )


def test_an_upgrading_cluster_is_refused() -> None:
    with pytest.raises(errors.PreflightRefused, match="upgrading"):
        restore_plan.cluster_zstream(
            clusterversion=_cv("4.8.12", desired="4.8.13"),
            member_clusterversion=None,
            newest_backup_version=None,
        )


def test_recovery_host_choice() -> None:
    probes = [
        _probe("m-3", etcd=False),
        _probe("m-1", reachable=False, error="refused"),
        _probe("m-2", data=False),
        _probe("m-4"),
    ]
    assert restore_plan.choose_recovery_host(probes, named=None).name == "m-4"  # running etcd first
    assert restore_plan.choose_recovery_host(probes, named="m-3").name == "m-3"
    assert restore_plan.choose_recovery_host(probes, named="10.0.0.3").name == "m-3"
    with pytest.raises(errors.PreflightRefused, match="m-1 does not answer over SSH"):
        restore_plan.choose_recovery_host(probes, named="m-1")
    with pytest.raises(errors.PreflightRefused, match="m-2 has no etcd data directory"):
        restore_plan.choose_recovery_host(probes, named="m-2")
    with pytest.raises(errors.NotFoundError, match="'x' is not a control-plane host"):
        restore_plan.choose_recovery_host(probes, named="x")
    with pytest.raises(errors.PreflightRefused, match="No control-plane host is healthy"):
        restore_plan.choose_recovery_host([_probe("m-1", data=False)], named=None)


def test_a_restore_in_progress_keeps_its_recovery_host() -> None:
    # After cluster-restore.sh the recovery host may have no member dir yet (the restore pod is
    # still restoring); its journal says a restore is in progress there, so a re-run goes on there.
    probes = [_probe("m-1", data=False, etcd=False, journal='{"done": ["copy-backup"]}'), _probe("m-2")]
    assert restore_plan.choose_recovery_host(probes, named=None).name == "m-1"
    assert restore_plan.choose_recovery_host(probes, named="m-1").name == "m-1"


def test_lost_hosts() -> None:
    probes = [_probe("m-1"), _probe("m-2", reachable=False, error="timed out")]
    assert [p.name for p in restore_plan.lost_hosts(probes, ready_nodes=None)] == ["m-2"]
    assert [p.name for p in restore_plan.lost_hosts(probes, ready_nodes={"m-1"})] == ["m-2"]
    with pytest.raises(errors.PreflightRefused, match="reports m-2 Ready, but SSH to it fails"):
        restore_plan.lost_hosts(probes, ready_nodes={"m-2"})
    bad_key = [_probe("m-3", reachable=False, permanent=True, error="host key differs")]
    with pytest.raises(errors.PreflightRefused, match="m-3: host key differs"):
        restore_plan.lost_hosts(bad_key, ready_nodes=None)


def test_machine_cleaning_follows_the_guide() -> None:
    machine = {
        "apiVersion": "machine.openshift.io/v1beta1",
        "kind": "Machine",
        "metadata": {
            "name": "c-8qw5l-master-0",
            "namespace": "openshift-machine-api",
            "selfLink": "/apis/machine.openshift.io/v1beta1/namespaces/openshift-machine-api/machines/c-8qw5l-master-0",
            "labels": {"machine.openshift.io/cluster-api-machine-role": "master"},
            "annotations": {"machine.openshift.io/instance-state": "running"},
            "generation": 2,
            "resourceVersion": "13291",
            "uid": "a282eb70",
            "creationTimestamp": "2020-04-20T16:53:50Z",
        },
        "spec": {
            "providerID": "aws:///us-east-1a/i-0fdb",
            "providerSpec": {"value": {"kind": "AWSMachineProviderConfig"}},
        },
        "status": {"phase": "Running"},
    }
    name = restore_plan.next_machine_name(
        "c-8qw5l-master-0", ["c-8qw5l-master-0", "c-8qw5l-master-1", "c-8qw5l-master-2", "c-8qw5l-worker-7"]
    )
    assert name == "c-8qw5l-master-3"
    cleaned = restore_plan.clean_machine(machine, new_name=name, backup_id="c/4.8.12/2021-06-25T190035Z")
    assert "status" not in cleaned
    assert cleaned["spec"] == {"providerSpec": {"value": {"kind": "AWSMachineProviderConfig"}}}
    assert cleaned["metadata"] == {
        "name": "c-8qw5l-master-3",
        "namespace": "openshift-machine-api",
        "labels": {"machine.openshift.io/cluster-api-machine-role": "master"},
        "annotations": {
            restore_plan.RECREATED_ANNOTATION: "c/4.8.12/2021-06-25T190035Z replaces c-8qw5l-master-0"
        },
    }
    assert machine["status"] == {"phase": "Running"}  # the input is left alone
    with pytest.raises(errors.PreflightRefused, match="does not end in a number"):
        restore_plan.next_machine_name("odd-name", [])


def test_redeploy_reason_is_date_rfc3339_ns() -> None:
    assert restore_plan.redeploy_reason(NOW) == "recovery-2021-06-25 19:00:35.123456000+00:00"
    assert restore_plan.redeploy_reason(NOW) != restore_plan.redeploy_reason(NOW + timedelta(microseconds=1))


def test_rollout_done_needs_a_newer_revision_everywhere() -> None:
    def cr(latest: int, reason: str | None, currents: list[int]) -> dict[str, object]:
        condition = {
            "type": "NodeInstallerProgressing",
            "message": "m",
            **({"reason": reason} if reason else {}),
        }
        return {
            "status": {
                "latestAvailableRevision": latest,
                "conditions": [condition],
                "nodeStatuses": [{"nodeName": f"n{i}", "currentRevision": c} for i, c in enumerate(currents)],
            }
        }

    assert restore_plan.rollout_done(cr(7, "AllNodesAtLatestRevision", [7, 7, 7]), after=6)[0]
    assert not restore_plan.rollout_done(cr(7, "AllNodesAtLatestRevision", [7, 7, 7]), after=7)[0]  # stale
    assert not restore_plan.rollout_done(cr(8, None, [7, 8, 8]), after=7)[0]
    done, message = restore_plan.rollout_done({}, after=0)
    assert not done
    assert "no NodeInstallerProgressing condition yet" in message


def test_journal_round_trip_and_refusal() -> None:
    journal = restore_plan.RestoreJournal(
        backup_id="c/4.8.12/2021-06-25T190035Z",
        recovery_node="m-1",
        recovery_address="10.0.0.1",
        started_at="t",
    )
    later = journal.with_step("copy-backup").with_step("copy-backup")
    assert later.steps == ("copy-backup",)
    assert restore_plan.RestoreJournal.from_json(later.to_json()) == later
    with pytest.raises(errors.IntegrityError, match="unreadable"):
        restore_plan.RestoreJournal.from_json("{}")


def test_approval_summary_names_what_is_destroyed() -> None:
    zstream = restore_plan.ZStream(version="4.8.12", source="the API's ClusterVersion", certain=True)
    text = restore_plan.approval_summary(
        cluster="demo",
        backup_id="demo/4.8.12/2021-06-25T170035Z",
        backup_taken_at=NOW - timedelta(hours=2),
        backup_version="4.8.12",
        zstream=zstream,
        recovery=_probe("m-1"),
        others=[_probe("m-2")],
        lost=[_probe("m-3", reachable=False, error="refused")],
        machines_to_replace=["demo-master-1", "demo-master-2"],
        proxy_note="no proxy variables (from the API's Proxy object)",
        resumed=None,
        notes=[],
        now=NOW,
    )
    assert "(2.0 h ago)" in text
    assert "`m-2` (10.0.0.2): etcd and kube-apiserver stopped" in text
    assert "`m-3` (10.0.0.3): unreachable (refused), treated as lost" in text
    assert "`demo-master-1`, `demo-master-2`" in text
