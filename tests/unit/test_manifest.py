"""The backup manifest: validation, stable JSON round trip, and `snapshot status` parsing."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from etcdguard.core import errors, manifest, types

pytestmark = pytest.mark.unit

BASE = "etcd/prod-east/4.8.12/2021-06-25T190035Z"
SNAPSHOT_KEY = f"{BASE}/snapshot_2021-06-25_190035.db.zst"
STATIC_KEY = "keys/prod-east/4.8.12/2021-06-25T190035Z/static_kuberesources_2021-06-25_190035.tar.gz"
SHA_A = hashlib.sha256(b"stored").hexdigest()
SHA_B = hashlib.sha256(b"original").hexdigest()


def fields(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "cluster": "prod-east",
        "cluster_id": "2f1d3a64-5d0a-4b64-9f51-bd0f5a0f7d3c",
        "ocp_version": "4.8.12",
        "etcd_version": "3.4.14",
        "created_at": datetime(2021, 6, 25, 19, 2, 10, 123456, tzinfo=UTC),
        "source_node": "ip-10-0-131-183.ec2.internal",
        "flow_run_id": "6f0c4e0e-8f0b-4c59-8b8e-7d1a2b3c4d5e",
        "encryption": "aescbc",
        "files": [
            {
                "key": SNAPSHOT_KEY,
                "kind": "snapshot",
                "size": 31_000_000,
                "sha256_stored": SHA_A,
                "sha256_original": SHA_B,
                "compressed": "zstd",
            },
            {
                "key": STATIC_KEY,
                "kind": "static_resources",
                "size": 78_000,
                "sha256_stored": SHA_B,
                "sha256_original": SHA_B,
            },
        ],
        "snapshot": {"hash": 3866667823, "revision": 31407, "total_key": 12828, "total_size": 114446336},
        "sha256_trailer": "present-valid",
    }
    data.update(changes)
    return data


def build(**changes: Any) -> manifest.BackupManifest:
    return manifest.BackupManifest.model_validate(fields(**changes))


def test_example_manifest_and_its_properties() -> None:
    m = build()
    assert m.schema_version == 1
    assert m.cluster_id == uuid.UUID("2f1d3a64-5d0a-4b64-9f51-bd0f5a0f7d3c")
    assert m.encryption_enabled
    assert m.snapshot_file.key == SNAPSHOT_KEY
    assert m.static_resources_file is not None
    assert m.static_resources_file.key == STATIC_KEY
    assert m.taken_at == datetime(2021, 6, 25, 19, 0, 35, tzinfo=UTC)
    assert m.backup_id == "prod-east/4.8.12/2021-06-25T190035Z"
    assert m.manifest_key == f"{BASE}/manifest.json"
    assert m.stored_size == 31_078_000
    assert m.drills == ()


@pytest.mark.parametrize(
    ("encryption", "enabled"), [(None, False), ("identity", False), ("aescbc", True), ("aesgcm", True)]
)
def test_encryption_enabled(encryption: str | None, enabled: bool) -> None:
    assert build(encryption=encryption).encryption_enabled is enabled


def test_created_at_is_normalised_to_utc_and_must_be_aware() -> None:
    local = datetime(2021, 6, 25, 21, 2, 10, tzinfo=timezone(timedelta(hours=2)))
    m = build(created_at=local)
    assert m.created_at == local
    assert m.created_at.utcoffset() == timedelta(0)
    assert b'"created_at": "2021-06-25T19:02:10Z"' in m.to_json_bytes()
    with pytest.raises(pydantic.ValidationError, match="timezone"):
        build(created_at=datetime(2021, 6, 25, 19, 2, 10))


def test_json_is_stable_sorted_and_round_trips() -> None:
    m = build()
    data = m.to_json_bytes()
    assert data == build().to_json_bytes()
    assert data.endswith(b"}\n")
    top_level = list(json.loads(data))
    assert top_level == sorted(top_level)
    assert manifest.BackupManifest.from_json_bytes(data) == m
    assert manifest.BackupManifest.from_json_bytes(data.decode()) == m


def test_with_drill_appends_and_leaves_the_original_alone() -> None:
    m = build()
    drill = manifest.DrillResult(
        ran_at=datetime(2021, 6, 26, 6, 0, tzinfo=UTC),
        passed=True,
        key_count=12828,
        durations={"download": 3.5, "restore": 1.25},
        message="Restored into a scratch etcd; 12828 keys, all critical keys present.",
    )
    drilled = m.with_drill(drill).with_drill(drill)
    assert drilled.drills == (drill, drill)
    assert m.drills == ()
    assert manifest.BackupManifest.from_json_bytes(drilled.to_json_bytes()) == drilled


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"extra": 1}, "Extra inputs are not permitted"),
        ({"schema_version": 2}, "Input should be 1"),
        ({"cluster": "Prod"}, "DNS-1123"),
        ({"ocp_version": "4.8"}, "not an OpenShift release version"),
        ({"source_node": "node_1"}, "DNS-1123 subdomain"),
        ({"encryption": "aesctr"}, "identity"),
        ({"etcd_version": "v3.4"}, "should match pattern"),
        ({"sha256_trailer": "present"}, "present-valid"),
        ({"files": []}, "at least 1 item"),
        ({"cluster": "prod-west"}, "belongs to backup prod-east/4.8.12/2021-06-25T190035Z"),
        ({"ocp_version": "4.8.13"}, "not to this manifest's backup"),
        ({"snapshot": {"hash": 2**32, "revision": 1, "total_key": 1, "total_size": 1}}, "less than or equal"),
    ],
)
def test_invalid_manifests_are_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        build(**changes)


def file_entry(**changes: Any) -> dict[str, Any]:
    return {**fields()["files"][0], **changes}


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (
            [
                file_entry(),
                file_entry(key=f"{BASE}/snapshot_2021-06-25_190035.db", compressed=None, sha256_stored=SHA_B),
            ],
            "exactly one snapshot",
        ),
        ([file_entry(), fields()["files"][1], fields()["files"][1]], "lists 1 and 2"),
        ([file_entry(kind="static_resources")], "is a snapshot key but is listed as static_resources"),
        ([file_entry(compressed=None)], "ends in '.zst'"),
        ([file_entry(key=f"{BASE}/snapshot_2021-06-25_190035.db")], "does not end in '.zst'"),
        (
            [file_entry(key=f"{BASE}/snapshot_2021-06-25_190035.db", compressed=None)],
            "stored and original sha256 must be equal",
        ),
        ([file_entry(sha256_stored="ABC")], "should match pattern"),
        ([file_entry(key=f"{BASE}/manifest.json")], "is a manifest key"),
        (
            [file_entry(key="etcd/prod-east/4.8.12/2021-06-25T190036Z/snapshot_2021-06-25_190036.db.zst")],
            None,
        ),
    ],
)
def test_inconsistent_files_are_refused(files: list[dict[str, Any]], message: str | None) -> None:
    if message is None:  # a lone snapshot defines the backup's time, so any consistent time is fine
        assert build(files=files).taken_at == datetime(2021, 6, 25, 19, 0, 36, tzinfo=UTC)
        return
    with pytest.raises(pydantic.ValidationError, match=message):
        build(files=files)


def test_files_of_two_different_backups_are_refused() -> None:
    other_static = "keys/prod-east/4.8.12/2021-06-26T190035Z/static_kuberesources_2021-06-26_190035.tar.gz"
    files = [file_entry(), {**fields()["files"][1], "key": other_static}]
    with pytest.raises(
        pydantic.ValidationError, match=r"belongs to backup prod-east/4\.8\.12/2021-06-26T190035Z"
    ):
        build(files=files)


def test_models_are_frozen() -> None:
    m = build()
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        m.cluster = "other"  # type: ignore[assignment]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x89PNG not json", "not valid JSON"),
        (b"[1, 2]", "JSON of type list"),
        (b'{"schema_version": 2, "anything": true}', "schema_version 2, written by a newer etcdguard"),
        (b'{"schema_version": 1}', "does not validate"),
    ],
)
def test_unreadable_manifests_raise_integrity_errors(data: bytes, message: str) -> None:
    with pytest.raises(errors.IntegrityError, match=message):
        manifest.BackupManifest.from_json_bytes(data)


def test_tampered_manifest_raises_integrity_error() -> None:
    tampered = build().to_json_bytes().replace(b'"kind": "static_resources"', b'"kind": "snapshot"')
    with pytest.raises(errors.IntegrityError, match="does not validate"):
        manifest.BackupManifest.from_json_bytes(tampered)


SHA = st.binary(min_size=1, max_size=8).map(lambda data: hashlib.sha256(data).hexdigest())
AWARE = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=-7)), timezone(timedelta(hours=5, minutes=30))]),
)


@st.composite
def manifests(draw: st.DrawFn) -> manifest.BackupManifest:
    compressed = draw(st.booleans())
    original = draw(SHA)
    snapshot_key = f"{BASE}/snapshot_2021-06-25_190035.db" + (".zst" if compressed else "")
    files: list[dict[str, Any]] = [
        {
            "key": snapshot_key,
            "kind": "snapshot",
            "size": draw(st.integers(0, 2**40)),
            "sha256_stored": draw(SHA) if compressed else original,
            "sha256_original": original,
            "compressed": "zstd" if compressed else None,
        }
    ]
    if draw(st.booleans()):
        static_sha = draw(SHA)
        files.append(
            {
                "key": STATIC_KEY,
                "kind": "static_resources",
                "size": draw(st.integers(0, 2**30)),
                "sha256_stored": static_sha,
                "sha256_original": static_sha,
            }
        )
    drills = draw(
        st.lists(
            st.builds(
                manifest.DrillResult,
                ran_at=AWARE,
                passed=st.booleans(),
                key_count=st.integers(0, 10**7),
                durations=st.dictionaries(
                    st.text(min_size=1, max_size=10), st.floats(0, 1e6, allow_nan=False), max_size=4
                ),
                message=st.text(max_size=80),
            ),
            max_size=3,
        )
    )
    return build(
        cluster_id=draw(st.uuids()),
        created_at=draw(AWARE),
        flow_run_id=draw(st.none() | st.text(min_size=1, max_size=36)),
        encryption=draw(st.sampled_from([None, "identity", "aescbc", "aesgcm"])),
        files=files,
        snapshot={
            "hash": draw(st.integers(0, 2**32 - 1)),
            "revision": draw(st.integers(0, 2**63 - 1)),
            "total_key": draw(st.integers(0, 10**9)),
            "total_size": draw(st.integers(0, 2**40)),
        },
        sha256_trailer=draw(st.sampled_from(["present-valid", "absent", "invalid"])),
        drills=drills,
    )


@given(m=manifests())
def test_json_round_trip(m: manifest.BackupManifest) -> None:
    data = m.to_json_bytes()
    again = manifest.BackupManifest.from_json_bytes(data)
    assert again == m
    assert again.to_json_bytes() == data


def test_parse_snapshot_status_example() -> None:
    status = manifest.parse_snapshot_status(
        '{"hash":3866667823,"revision":31407,"totalKey":12828,"totalSize":114446336}\n'
    )
    assert status == manifest.SnapshotStatus(
        hash=3866667823, revision=types.Revision(31407), total_key=12828, total_size=114446336
    )


def test_parse_snapshot_status_ignores_log_lines_and_new_fields() -> None:
    output = (
        b'{"level":"info","msg":"opened snapshot"}\n'
        b"Deprecated: Use `etcdutl snapshot status` instead.\n"
        b'{"hash":1,"revision":2,"totalKey":3,"totalSize":4,"version":"3.5.0"}\n'
    )
    assert manifest.parse_snapshot_status(output) == manifest.SnapshotStatus(
        hash=1, revision=types.Revision(2), total_key=3, total_size=4
    )


@pytest.mark.parametrize(
    ("output", "problem"),
    [
        ("", "no line is a JSON object"),
        ("Error: snapshot file has wrong size", "no line is a JSON object"),
        ('{"hash":1,"revision":2,"totalKey":3', "no line is a JSON object"),
        ('{"hash":1, revision:2}', "does not parse"),
        ('{"hash":1,"revision":2}', "totalKey, totalSize are missing"),
        ('{"hash":"1","revision":2,"totalKey":3,"totalSize":4}', "hash is '1', not an integer"),
        ('{"hash":1,"revision":true,"totalKey":3,"totalSize":4}', "revision is True, not an integer"),
        ('{"hash":4294967296,"revision":2,"totalKey":3,"totalSize":4}', "out of range"),
        ('{"hash":1,"revision":2,"totalKey":-3,"totalSize":4}', "out of range"),
    ],
)
def test_parse_snapshot_status_refuses_malformed_output(output: str, problem: str) -> None:
    with pytest.raises(
        errors.IntegrityError, match="etcdctl snapshot status output cannot be read"
    ) as caught:
        manifest.parse_snapshot_status(output)
    assert problem in str(caught.value)
