"""Restore drills through Prefect: a good backup passes and the result is recorded in its
manifest; a snapshot altered by one byte in S3 and a backup without a manifest fail loudly,
naming the object and the check."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest
from etcdguard_sim import layout
from etcdguard_sim.runtime import cloud
from etcdguard_sim.seed import profiles

from etcdguard.clients.objectstore import ObjectStore
from etcdguard.core import errors, profile
from flows.backup import etcd_backup
from flows.drill import restore_drill
from tasks import catalogue

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("prefect_server")]


def _entry(profile_dir: Path, backup_id: str) -> catalogue.CatalogueEntry:
    cluster_profile = profile.load_profile("demo", directory=profile_dir)
    with ObjectStore(cluster_profile.storage) as store:
        return catalogue.find_backup(store, cluster_profile.storage, cluster="demo", backup_id=backup_id)


def test_a_good_backup_passes_and_is_recorded(sim: layout.SimSpec, profile_dir: Path) -> None:
    backup = etcd_backup("demo")
    assert backup.backup_id is not None

    outcome = restore_drill("demo", backup=backup.backup_id)

    assert outcome.passed
    assert outcome.key_count > 100
    assert set(outcome.durations) >= {"download_and_verify", "restore", "start", "check"}
    [drill] = _entry(profile_dir, backup.backup_id).manifest.drills
    assert drill.passed
    assert drill.key_count == outcome.key_count


def test_one_altered_byte_fails_the_drill(sim: layout.SimSpec, profile_dir: Path) -> None:
    backup = etcd_backup("demo")
    assert backup.backup_id is not None
    entry = _entry(profile_dir, backup.backup_id)
    key = entry.manifest.snapshot_file.key
    s3 = boto3.client(
        "s3", endpoint_url=sim.moto_endpoint, region_name=cloud.REGION, **cloud.DUMMY_CREDENTIALS
    )
    data = bytearray(s3.get_object(Bucket=profiles.SNAPSHOT_BUCKET, Key=key)["Body"].read())
    data[len(data) // 2] ^= 0x01
    s3.put_object(Bucket=profiles.SNAPSHOT_BUCKET, Key=key, Body=bytes(data))

    with pytest.raises(
        errors.IntegrityError, match=rf"s3://{profiles.SNAPSHOT_BUCKET}/{key} has sha256 .* altered"
    ):
        restore_drill("demo", backup=backup.backup_id)

    [drill] = _entry(profile_dir, backup.backup_id).manifest.drills
    assert not drill.passed
    assert "has sha256" in drill.message


def test_a_backup_without_manifest_fails(sim: layout.SimSpec, profile_dir: Path) -> None:
    backup = etcd_backup("demo")
    assert backup.backup_id is not None
    entry = _entry(profile_dir, backup.backup_id)
    s3 = boto3.client(
        "s3", endpoint_url=sim.moto_endpoint, region_name=cloud.REGION, **cloud.DUMMY_CREDENTIALS
    )
    s3.delete_object(Bucket=profiles.SNAPSHOT_BUCKET, Key=entry.manifest_key)

    with pytest.raises(
        errors.IntegrityError, match=r"has no manifest\.json .* incomplete upload, not a backup"
    ):
        restore_drill("demo", backup=backup.backup_id)
