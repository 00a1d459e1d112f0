"""Tasks of the etcd-backup flow: each does one thing against one system, and retries only
transient failures (`tasks._retry`)."""

from __future__ import annotations

import dataclasses
import json
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, cast
from uuid import UUID

from prefect import get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact

from etcdguard.clients.hosts import HostSession
from etcdguard.clients.kube import KubeClient
from etcdguard.clients.objectstore import ObjectStore
from etcdguard.core import errors, keys, manifest, preflight, types
from etcdguard.core.profile import BucketLocation, ClusterProfile
from tasks import _policy as policy
from tasks import transfer

__all__ = [
    "HostBackup",
    "UploadedFile",
    "check_backup_preflight",
    "etcd_server_version",
    "remove_host_dir",
    "run_cluster_backup",
    "upload_backup_file",
    "write_manifest",
]

_FILE = re.compile(
    r"^(?P<kind>snapshot|static_kuberesources)_(?P<date>\d{4}-\d{2}-\d{2}_\d{6})(?:__POSSIBLY_DIRTY__)?"
    r"\.(?:db|tar\.gz)$"
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class HostBackup:
    """What cluster-backup.sh left on the host."""

    node: str
    address: str
    directory: str
    snapshot_path: str
    static_path: str
    taken_at: datetime
    status: manifest.SnapshotStatus
    duration: float


@dataclasses.dataclass(frozen=True, kw_only=True)
class UploadedFile:
    entry: manifest.ManifestFile
    bucket: str
    trailer: manifest.TrailerState | None
    duration: float
    parts: int


@policy.task("preflight", timeout_s=300)
def check_backup_preflight(
    profile: ClusterProfile, *, force: bool, now: datetime
) -> preflight.BackupPreflight:
    """Read-only: the cluster's objects -> refuse, or the z-stream, proxy, encryption, candidates."""
    with KubeClient(profile.api) as kube:
        result = preflight.assess_backup(
            clusterversion=kube.get("ClusterVersion", "version"),
            nodes=kube.list_objects("Node"),
            etcd=kube.get("Etcd", "cluster"),
            etcd_pods=kube.list_objects("Pod", namespace="openshift-etcd", labels="app=etcd"),
            cluster_operators=kube.list_objects("ClusterOperator"),
            proxy=_optional(kube, "Proxy"),
            apiserver=_optional(kube, "APIServer"),
            now=now,
            min_age=timedelta(hours=profile.backup.min_cluster_age_hours),
            force=force,
        )
    logger = get_run_logger()
    logger.info(
        "Cluster %s runs %s; %d healthy control-plane node(s): %s.",
        profile.name,
        result.ocp_version,
        len(result.candidates),
        ", ".join(c.name for c in result.candidates),
    )
    for note in result.notes:
        logger.warning("%s", note)
    return result


def _optional(kube: KubeClient, kind: str) -> dict[str, Any] | None:
    try:
        return kube.get(kind, "cluster")
    except errors.NotFoundError:
        return None


@policy.task("etcd-server-version", timeout_s=300)
def etcd_server_version(profile: ClusterProfile, *, node: preflight.NodeCandidate) -> str:
    """The etcd server version of `node`'s member (`etcdctl endpoint status` in its etcd pod)."""
    with KubeClient(profile.api) as kube:
        code, out, err = kube.exec(
            "openshift-etcd",
            f"etcd-{node.name}",
            "etcdctl",
            # Only this node's member: with another member down, asking all of them fails.
            # (etcdctl 3.4 refuses --endpoints next to the container's ETCDCTL_ENDPOINTS: use env.)
            [
                "env",
                f"ETCDCTL_ENDPOINTS=https://{node.address}:2379",
                "etcdctl",
                "endpoint",
                "status",
                "-w",
                "json",
            ],
        )
    if code != 0:
        raise errors.RemoteCommandFailed(
            f"etcdctl endpoint status failed in etcd-{node.name}.", exit_code=code, output=err
        )
    try:
        statuses = json.loads(out)
        mine = [s for s in statuses if f"//{node.address}:" in str(s.get("Endpoint"))] or statuses
        return str(mine[0]["Status"]["version"])
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise errors.IntegrityError(
            "etcdctl endpoint status printed something unexpected: "
            f"{errors.truncate_remote(out, limit=300)!r}"
        ) from exc


@policy.task("cluster-backup.sh", timeout_s=3600)
def run_cluster_backup(
    profile: ClusterProfile,
    *,
    node: preflight.NodeCandidate,
    directory: str,
    proxy_env: dict[str, str],
    force: bool,
) -> HostBackup:
    """`sudo -E /usr/local/bin/cluster-backup.sh [--force] DIR` on `node` (guide 4.1), proxy
    variables exported. The run's own directory is emptied first, so a retry starts clean."""
    logger = get_run_logger()
    started = time.monotonic()
    with HostSession(profile.ssh, address=node.address, node=node.name) as host:
        host.run(["rm", "-rf", "--", directory], sudo=True)
        argv = ["/usr/local/bin/cluster-backup.sh", *(["--force"] if force else []), directory]
        result = host.run(argv, sudo=True, env=proxy_env, timeout=profile.backup.command_timeout)
        listing = host.run(["find", directory, "-maxdepth", "1", "-type", "f", "-printf", "%f\\n"], sudo=True)
    status = manifest.parse_snapshot_status(result.stdout)
    found: dict[str, tuple[str, str]] = {}
    for name in listing.stdout.split():
        match = _FILE.match(name)
        if match:
            found[match["kind"]] = (f"{directory}/{name}", match["date"])
    if set(found) != {"snapshot", "static_kuberesources"}:
        raise errors.RemoteCommandFailed(
            f"cluster-backup.sh reported success on {node.name} but {directory} holds "
            f"{listing.stdout.split()}, "
            "not one snapshot and one static_kuberesources tarball.",
            exit_code=0,
            output=result.stdout[-2000:],
        )
    taken_at = datetime.strptime(found["snapshot"][1], "%Y-%m-%d_%H%M%S").replace(tzinfo=UTC)
    duration = time.monotonic() - started
    logger.info(
        "cluster-backup.sh on %s took %.1f s: revision %d, %d keys, %d bytes.",
        node.name,
        duration,
        status.revision,
        status.total_key,
        status.total_size,
    )
    return HostBackup(
        node=node.name,
        address=node.address,
        directory=directory,
        snapshot_path=found["snapshot"][0],
        static_path=found["static_kuberesources"][0],
        taken_at=taken_at,
        status=status,
        duration=duration,
    )


def backup_key(
    location: BucketLocation,
    *,
    cluster: types.ClusterName,
    version: types.OcpVersion,
    taken_at: datetime,
    kind: keys.KeyKind,
    compressed: bool = False,
) -> str:
    return keys.format_key(
        keys.BackupKey(
            prefix=location.prefix,
            cluster=cluster,
            ocp_version=version,
            taken_at=taken_at,
            kind=kind,
            compressed=compressed,
        )
    )


def tags(profile: ClusterProfile, version: str, kind: str) -> dict[str, str]:
    return {
        "etcdguard.io/cluster": profile.name,
        "etcdguard.io/ocp-version": version,
        "etcdguard.io/kind": kind,
    }


@policy.task("upload", timeout_s=10800)
def upload_backup_file(
    profile: ClusterProfile,
    *,
    host_backup: HostBackup,
    kind: Literal["snapshot", "static_resources"],
    version: types.OcpVersion,
) -> UploadedFile:
    """Stream one file from the host to S3: multipart, parts in parallel, checksums on the way.
    A failed attempt aborts its multipart upload; a retry streams the file again."""
    logger = get_run_logger()
    snapshot = kind == "snapshot"
    location = profile.storage.snapshots if snapshot else profile.storage.static_resources
    compress = snapshot and profile.storage.compression == "zstd"
    key = backup_key(
        location,
        cluster=profile.name,
        version=version,
        taken_at=host_backup.taken_at,
        kind=kind,
        compressed=compress,
    )
    path = host_backup.snapshot_path if snapshot else host_backup.static_path
    expected = host_backup.status.total_size if snapshot else 0
    progress_id = cast(
        UUID, create_progress_artifact(0.0, description=f"Uploading {kind} to s3://{location.bucket}/{key}")
    )
    read = 0
    last_report = time.monotonic()

    def report_progress(nbytes: int) -> None:  # main thread only: Prefect's client is not thread-safe
        nonlocal read, last_report
        read += nbytes
        if expected and time.monotonic() - last_report > 1.0:
            last_report = time.monotonic()
            update_progress_artifact(progress_id, min(99.0, 100.0 * read / expected))

    started = time.monotonic()
    with (
        HostSession(profile.ssh, address=host_backup.address, node=host_backup.node) as host,
        ObjectStore(profile.storage) as store,
    ):
        upload = transfer.stream_to_store(
            host,
            store,
            path=path,
            bucket=location.bucket,
            key=key,
            storage=profile.storage,
            compress=compress,
            check_trailer=snapshot,
            kms_key_id=location.kms_key_id,
            tags=tags(profile, version, kind),
            progress=report_progress,
        )
    result = upload.result
    update_progress_artifact(progress_id, 100.0)
    if snapshot and result.trailer == "invalid":
        raise errors.IntegrityError(
            f"The snapshot {path} on {host_backup.node} has a wrong sha256 trailer: it is damaged, and "
            "etcdctl snapshot restore would refuse it. The next run takes a new one."
        )
    duration = time.monotonic() - started
    logger.info(
        "Uploaded %s to s3://%s/%s: %d bytes (%d original) in %d parts, %.1f s, sha256 %s.",
        kind,
        location.bucket,
        key,
        result.size_stored,
        result.size_original,
        upload.parts,
        duration,
        result.sha256_stored,
    )
    entry = manifest.ManifestFile(
        key=key,
        kind=kind,
        size=result.size_stored,
        sha256_stored=result.sha256_stored,
        sha256_original=result.sha256_original,
        compressed="zstd" if compress else None,
    )
    return UploadedFile(
        entry=entry, bucket=location.bucket, trailer=result.trailer, duration=duration, parts=upload.parts
    )


@policy.task("write-manifest", timeout_s=300)
def write_manifest(profile: ClusterProfile, *, backup: manifest.BackupManifest) -> str:
    """Write `manifest.json` LAST: an upload without a manifest is not a backup."""
    with ObjectStore(profile.storage) as store:
        store.put_bytes(
            profile.storage.snapshots.bucket,
            backup.manifest_key,
            backup.to_json_bytes(),
            kms_key_id=profile.storage.snapshots.kms_key_id,
            tags=tags(profile, backup.ocp_version, "manifest"),
            content_type="application/json",
        )
    return backup.manifest_key


@policy.task("remove-host-dir", timeout_s=300)
def remove_host_dir(profile: ClusterProfile, *, node: preflight.NodeCandidate, directory: str) -> None:
    """Remove the run's backup directory from the host (the files are in S3 now, or useless)."""
    with HostSession(profile.ssh, address=node.address, node=node.name) as host:
        host.run(["rm", "-rf", "--", directory], sudo=True)
