"""The simulated cluster's cloud: EC2 instances in moto's server, one per node, so that every
Machine's providerID names a real instance that the EC2 API can stop and start.

Credentials are moto's dummies, written to `DIR/s3.env` with the endpoint; they are not secrets.
moto keeps its state in memory: after `etcdguard-sim down` and `up` the instances are created
again (with new ids) and the Machines' providerIDs follow.
"""

from __future__ import annotations

from typing import Any

import boto3

from etcdguard_sim import layout

__all__ = ["DUMMY_CREDENTIALS", "REGION", "create_instances", "ec2_client", "write_env"]

REGION = "us-east-1"
DUMMY_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def ec2_client(spec: layout.SimSpec) -> Any:
    return boto3.client("ec2", endpoint_url=spec.moto_endpoint, region_name=REGION, **DUMMY_CREDENTIALS)


def create_instances(spec: layout.SimSpec) -> dict[str, str]:
    """One running instance per node, tagged like the installer's; returns node -> instance id."""
    ec2 = ec2_client(spec)
    out: dict[str, str] = {}
    for node in spec.nodes:
        resp = ec2.run_instances(
            ImageId="ami-0d5f9982f029fbc14",
            MinCount=1,
            MaxCount=1,
            InstanceType="m5.xlarge" if node.role == "master" else "m5.large",
            Placement={"AvailabilityZone": node.zone},
            PrivateIpAddress=node.ip,
            TagSpecifications=[
                {
                    "ResourceType": "instance",
                    "Tags": [
                        {"Key": "Name", "Value": node.machine_name},
                        {"Key": f"kubernetes.io/cluster/{spec.infra_id}", "Value": "owned"},
                        {"Key": "etcdguard.io/node", "Value": node.name},
                    ],
                }
            ],
        )
        out[node.name] = resp["Instances"][0]["InstanceId"]
    return out


def write_env(spec: layout.SimSpec) -> None:
    """`DIR/s3.env`: the endpoint and dummy credentials, in `export`-able form."""
    lines = [
        f"AWS_ENDPOINT_URL={spec.moto_endpoint}",
        f"AWS_ACCESS_KEY_ID={DUMMY_CREDENTIALS['aws_access_key_id']}",
        f"AWS_SECRET_ACCESS_KEY={DUMMY_CREDENTIALS['aws_secret_access_key']}",
        f"AWS_DEFAULT_REGION={REGION}",
    ]
    (spec.state_dir / "s3.env").write_text("\n".join(lines) + "\n")


def wait_ready(spec: layout.SimSpec, *, timeout: float = 30.0) -> None:
    """Block until moto's server answers EC2 calls."""
    import time

    import botocore.exceptions

    deadline = time.monotonic() + timeout
    ec2 = ec2_client(spec)
    while True:
        try:
            ec2.describe_regions()
            return
        except (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectionClosedError):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"moto's server at {spec.moto_endpoint} did not answer within {timeout:.0f} s"
                ) from None
            time.sleep(0.2)
