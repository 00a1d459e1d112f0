"""`clients.cloud.Cloud` against a real EC2 endpoint (moto's server on loopback): describe, stop,
start by id; an unknown id is NotFoundError, a terminated instance shows as such,
an unreachable endpoint is TransientError; the credentials file is read as the profile says."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from etcdguard.clients.cloud import Cloud
from etcdguard.core import errors
from etcdguard.core.profile import CloudSettings

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def settings(endpoint: str, tmp_path: Path) -> CloudSettings:
    creds = tmp_path / "ec2.env"
    creds.write_text("AWS_ACCESS_KEY_ID=testing\nAWS_SECRET_ACCESS_KEY='testing'\n")
    return CloudSettings(endpoint_url=endpoint, region="us-east-1", credentials_file=creds)


def _instances(endpoint: str, count: int) -> list[str]:
    ec2: Any = boto3.client(
        "ec2",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    reply = ec2.run_instances(
        ImageId="ami-0d5f9982f029fbc14",
        MinCount=count,
        MaxCount=count,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "c-master"}]}],
    )
    return [str(i["InstanceId"]) for i in reply["Instances"]]


def _states(cloud: Cloud, ids: list[str]) -> dict[str, str]:
    return {i.instance_id: i.state for i in cloud.describe(ids)}


def _until(cloud: Cloud, ids: list[str], state: str) -> dict[str, str]:
    deadline = time.monotonic() + 10
    while set((states := _states(cloud, ids)).values()) != {state} and time.monotonic() < deadline:
        time.sleep(0.2)
    return states


def test_stop_start_and_describe(settings: CloudSettings, endpoint: str) -> None:
    ids = _instances(endpoint, 2)
    with Cloud(settings) as cloud:
        described = cloud.describe(ids)
        assert {i.instance_id for i in described} == set(ids)
        assert {i.name for i in described} == {"c-master"}
        assert all(i.private_ip for i in described)
        cloud.stop(ids)
        assert set(_until(cloud, ids, "stopped").values()) == {"stopped"}
        cloud.start(ids)
        assert set(_until(cloud, ids, "running").values()) == {"running"}
        assert cloud.describe([]) == []


def test_unknown_and_terminated_instances(settings: CloudSettings, endpoint: str) -> None:
    [instance] = _instances(endpoint, 1)
    with Cloud(settings) as cloud:
        with pytest.raises(errors.NotFoundError, match="EC2 does not know the instance"):
            cloud.describe(["i-0123456789abcdef0"])
        boto3.client(
            "ec2",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        ).terminate_instances(InstanceIds=[instance])
        assert _until(cloud, [instance], "terminated") == {instance: "terminated"}


def test_unreachable_endpoint_is_transient(tmp_path: Path) -> None:
    settings = CloudSettings(endpoint_url=f"http://127.0.0.1:{_free_port()}", region="us-east-1")
    with Cloud(settings) as cloud, pytest.raises(errors.TransientError, match="could not be reached"):
        cloud.describe(["i-0123456789abcdef0"])


def test_credentials_file_without_keys_is_a_config_error(tmp_path: Path) -> None:
    creds = tmp_path / "ec2.env"
    creds.write_text("AWS_DEFAULT_REGION=us-east-1\n")
    with pytest.raises(errors.ConfigError, match="lacks AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY"):
        Cloud(CloudSettings(region="us-east-1", credentials_file=creds))
