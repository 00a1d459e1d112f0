"""restore-cluster (guide 4.3.2) end to end: each destructive case on its own simulated cluster
(the session's `sim` stays healthy for the other tests), the operator's approval given through the
Prefect API from a background thread, as the UI would.

(a) two of three control-plane hosts lost -> three healthy members, API up, objects as of the backup
(b) a namespace deleted after the backup -> it is back
(c) a backup of another z-stream is refused before anything changes
(d) an approval refused, or not given in time -> nothing changed
(e) stopped after cluster-restore.sh, run again -> completes without repeating destructive steps
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from etcdguard_sim import layout
from etcdguard_sim.runtime import cloud, control
from etcdguard_sim.seed import profiles

from etcdguard.core import errors
from flows.backup import etcd_backup
from flows.restore import STOP_AFTER_ENV, restore_cluster
from tests import simtools
from tests.approvals import Operator, approve

# Each case starts its own cluster (about 60-90 s on a loaded machine) and a full restore takes
# about 3 minutes there: far above the suite's default timeout.
pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("prefect_server"), pytest.mark.timeout(900)]


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[layout.SimSpec]:
    """A cluster of its own, its profile written, and one backup taken with the backup flow."""
    state_dir = tmp_path / "sim"
    try:
        spec = control.up(state_dir)
        profiles.write_profile(spec, tmp_path / "profiles")
        monkeypatch.setenv("ETCDGUARD_PROFILES", str(tmp_path / "profiles"))
        simtools.kubectl(spec, "create", "namespace", "restore-check")
        outcome = etcd_backup(spec.cluster_name, force=True)
        assert outcome.status == "completed", outcome.message
        yield spec
    finally:
        control.down(state_dir)


def _restore(spec: layout.SimSpec, answer: dict[str, Any] | None, **params: Any) -> Any:
    operator = Operator("restore-cluster", answer)
    operator.start()
    try:
        return restore_cluster(spec.cluster_name, **params)
    finally:
        operator.join(timeout=5)
        assert operator.error is None


def _kget(spec: layout.SimSpec, *args: str) -> Any:
    return json.loads(simtools.kubectl(spec, "get", *args, "-o", "json").stdout)


def _host_state(spec: layout.SimSpec) -> dict[str, list[str]]:
    """What the destructive steps would change on each control-plane host."""
    out = {}
    for node in layout.SimSpec.load(spec.state_dir).masters:
        root = spec.host_root(node)
        out[node.name] = sorted(
            [p.name for p in (root / "etc/kubernetes/manifests").glob("*.yaml")]
            + [p.name for p in (root / "var/lib/etcd").glob("*")]
            + [f"backup/{p.name}" for p in (root / "home/core/backup").glob("*")]
        )
    return out


def _wait(what: str, probe: Any, *, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(1)


def _assert_restored(spec: layout.SimSpec, outcome: Any) -> None:
    assert outcome.ocp_version == "4.8.12"
    assert len(outcome.machines_replaced) == 2
    masters = [
        n
        for n in _kget(spec, "nodes")["items"]
        if "node-role.kubernetes.io/master" in n["metadata"]["labels"]
    ]
    assert len(masters) == 3
    assert all(
        next(c["status"] for c in n["status"]["conditions"] if c["type"] == "Ready") == "True"
        for n in masters
    )
    healthy = [line for line in outcome.verification if line.startswith("member ") and "healthy" in line]
    assert len(healthy) == 3, outcome.verification
    etcd = _kget(spec, "etcd", "cluster")
    installing = next(c for c in etcd["status"]["conditions"] if c["type"] == "NodeInstallerProgressing")
    assert installing["reason"] == "AllNodesAtLatestRevision"
    assert _kget(spec, "namespace", "restore-check")["metadata"]["name"] == "restore-check"


def test_deleted_namespace_comes_back(cluster: layout.SimSpec) -> None:  # (b)
    simtools.kubectl(cluster, "delete", "namespace", "restore-check")
    assert simtools.kubectl(cluster, "get", "namespace", "restore-check", check=False).returncode != 0
    outcome = _restore(cluster, approve(cluster.cluster_name))
    _assert_restored(cluster, outcome)
    assert outcome.skipped == []
    assert outcome.ocp_version_source == "the API's ClusterVersion"
    assert any("PV" in line or "PersistentVolume" in line for line in outcome.storage_caveats)


def _forge_other_zstream(spec: layout.SimSpec) -> str:
    """Copy the backup's objects under 4.8.11 keys with a rewritten manifest."""
    s3 = boto3.client(
        "s3", endpoint_url=spec.moto_endpoint, region_name=cloud.REGION, **cloud.DUMMY_CREDENTIALS
    )
    try:
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=profiles.SNAPSHOT_BUCKET)["Contents"]]
        manifest_key = next(k for k in keys if k.endswith("manifest.json"))
        manifest = json.loads(s3.get_object(Bucket=profiles.SNAPSHOT_BUCKET, Key=manifest_key)["Body"].read())
        manifest["ocp_version"] = "4.8.11"
        for file in manifest["files"]:
            bucket = profiles.SNAPSHOT_BUCKET if file["kind"] == "snapshot" else profiles.STATIC_BUCKET
            new_key = file["key"].replace("/4.8.12/", "/4.8.11/")
            # Read and write, not CopyObject: moto copies a multipart object's composite CRC32
            # without its "-<parts>" suffix, and botocore then checks the copy's bytes against it.
            body = s3.get_object(Bucket=bucket, Key=file["key"])["Body"].read()
            s3.put_object(Bucket=bucket, Key=new_key, Body=body)
            file["key"] = new_key
        s3.put_object(
            Bucket=profiles.SNAPSHOT_BUCKET,
            Key=manifest_key.replace("/4.8.12/", "/4.8.11/"),
            Body=json.dumps(manifest).encode(),
        )
    finally:
        s3.close()
    return "/".join(manifest_key.replace("/4.8.12/", "/4.8.11/").split("/")[1:4])


