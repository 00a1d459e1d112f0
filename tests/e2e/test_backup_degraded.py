"""The backup on a degraded cluster (its own simulated cluster): with one control-plane machine
stopped the backup is still taken, from a healthy node; with quorum lost it is refused with a
message that points to restore-cluster, and nothing is stored."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from etcdguard_sim import layout
from etcdguard_sim.faults import cluster as faults_cluster
from etcdguard_sim.runtime import control
from etcdguard_sim.seed import profiles

from etcdguard.core import errors
from flows.backup import etcd_backup
from tests.simtools import kubectl

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("prefect_server")]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[layout.SimSpec]:
    state_dir = tmp_path_factory.mktemp("degraded") / "sim"
    try:
        yield control.up(state_dir, cluster_name="lab")
    finally:
        control.down(state_dir)


@pytest.fixture
def lab_profiles(lab: layout.SimSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "profiles"
    profiles.write_profile(lab, directory)
    monkeypatch.setenv("ETCDGUARD_PROFILES", str(directory))
    return directory


def _wait_for(what: str, check: object, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(1)


def test_one_machine_stopped_backup_from_a_healthy_node(lab: layout.SimSpec, lab_profiles: Path) -> None:
    down = lab.masters[0].name
    faults_cluster.stop_machine(lab, down)
    jsonpath = (
        '-o=jsonpath={range .items[0].status.conditions[?(@.type=="EtcdMembersAvailable")]}{.message}{end}'
    )
    _wait_for(
        "etcd to report the member unhealthy",
        lambda: f"{down} is unhealthy" in kubectl(lab, "get", "etcd", jsonpath, check=False).stdout,
    )

    outcome = etcd_backup("lab")

    assert outcome.status == "completed", outcome.message
    assert outcome.source_node != down
    assert outcome.source_node in {m.name for m in lab.masters[1:]}


def test_quorum_lost_is_refused_pointing_to_restore(lab: layout.SimSpec, lab_profiles: Path) -> None:
    import boto3
    from etcdguard_sim.runtime import cloud

    s3 = boto3.client(
        "s3", endpoint_url=lab.moto_endpoint, region_name=cloud.REGION, **cloud.DUMMY_CREDENTIALS
    )
    before = s3.list_objects_v2(Bucket=profiles.SNAPSHOT_BUCKET).get("KeyCount", 0)
    faults_cluster.stop_machine(lab, lab.masters[1].name)  # masters[0] is already stopped: 1 of 3 left
    _wait_for("the API to go away", lambda: kubectl(lab, "get", "nodes", check=False).returncode != 0)

    with pytest.raises(
        errors.PreflightRefused, match=r"lost quorum .* restore-cluster flow \(guide 4\.3\.2\)"
    ):
        etcd_backup("lab")

    assert s3.list_objects_v2(Bucket=profiles.SNAPSHOT_BUCKET).get("KeyCount", 0) == before
