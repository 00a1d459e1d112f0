"""The nightly backup, end to end: the flow runs through Prefect against the simulated cluster
and S3, and the backup is then proven: downloaded, every checksum checked, the snapshot restored
with `etcdctl snapshot restore` into a throwaway etcd that holds the cluster's objects."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import yaml
from etcdguard_sim import layout
from etcdguard_sim.runtime import cloud
from etcdguard_sim.seed import profiles

from etcdguard.clients.objectstore import ObjectStore
from etcdguard.core import errors, profile
from flows.backup import etcd_backup
from tasks import catalogue

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("prefect_server")]


def _s3(sim: layout.SimSpec):  # type: ignore[no-untyped-def]
    return boto3.client(
        "s3", endpoint_url=sim.moto_endpoint, region_name=cloud.REGION, **cloud.DUMMY_CREDENTIALS
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def throwaway_etcd(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A data dir to restore into and the endpoint a throwaway etcd will serve it on."""
    return tmp_path / "restored.etcd", f"http://127.0.0.1:{_free_port()}"


def test_backup_is_stored_verified_and_restorable(
    sim: layout.SimSpec, profile_dir: Path, tmp_path: Path, throwaway_etcd: tuple[Path, str]
) -> None:
    outcome = etcd_backup("demo")

    assert outcome.status == "completed", outcome.message
    assert outcome.ocp_version == sim.ocp_version == "4.8.12"
    assert outcome.source_node in {n.name for n in sim.masters}
    cluster_profile = profile.load_profile("demo", directory=profile_dir)
    with ObjectStore(cluster_profile.storage) as store:
        entries = catalogue.list_backups(store, cluster_profile.storage, cluster="demo", ocp_version="4.8.12")
        assert [e.manifest.backup_id for e in entries][-1] == outcome.backup_id
        entry = entries[-1]
        report = catalogue.verify_backup(store, cluster_profile.storage, entry)
        assert report.ok, report.problems
        assert store.list_uploads(profiles.SNAPSHOT_BUCKET, "etcd/") == []
        snapshot = entry.manifest.snapshot_file
        data = store.get_bytes(profiles.SNAPSHOT_BUCKET, snapshot.key)
        static = entry.manifest.static_resources_file
        assert static is not None
        assert store.get_tags(profiles.STATIC_BUCKET, static.key) == {
            "etcdguard.io/cluster": "demo",
            "etcdguard.io/ocp-version": "4.8.12",
            "etcdguard.io/kind": "static_resources",
        }
    manifest = entry.manifest
    assert hashlib.sha256(data).hexdigest() == snapshot.sha256_stored == snapshot.sha256_original
    assert manifest.sha256_trailer == "present-valid"
    assert hashlib.sha256(data[:-32]).digest() == data[-32:]
    assert manifest.source_node == outcome.source_node
    assert manifest.etcd_version.startswith("3.4.")
    assert manifest.snapshot.total_key > 100
    # The host's backup directory was removed.
    host_dirs = list((sim.state_dir / "hosts").glob("*/home/core/assets/backup/etcdguard-*"))
    assert host_dirs == []

    # Restore the snapshot exactly as the restore pod does, and read the objects back.
    db = tmp_path / "snapshot.db"
    db.write_bytes(data)
    data_dir, endpoint = throwaway_etcd
    restore = subprocess.run(
        ["etcdctl", "snapshot", "restore", str(db), "--name", "drill", "--data-dir", str(data_dir),
         "--initial-cluster", "drill=http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380"],
        capture_output=True, text=True, env={**os.environ, "ETCDCTL_API": "3"}, timeout=60, check=False,
    )  # fmt: skip
    assert restore.returncode == 0, restore.stderr
    etcd = subprocess.Popen(
        ["etcd", "--name", "drill", "--data-dir", str(data_dir), "--listen-client-urls", endpoint,
         "--advertise-client-urls", endpoint, "--listen-peer-urls", "http://127.0.0.1:0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        env = {**os.environ, "ETCDCTL_API": "3"}
        deadline = time.monotonic() + 20
        while True:
            listing = subprocess.run(
                ["etcdctl", "--endpoints", endpoint, "get", "--prefix", "--keys-only", "/kubernetes.io/"],
                capture_output=True, text=True, env=env, timeout=30, check=False,
            )  # fmt: skip
            if listing.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert listing.returncode == 0, listing.stderr
        keys = set(listing.stdout.split())
        assert "/kubernetes.io/namespaces/openshift-etcd" in keys
        assert "/kubernetes.io/config.openshift.io/clusterversions/version" in keys
        value = subprocess.run(
            ["etcdctl", "--endpoints", endpoint, "get", "--print-value-only",
             "/kubernetes.io/config.openshift.io/clusterversions/version"],
            capture_output=True, text=True, env=env, timeout=30, check=True,
        ).stdout  # fmt: skip
        assert json.loads(value)["status"]["history"][0]["version"] == "4.8.12"
    finally:
        etcd.terminate()
        etcd.wait(timeout=20)


def test_outside_the_window_the_run_is_skipped(sim: layout.SimSpec, profile_dir: Path) -> None:
    path = profile_dir / "demo.yaml"
    data = yaml.safe_load(path.read_text())
    now = time.gmtime()
    start = f"{(now.tm_hour + 2) % 24:02d}:00"
    end = f"{(now.tm_hour + 4) % 24:02d}:00"
    data["window"] = {"timezone": "UTC", "start": start, "end": end}
    path.write_text(yaml.safe_dump(data))
    before = len(_s3(sim).list_objects_v2(Bucket=profiles.SNAPSHOT_BUCKET).get("Contents", []))

    outcome = etcd_backup("demo")

    assert outcome.status == "skipped"
    assert "outside the off-peak window" in outcome.message
    assert f"{start}-{end} UTC" in outcome.message
    after = len(_s3(sim).list_objects_v2(Bucket=profiles.SNAPSHOT_BUCKET).get("Contents", []))
    assert after == before


def test_bad_profile_names_the_field_before_any_side_effect(sim: layout.SimSpec, profile_dir: Path) -> None:
    path = profile_dir / "demo.yaml"
    data = yaml.safe_load(path.read_text())
    data["storage"]["part_size_mib"] = 1
    path.write_text(yaml.safe_dump(data))
    before = len(_s3(sim).list_objects_v2(Bucket=profiles.SNAPSHOT_BUCKET).get("Contents", []))

    with pytest.raises(
        errors.ConfigError, match=r"storage\.part_size_mib: Input should be greater than or equal to 5"
    ):
        etcd_backup("demo")

    after = len(_s3(sim).list_objects_v2(Bucket=profiles.SNAPSHOT_BUCKET).get("Contents", []))
    assert after == before
    with pytest.raises(errors.ConfigError, match=r"No profile for cluster 'prod'"):
        etcd_backup("prod")
