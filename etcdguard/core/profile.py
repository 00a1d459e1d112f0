"""Cluster profiles: everything etcdguard needs to know about one cluster, validated up front.

A profile is a YAML file named `<cluster>.yaml` in the profiles directory (`$ETCDGUARD_PROFILES`,
default `./profiles`). It holds *paths* to secrets (kubeconfig, SSH key, S3 credentials file),
never the secrets themselves, so a profile can be reviewed, committed to an ops repository and
named in a flow parameter without leaking anything.

```yaml
name: prod-eu
api:
  kubeconfig: /etc/etcdguard/prod-eu/kubeconfig
ssh:
  user: core
  identity_file: /etc/etcdguard/prod-eu/id_ed25519
  known_hosts: /etc/etcdguard/prod-eu/known_hosts
storage:
  endpoint_url: null                      # an S3-compatible store; null for AWS
  region: eu-west-1
  credentials_file: null                  # KEY=VALUE lines; null for the default AWS chain
  snapshots: {bucket: acme-etcd-backups, prefix: etcd, kms_key_id: alias/etcd-backups}
  static_resources: {bucket: acme-etcd-keys, prefix: static, kms_key_id: alias/etcd-keys}
  compression: zstd
window: {timezone: Europe/Berlin, days: [mon, tue, wed, thu, fri, sat, sun], start: "01:00", end: "04:00"}
retention: default
cloud: {endpoint_url: null, region: eu-west-1, credentials_file: null}   # graceful-shutdown/-restart
shutdown: {min_cert_margin_days: 30}
external_dependencies: [NetApp ONTAP (trident backend), corporate LDAP]
```
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

import pydantic
import yaml
from pydantic import AfterValidator, Field

from etcdguard.core import errors, keys, types
from etcdguard.core.windows import OffPeakWindow

__all__ = [
    "ApiAccess",
    "BackupSettings",
    "BucketLocation",
    "CloudSettings",
    "ClusterProfile",
    "ControlPlaneHost",
    "ShutdownSettings",
    "SshAccess",
    "StorageSettings",
    "load_profile",
    "profiles_dir",
]

_MiB = 1024 * 1024


def _existing_file(path: Path) -> Path:
    if not path.is_absolute():
        raise ValueError(
            f"{str(path)!r} is a relative path; give an absolute path so runs do not depend on the cwd."
        )
    return path


_AbsPath = Annotated[Path, AfterValidator(_existing_file)]
_ClusterName = Annotated[types.ClusterName, AfterValidator(keys.validate_cluster_name)]


class _Model(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class ApiAccess(_Model):
    """How to reach the cluster's API."""

    kubeconfig: _AbsPath
    """Path of a kubeconfig with cluster-admin rights (the file is the secret, not this path)."""
    context: str | None = None
    """Context in the kubeconfig; its current context when unset."""


class SshAccess(_Model):
    """How to log in to control-plane hosts (as the guide does: `core` with `sudo`)."""

    user: str = "core"
    """Login user; must be allowed to `sudo` without a password."""
    identity_file: _AbsPath
    """Private key file (never copied, never logged)."""
    known_hosts: _AbsPath
    """known_hosts listing every control-plane host's key; unknown or changed keys are refused."""
    port: Annotated[int, Field(ge=1, le=65535)] = 22
    """SSH port of the hosts."""
    connect_timeout: Annotated[float, Field(gt=0, le=300)] = 10.0
    """Seconds to wait for a connection before treating the host as unreachable."""


class BucketLocation(_Model):
    """Where one kind of backup file goes."""

    bucket: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")]
    """S3 bucket name."""
    prefix: Annotated[str, AfterValidator(keys.validate_prefix)] = "etcdguard"
    """Key prefix inside the bucket ('/'-separated segments)."""
    kms_key_id: str | None = None
    """KMS key (id, ARN or alias) for SSE-KMS; None stores with the bucket's default encryption."""


class StorageSettings(_Model):
    """Object storage outside the cluster."""

    endpoint_url: Annotated[str, Field(pattern=r"^https?://[^\s/]+(/.*)?$")] | None = None
    """Endpoint of an S3-compatible store; None for AWS S3."""
    region: str = "us-east-1"
    """Region of the buckets."""
    credentials_file: _AbsPath | None = None
    """File of KEY=VALUE lines (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY[, AWS_SESSION_TOKEN]);
    None uses the default AWS credential chain (instance role, environment, ~/.aws)."""
    snapshots: BucketLocation
    """Where snapshots and manifests go."""
    static_resources: BucketLocation
    """Where the static-pod-resources tarball goes: apart, it holds the encryption keys."""
    compression: Literal["zstd", "none"] = "none"
    """Compress snapshots with zstd while streaming."""
    part_size_mib: Annotated[int, Field(ge=5, le=512)] = 16
    """Multipart part size in MiB (S3 needs at least 5)."""
    parallel_parts: Annotated[int, Field(ge=1, le=16)] = 4
    """Parts uploaded at once; memory use is about (parallel_parts + 1) x part size."""

    @property
    def part_size(self) -> int:
        """`part_size_mib` in bytes."""
        return self.part_size_mib * _MiB

    @pydantic.model_validator(mode="after")
    def _apart(self) -> StorageSettings:
        a, b = self.snapshots, self.static_resources
        nested = (a.prefix + "/").startswith(b.prefix + "/") or (b.prefix + "/").startswith(a.prefix + "/")
        if a.bucket == b.bucket and (nested or not a.prefix or not b.prefix):
            raise ValueError(
                "storage.static_resources must be stored apart from storage.snapshots (they hold the "
                "etcd encryption keys): use another bucket, or in the same bucket two non-empty prefixes neither of which contains the other."
            )
        return self


