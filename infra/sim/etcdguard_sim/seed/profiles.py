"""etcdguard cluster profiles for a simulated cluster: what an admin would write for a real one.

The simulator owns its S3 (moto), so it also creates the two buckets the profile names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import yaml

from etcdguard_sim import layout
from etcdguard_sim.runtime import cloud

__all__ = ["SNAPSHOT_BUCKET", "STATIC_BUCKET", "profile_data", "write_profile"]

SNAPSHOT_BUCKET = "etcdguard-backups"
STATIC_BUCKET = "etcdguard-static-resources"


def profile_data(
    spec: layout.SimSpec, *, window: dict[str, Any] | None = None, **overrides: Any
) -> dict[str, Any]:
    """The profile of `spec`'s cluster as a dict (YAML-ready); `overrides` replace top-level keys."""
    data: dict[str, Any] = {
        "name": spec.cluster_name,
        "api": {"kubeconfig": str(spec.kubeconfig)},
        "ssh": {
            "user": "core",
            "identity_file": str(spec.state_dir / "ssh" / "id_ed25519"),
            "known_hosts": str(spec.state_dir / "ssh" / "known_hosts"),
            "connect_timeout": 5,
        },
        "storage": {
            "endpoint_url": spec.moto_endpoint,
            "region": cloud.REGION,
            "credentials_file": str(spec.state_dir / "s3.env"),
            "snapshots": {"bucket": SNAPSHOT_BUCKET, "prefix": "etcd"},
            "static_resources": {"bucket": STATIC_BUCKET, "prefix": "static"},
            "compression": "none",
            "part_size_mib": 8,
            "parallel_parts": 4,
        },
        "window": window,
        "retention": "default",
        "control_plane": [{"name": n.name, "address": n.ip} for n in spec.masters],
        "cloud": {
            "endpoint_url": spec.moto_endpoint,
            "region": cloud.REGION,
            "credentials_file": str(spec.state_dir / "s3.env"),
        },
    }
    data.update(overrides)
    return data


def write_profile(spec: layout.SimSpec, directory: Path, **kwargs: Any) -> Path:
    """Write `<directory>/<cluster>.yaml` and create the buckets it names."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{spec.cluster_name}.yaml"
    path.write_text(yaml.safe_dump(profile_data(spec, **kwargs), sort_keys=False), encoding="utf-8")
    s3 = boto3.client(
        "s3", endpoint_url=spec.moto_endpoint, region_name=cloud.REGION, **cloud.DUMMY_CREDENTIALS
    )
    try:
        for bucket in (SNAPSHOT_BUCKET, STATIC_BUCKET):
            s3.create_bucket(Bucket=bucket)
    finally:
        s3.close()
    return path
