"""etcd-retention against the S3 server: a catalogue of 40 nightly backups with faked timestamps
(real manifests and objects, a versioned bucket with Object Lock), first in dry run (nothing
deleted, the plan reported), then for real (exactly the planned backups gone, every version;
the locked one kept and reported)."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest
import yaml
from etcdguard_sim import layout
from etcdguard_sim.runtime import cloud
from etcdguard_sim.seed import profiles

from etcdguard.core import keys, manifest, retention
from flows.retention import etcd_retention, load_policy

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("prefect_server")]

SNAP, STATIC = "retention-snapshots", "retention-static"
POLICY = {"keep_last": 3, "keep_daily": 7, "keep_weekly": 0, "keep_monthly": 0, "min_verified": 3,
          "keep_zstreams_within": "P0D", "timezone": "UTC"}  # fmt: skip


def _put_backup(s3: object, taken_at: datetime) -> str:
    body = b"etcd" * 1000
    digest = hashlib.sha256(body).hexdigest()
    snap_key = keys.format_key(
        keys.BackupKey(
            prefix="etcd", cluster="demo", ocp_version="4.8.12", taken_at=taken_at, kind="snapshot"
        )
    )
    static_key = keys.format_key(
        keys.BackupKey(
            prefix="static", cluster="demo", ocp_version="4.8.12", taken_at=taken_at, kind="static_resources"
        )
    )
    files = tuple(
        manifest.ManifestFile(key=k, kind=kind, size=len(body), sha256_stored=digest, sha256_original=digest)  # type: ignore[arg-type]
        for k, kind in ((snap_key, "snapshot"), (static_key, "static_resources"))
    )
    m = manifest.BackupManifest(
        cluster="demo", cluster_id=uuid.uuid4(), ocp_version="4.8.12", etcd_version="3.4.23", created_at=taken_at,
        source_node="ip-10-0-0-1.ec2.internal", encryption=None, files=files,
        snapshot=manifest.SnapshotStatus(hash=1, revision=10, total_key=5, total_size=4096), sha256_trailer="present-valid",
    )  # fmt: skip
    s3.put_object(Bucket=SNAP, Key=snap_key, Body=body)  # type: ignore[attr-defined]
    s3.put_object(Bucket=STATIC, Key=static_key, Body=body)  # type: ignore[attr-defined]
    for _ in range(2):  # two versions of the manifest, as after a drill rewrote it
        s3.put_object(Bucket=SNAP, Key=m.manifest_key, Body=m.to_json_bytes())  # type: ignore[attr-defined]
    return m.backup_id


def _versions(s3: object, bucket: str) -> set[str]:
    reply = s3.list_object_versions(Bucket=bucket)  # type: ignore[attr-defined]
    return {keys.parse_key(v["Key"]).backup_id for v in reply.get("Versions", [])}


def test_dry_run_then_real_run(sim: layout.SimSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = tmp_path / "profiles"
    (directory / "retention").mkdir(parents=True)
    data = profiles.profile_data(sim)
    data["storage"]["snapshots"] = {"bucket": SNAP, "prefix": "etcd"}
    data["storage"]["static_resources"] = {"bucket": STATIC, "prefix": "static"}
    data["retention"] = "nightly"
    (directory / "demo.yaml").write_text(yaml.safe_dump(data))
    (directory / "retention" / "nightly.yaml").write_text(yaml.safe_dump(POLICY))
    monkeypatch.setenv("ETCDGUARD_PROFILES", str(directory))
    s3 = boto3.client(
        "s3", endpoint_url=sim.moto_endpoint, region_name=cloud.REGION, **cloud.DUMMY_CREDENTIALS
    )
    s3.create_bucket(Bucket=SNAP, ObjectLockEnabledForBucket=True)
    s3.create_bucket(Bucket=STATIC)
    s3.put_bucket_versioning(Bucket=STATIC, VersioningConfiguration={"Status": "Enabled"})
    now = datetime.now(UTC).replace(microsecond=0)
    ids = [_put_backup(s3, now - timedelta(days=d, hours=1)) for d in range(40)]
    locked = ids[30]
    locked_key = next(
        v["Key"]
        for v in s3.list_objects_v2(Bucket=SNAP, Prefix=f"etcd/{locked}/")["Contents"]
        if "snapshot_" in v["Key"]
    )
    s3.put_object_retention(
        Bucket=SNAP,
        Key=locked_key,
        Retention={"Mode": "COMPLIANCE", "RetainUntilDate": now + timedelta(days=30)},
    )

    dry = etcd_retention("demo")

    assert dry.dry_run
    assert _versions(s3, SNAP) == set(ids)  # nothing deleted
    assert locked in dry.skipped_locked
    assert len(dry.keep) == 7  # 7 daily buckets cover the 3 newest
    assert set(dry.keep) == set(ids[:7])
    assert set(dry.delete) == set(ids) - set(ids[:7]) - {locked}
    assert load_policy("nightly", directory=directory) == retention.RetentionPolicy.model_validate(POLICY)

    real = etcd_retention("demo", dry_run=False)

    assert set(real.delete) == set(dry.delete)
    assert _versions(s3, SNAP) == set(ids[:7]) | {locked}  # every version of the others is gone
    assert _versions(s3, STATIC) == set(ids[:7]) | {locked}
    assert real.deleted_versions == len(dry.delete) * 4  # snapshot, static, manifest x2
    assert real.delete_requests < len(dry.delete) * 4  # batched, not one request per object

    again = etcd_retention("demo", dry_run=False)
    assert again.delete == []  # applying the plan twice deletes nothing more
