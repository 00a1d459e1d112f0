"""The simulated cluster's state really lives in etcd: a snapshot taken with the real `etcdctl`
captures it, and restoring the members from that snapshot brings a deleted object back after
the API server restarts. Uses its own cluster, since it destroys and restores etcd."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from etcdguard_sim import layout
from etcdguard_sim.runtime import control

from tests.simtools import etcdctl, kubectl

pytestmark = pytest.mark.integration


@pytest.fixture
def own_sim(tmp_path: Path) -> Iterator[layout.SimSpec]:
    state_dir = tmp_path / "sim"
    try:
        yield control.up(state_dir)
    finally:
        control.down(state_dir)


def _restore_member(spec: layout.SimSpec, node: layout.NodeSpec, snapshot: Path) -> None:
    scratch = spec.state_dir / "restore" / node.name
    proc = etcdctl(
        spec,
        "snapshot",
        "restore",
        str(snapshot),
        f"--name={node.name}",
        f"--initial-cluster={spec.etcd_initial_cluster()}",
        f"--initial-cluster-token={spec.etcd_cluster_token}",
        f"--initial-advertise-peer-urls={node.etcd_peer_url}",
        f"--data-dir={scratch}",
        node=node,
    )
    assert proc.returncode == 0, proc.stderr
    data_dir = spec.etcd_data_dir(node)
    shutil.rmtree(data_dir / "member")
    (scratch / "member").rename(data_dir / "member")


def test_deleted_namespace_comes_back_from_snapshot(own_sim: layout.SimSpec, tmp_path: Path) -> None:
    spec = own_sim
    kubectl(spec, "create", "namespace", "precious")
    kubectl(spec, "create", "configmap", "-n", "precious", "settings", "--from-literal=colour=blue")

    snapshot = tmp_path / "snapshot.db"
    saved = etcdctl(spec, "snapshot", "save", str(snapshot))
    assert saved.returncode == 0, saved.stderr
    # The object is in the snapshot's keyspace, as JSON under /kubernetes.io/.
    status = etcdctl(spec, "snapshot", "status", str(snapshot), "-w", "json")
    assert '"totalKey"' in status.stdout

    kubectl(spec, "delete", "namespace", "precious")
    gone = kubectl(spec, "get", "configmap", "-n", "precious", "settings", check=False)
    assert gone.returncode != 0
    # kubectl follows a 404 inside a missing namespace with a lookup of the namespace itself.
    assert 'namespaces "precious" not found' in gone.stderr

    control.down(spec.state_dir)
    for node in spec.masters:
        _restore_member(spec, node, snapshot)
    control.up(spec.state_dir)

    back = kubectl(spec, "get", "configmap", "-n", "precious", "settings", "-o", "jsonpath={.data.colour}")
    assert back.stdout == "blue"
    health = etcdctl(spec, "endpoint", "health", "--cluster", "-w", "json")
    assert health.returncode == 0, health.stderr
    assert health.stdout.count('"health":true') == 3