def test_refusals_change_nothing(cluster: layout.SimSpec) -> None:  # (c) and (d)
    before = _host_state(cluster)
    other = _forge_other_zstream(cluster)
    assert other.startswith("demo/4.8.11/")
    with pytest.raises(errors.VersionMismatch, match=r"taken on 4\.8\.11 but the cluster runs 4\.8\.12"):
        _restore(cluster, None, backup=other)
    with pytest.raises(errors.ApprovalRejected, match=r"sre-on-call refused restore-cluster"):
        _restore(cluster, approve(cluster.cluster_name, approve=False))
    with pytest.raises(errors.ApprovalRejected, match=r"Nobody approved restore-cluster on demo within 3 s"):
        _restore(cluster, None, approval_timeout_s=3)
    assert _host_state(cluster) == before
    assert _kget(cluster, "namespace", "restore-check")["metadata"]["name"] == "restore-check"


def test_two_hosts_lost(cluster: layout.SimSpec) -> None:  # (a)
    ec2 = cloud.ec2_client(cluster)
    lost = cluster.masters[1:]
    ec2.stop_instances(InstanceIds=[n.instance_id for n in lost])
    _wait("the API to go down", lambda: simtools.kubectl(cluster, "get", "ns", check=False).returncode != 0)
    outcome = _restore(cluster, approve(cluster.cluster_name))
    assert outcome.recovery_host == cluster.masters[0].name
    _assert_restored(cluster, outcome)
    assert any("profile's control_plane" in note for note in outcome.notes)
    assert outcome.ocp_version_source.startswith("the ClusterVersion held by the surviving etcd member")


def test_interrupted_restore_continues(
    cluster: layout.SimSpec, monkeypatch: pytest.MonkeyPatch
) -> None:  # (e)
    simtools.kubectl(cluster, "delete", "namespace", "restore-check")
    monkeypatch.setenv(STOP_AFTER_ENV, "cluster-restore.sh")
    with pytest.raises(errors.PermanentError, match=r"Stopped after step cluster-restore\.sh"):
        _restore(cluster, approve(cluster.cluster_name))
    monkeypatch.delenv(STOP_AFTER_ENV)
    outcome = _restore(cluster, approve(cluster.cluster_name))
    assert outcome.skipped == ["copy-backup", "stop-static-pods", "cluster-restore.sh"]
    _assert_restored(cluster, outcome)
