"""`ObjectStore.upload_parts` against the simulator's S3 (moto behind the checking proxy): parts in
flight with CRC32 checksums, the stored object checked, nothing left behind on failure."""

from __future__ import annotations

import base64
import hashlib
import os
import zlib
from collections.abc import Iterator
from pathlib import Path

import botocore.exceptions
import pytest
from etcdguard_sim import layout
from etcdguard_sim.seed import profiles

from etcdguard.clients.objectstore import ObjectStore
from etcdguard.core import errors, profile

pytestmark = pytest.mark.integration

_MiB = 1024 * 1024


@pytest.fixture
def store(sim: layout.SimSpec, tmp_path: Path) -> Iterator[ObjectStore]:
    profiles.write_profile(sim, tmp_path)
    settings = profile.load_profile(sim.cluster_name, directory=tmp_path).storage
    with ObjectStore(settings) as opened:
        yield opened


def test_upload_parts_stores_the_bytes_with_their_crc32(store: ObjectStore) -> None:
    bucket = store.settings.snapshots.bucket
    parts = [os.urandom(5 * _MiB) for _ in range(4)] + [os.urandom(1234)]
    seen: list[int] = []
    result = store.upload_parts(bucket, "it/upload.bin", iter(parts), parallel=3, progress=seen.append)
    assert (result.size, result.parts) == (sum(map(len, parts)), 5)
    assert sorted(seen) == sorted(map(len, parts))
    stored = store.get_bytes(bucket, "it/upload.bin")
    assert hashlib.sha256(stored).digest() == hashlib.sha256(b"".join(parts)).digest()
    # The checksum S3 keeps is the CRC32 of the parts' CRC32s, as AWS computes it.
    crcs = b"".join(zlib.crc32(p).to_bytes(4, "big") for p in parts)
    head = store._s3.head_object(Bucket=bucket, Key="it/upload.bin", ChecksumMode="ENABLED")
    assert (
        head["ChecksumCRC32"].split("-")[0] == base64.b64encode(zlib.crc32(crcs).to_bytes(4, "big")).decode()
    )
    assert store._s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_a_part_too_small_aborts_the_upload_and_leaves_nothing(store: ObjectStore) -> None:
    bucket = store.settings.snapshots.bucket
    parts = [os.urandom(1 * _MiB), os.urandom(1 * _MiB)]  # S3 wants every part but the last >= 5 MiB
    with pytest.raises(errors.EtcdguardError, match=r"it/small\.bin"):
        store.upload_parts(bucket, "it/small.bin", iter(parts), parallel=2)
    assert store._s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert "Contents" not in store._s3.list_objects_v2(Bucket=bucket, Prefix="it/small.bin")


def test_a_read_that_fails_its_checksum_is_an_integrity_error(store: ObjectStore) -> None:
    # What botocore raises when the bytes of a GET do not match the checksum the store reports.
    mismatch = botocore.exceptions.FlexibleChecksumError(
        error_msg="Expected checksum U3gFjQ== did not match calculated checksum: yXOhQg=="
    )
    with (
        pytest.raises(errors.IntegrityError, match=r"do not match the checksum S3 keeps") as caught,
        store._translate("Reading s3://b/k"),
    ):
        raise mismatch
    assert "Reading s3://b/k" in str(caught.value)
    assert not isinstance(caught.value, errors.TransientError)