class BackupSettings(_Model):
    """Knobs of the backup flow."""

    host_dir: Annotated[str, Field(pattern=r"^/[A-Za-z0-9._/-]+$")] = "/home/core/assets/backup"
    """Base directory on the host; each run uses its own subdirectory and removes it afterwards."""
    min_cluster_age_hours: Annotated[float, Field(ge=0)] = 24.0
    """Refuse clusters younger than this (first certificate rotation) unless forced."""
    command_timeout: Annotated[float, Field(gt=0)] = 1800.0
    """Seconds cluster-backup.sh may run."""


class CloudSettings(_Model):
    """The cloud provider's API (EC2), used to stop and start the cluster's machines (guide 2, 3)."""

    endpoint_url: Annotated[str, Field(pattern=r"^https?://[^\s/]+(/.*)?$")] | None = None
    """Endpoint of an EC2-compatible API; None for AWS EC2."""
    region: str = "us-east-1"
    """Region of the cluster's instances."""
    credentials_file: _AbsPath | None = None
    """File of KEY=VALUE lines (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY[, AWS_SESSION_TOKEN]);
    None uses the default AWS credential chain."""


class ShutdownSettings(_Model):
    """Knobs of the graceful-shutdown flow."""

    min_cert_margin_days: Annotated[float, Field(ge=0)] = 30.0
    """Refuse (unless forced) to shut down when kube-apiserver-to-kubelet-signer expires sooner than
    this: the cluster must be restarted before that date, and a signer this close to expiry means
    its automatic rotation (at 80% of its 365 days, i.e. 73 days before) did not happen."""


class ControlPlaneHost(_Model):
    """A control-plane host, known without the API (restore-cluster needs it when quorum is lost)."""

    name: Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")]
    """The node name, e.g. `ip-10-0-131-183.ec2.internal`."""
    address: Annotated[str, Field(min_length=1, max_length=253)]
    """The address SSH connects to (InternalIP)."""


class ClusterProfile(_Model):
    """One cluster, as etcdguard manages it."""

    name: _ClusterName
    """The cluster's name in etcdguard: a DNS-1123 label, also the S3 key segment."""
    api: ApiAccess
    ssh: SshAccess
    storage: StorageSettings
    window: OffPeakWindow | None = None
    """Off-peak window for scheduled backups; None allows any time."""
    retention: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")] = "default"
    """Name of the retention policy (see etcdguard.core.retention)."""
    backup: BackupSettings = BackupSettings()
    control_plane: tuple[ControlPlaneHost, ...] = ()
    """The control-plane hosts, for restore-cluster when the API is down (lost quorum); when the
    API answers, its control-plane Nodes are used instead."""
    cloud: CloudSettings | None = None
    """The cloud API that stops and starts the machines; needed by graceful-shutdown/-restart."""
    shutdown: ShutdownSettings = ShutdownSettings()
    external_dependencies: tuple[str, ...] = ()
    """What the cluster depends on outside itself (external storage, LDAP, ...): graceful-shutdown
    lists them to stop afterwards, graceful-restart to start first (guide 2 step 3, 3 step 1)."""


def profiles_dir() -> Path:
    """`$ETCDGUARD_PROFILES`, or `./profiles`."""
    return Path(os.environ.get("ETCDGUARD_PROFILES") or "profiles").resolve()


def _field_errors(exc: pydantic.ValidationError) -> str:
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "(top level)"
        lines.append(f"  {where}: {error['msg']}")
    return "\n".join(lines)


def load_profile(cluster: str, *, directory: Path | None = None) -> ClusterProfile:
    """Read and validate `<directory>/<cluster>.yaml`; check that the files it names exist.

    Raises `ConfigError` naming the file, each bad field and the fix. No side effects.
    """
    try:
        keys.validate_cluster_name(cluster)
    except ValueError as exc:
        raise errors.ConfigError(f"Parameter cluster: {exc}") from exc
    base = directory or profiles_dir()
    path = base / f"{cluster}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in base.glob("*.yaml")) if base.is_dir() else []
        raise errors.ConfigError(
            f"No profile for cluster {cluster!r}: {path} does not exist. Known profiles in {base}: "
            f"{', '.join(known) or 'none'}. Create the file or set ETCDGUARD_PROFILES."
        )
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise errors.ConfigError(f"Profile {path} is not valid YAML: {exc}") from exc
    try:
        profile = ClusterProfile.model_validate(raw)
    except pydantic.ValidationError as exc:
        raise errors.ConfigError(
            f"Profile {path} is invalid; fix these fields:\n{_field_errors(exc)}"
        ) from exc
    if profile.name != cluster:
        raise errors.ConfigError(
            f"Profile {path} says name: {profile.name!r} but is the file for {cluster!r}; make them equal."
        )
    missing = [
        f"{field} ({value})"
        for field, value in (
            ("api.kubeconfig", profile.api.kubeconfig),
            ("ssh.identity_file", profile.ssh.identity_file),
            ("ssh.known_hosts", profile.ssh.known_hosts),
            ("storage.credentials_file", profile.storage.credentials_file),
            ("cloud.credentials_file", profile.cloud.credentials_file if profile.cloud else None),
        )
        if value is not None and not value.is_file()
    ]
    if missing:
        raise errors.ConfigError(
            f"Profile {path} names files that do not exist: {', '.join(missing)}. Fix the paths or "
            "create the files."
        )
    return profile
