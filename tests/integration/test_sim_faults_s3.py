"""The simulator's S3 endpoint is a fault-injecting proxy in front of moto: it must be faithful
when no fault is set (boto3 works through it as against S3), fail, stall and recover on demand,
and the `etcdguard-sim fault` CLI must drive it (and SSH faults) from a shell."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import botocore.exceptions
import pytest
from etcdguard_sim import layout
from etcdguard_sim.faults import services as faults
from etcdguard_sim.runtime import cloud

pytestmark = pytest.mark.integration

_CLI = str(Path(sys.executable).parent / "etcdguard-sim")
_MiB = 1024 * 1024


def _client(sim: layout.SimSpec, service: str, *, attempts: int = 1) -> Any:
    config = botocore.config.Config(
        retries={"total_max_attempts": attempts, "mode": "standard"}, read_timeout=30
    )
    return boto3.client(
        service,
        endpoint_url=sim.moto_endpoint,
        region_name=cloud.REGION,
        config=config,
        **cloud.DUMMY_CREDENTIALS,
    )


@pytest.fixture
def s3(sim: layout.SimSpec) -> Iterator[Any]:
    """A boto3 S3 client that does not retry (every fault shows), and S3 cleared afterwards."""
    client = _client(sim, "s3")
    try:
        yield client
    finally:
        faults.s3_clear(sim)
        client.close()


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"faults-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=name)
    return name


def _code(exc: botocore.exceptions.ClientError) -> tuple[str, int]:
    return str(exc.response["Error"]["Code"]), int(exc.response["ResponseMetadata"]["HTTPStatusCode"])


def test_boto3_works_through_the_proxy(sim: layout.SimSpec, s3: Any, bucket: str) -> None:
    key = "dir/a b+c=ü~(1).txt"  # characters that SigV4 and the proxy must not re-encode
    s3.put_object(Bucket=bucket, Key=key, Body=b"hello", Tagging="k=v w")
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"hello"
    assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] == 5
    assert s3.get_object_tagging(Bucket=bucket, Key=key)["TagSet"] == [{"Key": "k", "Value": "v w"}]
    ranged = s3.get_object(Bucket=bucket, Key=key, Range="bytes=1-3")
    assert ranged["Body"].read() == b"ell"
    assert ranged["ResponseMetadata"]["HTTPStatusCode"] == 206

    # Multipart: an 8 MiB part (streamed through, not buffered) and a short last one.
    parts = [bytes([i]) * (8 * _MiB) for i in (1,)] + [b"tail" * 1000]
    upload = s3.create_multipart_upload(Bucket=bucket, Key="big.bin")["UploadId"]
    assert [u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket)["Uploads"]] == ["big.bin"]
    sent = []
    for number, body in enumerate(parts, start=1):
        reply = s3.upload_part(Bucket=bucket, Key="big.bin", UploadId=upload, PartNumber=number, Body=body)
        assert reply["ETag"].strip('"') == hashlib.md5(body, usedforsecurity=False).hexdigest()
        sent.append({"PartNumber": number, "ETag": reply["ETag"]})
    s3.complete_multipart_upload(
        Bucket=bucket, Key="big.bin", UploadId=upload, MultipartUpload={"Parts": sent}
    )
    body = s3.get_object(Bucket=bucket, Key="big.bin")["Body"].read()
    assert hashlib.sha256(body).digest() == hashlib.sha256(b"".join(parts)).digest()
    assert "Uploads" not in s3.list_multipart_uploads(Bucket=bucket)

    listing = s3.list_objects_v2(Bucket=bucket, Prefix="dir/", Delimiter="/")
    assert [o["Key"] for o in listing["Contents"]] == [key]
    s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": key}, {"Key": "big.bin"}]})
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    # EC2 shares the endpoint.
    reservations = _client(sim, "ec2").describe_instances()["Reservations"]
    assert len(reservations) >= len(sim.nodes)


def test_fail_answers_s3_errors_then_recovers(sim: layout.SimSpec, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="before", Body=b"x")
    faults.s3_fail(sim, count=2, methods=("PUT",))
    for _ in range(2):
        with pytest.raises(botocore.exceptions.ClientError) as info:
            s3.put_object(Bucket=bucket, Key="k", Body=b"y" * 1000)
        assert _code(info.value) == ("SlowDown", 503)
        assert s3.get_object(Bucket=bucket, Key="before")["Body"].read() == b"x"  # GET is not affected
    s3.put_object(Bucket=bucket, Key="k", Body=b"y")  # the budget is spent
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"y"

    # The raw answer is S3's XML error document.
    faults.s3_fail(sim, seconds=30, status=500, methods=None)
    with pytest.raises(urllib.error.HTTPError) as raw:
        urllib.request.urlopen(f"{sim.moto_endpoint}/{bucket}/before", timeout=10)  # noqa: S310
    assert raw.value.code == 500
    document = raw.value.read().decode()
    assert document.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code>')
    assert f"<Resource>/{bucket}/before</Resource>" in document
    # EC2 calls to the same endpoint keep working while S3 fails.
    assert _client(sim, "ec2").describe_regions()["Regions"]

    faults.s3_fail(sim, seconds=1.0, methods=None)
    with pytest.raises(botocore.exceptions.ClientError) as info:
        s3.list_objects_v2(Bucket=bucket)
    assert _code(info.value) == ("SlowDown", 503)
    time.sleep(1.1)
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 2  # `until` passed

    faults.s3_fail(sim, seconds=300, methods=("PUT", "POST"))
    with pytest.raises(botocore.exceptions.ClientError):
        s3.create_multipart_upload(Bucket=bucket, Key="m")
    faults.s3_clear(sim)
    s3.put_object(Bucket=bucket, Key="after", Body=b"z")
    assert s3.head_object(Bucket=bucket, Key="after")["ContentLength"] == 1


def test_botocore_retries_through_a_short_failure(sim: layout.SimSpec, bucket: str) -> None:
    retrying = _client(sim, "s3", attempts=3)  # as ObjectStore's client does
    faults.s3_fail(sim, count=2, methods=("PUT",))
    try:
        retrying.put_object(Bucket=bucket, Key="retried", Body=b"r")
        assert retrying.get_object(Bucket=bucket, Key="retried")["Body"].read() == b"r"
    finally:
        faults.s3_clear(sim)
        retrying.close()


def test_stall_holds_requests_until_its_end_or_clear(sim: layout.SimSpec, s3: Any, bucket: str) -> None:
    faults.s3_stall(sim, seconds=1.5)
    started = time.monotonic()
    s3.put_object(Bucket=bucket, Key="held", Body=b"h")
    assert 1.3 < time.monotonic() - started < 10
    assert s3.get_object(Bucket=bucket, Key="held")["Body"].read() == b"h"

    faults.s3_stall(sim, seconds=120, methods=("GET",))
    started = time.monotonic()
    s3.put_object(Bucket=bucket, Key="not-held", Body=b"n")  # PUT is not stalled
    assert time.monotonic() - started < 1.0
    done: list[float] = []
    reader = threading.Thread(
        target=lambda: done.append(len(s3.get_object(Bucket=bucket, Key="held")["Body"].read()))
    )
    reader.start()
    time.sleep(0.6)
    assert done == []  # still held
    faults.s3_clear(sim)
    reader.join(timeout=10)
    assert done == [1]
    assert time.monotonic() - started < 5


def _cli(sim: layout.SimSpec, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_CLI, "fault", *args, "--state-dir", str(sim.state_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_drives_s3_faults(sim: layout.SimSpec, s3: Any, bucket: str) -> None:
    result = _cli(sim, "s3-fail", "--count", "1")
    assert result.returncode == 0, result.stderr
    assert "S3 answers 503 to PUT,POST requests 1 times" in result.stdout
    with pytest.raises(botocore.exceptions.ClientError) as info:
        s3.put_object(Bucket=bucket, Key="cli", Body=b"c")
    assert _code(info.value) == ("SlowDown", 503)
    s3.put_object(Bucket=bucket, Key="cli", Body=b"c")

    assert _cli(sim, "s3-fail", "--seconds", "300").returncode == 0
    with pytest.raises(botocore.exceptions.ClientError):
        s3.put_object(Bucket=bucket, Key="cli", Body=b"c")
    assert _cli(sim, "s3-clear").returncode == 0
    s3.put_object(Bucket=bucket, Key="cli", Body=b"c")

    assert _cli(sim, "s3-stall", "--seconds", "1").returncode == 0
    started = time.monotonic()
    s3.head_object(Bucket=bucket, Key="cli")
    assert time.monotonic() - started > 0.5

    bad = _cli(sim, "s3-fail")
    assert bad.returncode == 1
    assert "needs seconds or count" in bad.stderr
    missing = _cli(sim, "ssh-cut")
    assert missing.returncode == 1
    assert "needs --node" in missing.stderr


def _ssh(sim: layout.SimSpec, node: layout.NodeSpec, command: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["ssh", "-F", str(sim.state_dir / "ssh_config"), "-o", "BatchMode=yes", node.name, command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def _established(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "up"


def test_cli_drives_ssh_faults(sim: layout.SimSpec) -> None:
    node = sim.masters[-1]
    sessions: list[subprocess.Popen[str]] = []
    try:
        # ssh-drop: the established session dies, a new one works.
        session = _ssh(sim, node, "echo up; sleep 60")
        sessions.append(session)
        _established(session)
        result = _cli(sim, "ssh-drop", "--node", node.name)
        assert result.returncode == 0, result.stderr
        assert session.wait(timeout=10) == 255
        again = _ssh(sim, node, "echo up")
        sessions.append(again)
        assert again.communicate(timeout=30)[0].strip() == "up"

        # ssh-cut: the established session dies and new connections are refused until restored.
        session = _ssh(sim, node, "echo up; sleep 60")
        sessions.append(session)
        _established(session)
        assert _cli(sim, "ssh-cut", "--node", node.name).returncode == 0
        assert session.wait(timeout=10) == 255
        refused = _ssh(sim, node, "echo up")
        sessions.append(refused)
        out, err = refused.communicate(timeout=30)
        assert refused.returncode == 255
        assert out == ""
        assert "Connection refused" in err
        assert _cli(sim, "ssh-restore", "--node", node.name).returncode == 0
        back = _ssh(sim, node, "echo up")
        sessions.append(back)
        assert back.communicate(timeout=30)[0].strip() == "up"
    finally:
        faults.ssh_restore(sim, node.name)
        for proc in sessions:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=10)


def test_a_part_whose_crc32_does_not_match_is_refused_as_s3_does(s3: Any, bucket: str) -> None:
    body = bytes(range(256)) * (5 * _MiB // 256)
    crc = zlib.crc32(body)
    good = base64.b64encode(crc.to_bytes(4, "big")).decode()
    bad = base64.b64encode((crc ^ 1).to_bytes(4, "big")).decode()
    upload = s3.create_multipart_upload(Bucket=bucket, Key="crc.bin", ChecksumAlgorithm="CRC32")["UploadId"]
    try:
        common = {"Bucket": bucket, "Key": "crc.bin", "UploadId": upload, "PartNumber": 1}
        with pytest.raises(botocore.exceptions.ClientError) as refused:
            s3.upload_part(**common, Body=body, ChecksumAlgorithm="CRC32", ChecksumCRC32=bad)
        assert _code(refused.value) == ("BadDigest", 400)
        assert "did not match the calculated checksum" in str(refused.value)
        reply = s3.upload_part(**common, Body=body, ChecksumAlgorithm="CRC32", ChecksumCRC32=good)
        assert reply["ChecksumCRC32"] == good
        assert s3.list_parts(Bucket=bucket, Key="crc.bin", UploadId=upload)["Parts"][0]["Size"] == len(body)
    finally:
        s3.abort_multipart_upload(Bucket=bucket, Key="crc.bin", UploadId=upload)
