"""`manifest.json`: what a backup holds and how it was verified; written last, so its presence
means the backup is complete.

The manifest records, for one backup: the cluster (name, clusterID) and its z-stream (first
`Completed` ClusterVersion history entry), the etcd version, when and where it was taken, the
Prefect flow run, whether etcd encryption was on, every stored file (key, size, sha256 of the
stored bytes and of the original), the snapshot's `etcdctl snapshot status` figures and the state
of its sha256 trailer, and later the restore drills run against it.

`to_json_bytes` is stable (sorted keys, UTC `Z` times) so equal manifests are equal bytes;
`from_json_bytes` turns anything unreadable into an `IntegrityError`.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import pydantic
from pydantic import AfterValidator, AwareDatetime, Field, NonNegativeFloat, NonNegativeInt

from etcdguard.core import errors, keys, types, versions

__all__ = [
    "BackupManifest",
    "DrillResult",
    "Encryption",
    "ManifestFile",
    "SnapshotStatus",
    "TrailerState",
    "parse_snapshot_status",
]

Encryption = Literal["identity", "aescbc", "aesgcm"]
TrailerState = Literal["present-valid", "absent", "invalid"]

_MAX_CRC32 = 2**32 - 1
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9](?:[-a-z0-9.]{0,251}[a-z0-9])?")
_STATUS_FIELDS = {"hash": "hash", "revision": "revision", "totalKey": "total_key", "totalSize": "total_size"}


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


def _node_name(name: str) -> str:
    if _DNS_SUBDOMAIN.fullmatch(name) is None or ".." in name:
        raise ValueError(
            f"Node name {name!r} is not a DNS-1123 subdomain (e.g. 'ip-10-0-131-183.ec2.internal')."
        )
    return name


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_utc)]
Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
_ClusterName = Annotated[types.ClusterName, AfterValidator(keys.validate_cluster_name)]
_OcpVersion = Annotated[types.OcpVersion, AfterValidator(versions.validate_version)]


class _Frozen(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class SnapshotStatus(_Frozen):
    """`etcdctl snapshot status -w json` of the snapshot (CRC32C hash over keys and values)."""

    hash: Annotated[int, Field(ge=0, le=_MAX_CRC32)]
    """CRC32C over the snapshot's keys and values, as etcdctl prints it (decimal)."""
    revision: Annotated[types.Revision, Field(ge=0)]
    """The etcd revision the snapshot was taken at."""
    total_key: NonNegativeInt
    """Number of keys in the snapshot (`totalKey`)."""
    total_size: NonNegativeInt
    """Size of the bolt database in bytes (`totalSize`)."""


class ManifestFile(_Frozen):
    """One stored object of the backup."""

    key: str
    """The object's S3 key, in the layout of `etcdguard.core.keys`."""
    kind: Literal["snapshot", "static_resources"]
    """Which file of cluster-backup.sh this is."""
    size: NonNegativeInt
    """Size of the stored object in bytes (compressed size when compressed)."""
    sha256_stored: Sha256Hex
    """sha256 of the stored bytes, lower-case hex."""
    sha256_original: Sha256Hex
    """sha256 of the file as cluster-backup.sh wrote it, lower-case hex."""
    compressed: Literal["zstd"] | None = None
    """How the stored bytes are compressed; None when stored as written."""

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> ManifestFile:
        parsed = keys.parse_key(self.key)
        if parsed.kind != self.kind:
            raise ValueError(f"File {self.key!r} is a {parsed.kind} key but is listed as {self.kind}.")
        if parsed.compressed != (self.compressed == "zstd"):
            raise ValueError(
                f"File {self.key!r} says compressed={self.compressed!r}, but its key "
                f"{'ends' if parsed.compressed else 'does not end'} in '.zst'."
            )
        if self.compressed is None and self.sha256_stored != self.sha256_original:
            raise ValueError(
                f"File {self.key!r} is stored uncompressed, so its stored and original sha256 must "
                "be equal, but they differ."
            )
        return self

    @property
    def backup_key(self) -> keys.BackupKey:
        """The parsed `key`."""
        return keys.parse_key(self.key)


class DrillResult(_Frozen):
    """One restore drill: the snapshot restored into a scratch etcd and checked."""

    ran_at: UtcDatetime
    """When the drill ran (UTC)."""
    passed: bool
    """Whether every check passed."""
    key_count: NonNegativeInt
    """Keys found in the restored etcd."""
    durations: dict[str, NonNegativeFloat] = Field(default_factory=dict)
    """Seconds per step, e.g. {"download": 3.2, "restore": 1.1}."""
    message: str
    """A sentence saying what was checked and, on failure, what went wrong."""


class BackupManifest(_Frozen):
    """The manifest of one backup (schema version 1)."""

    schema_version: Literal[1] = 1
    """Manifest format version; readers refuse versions they do not know."""
    cluster: _ClusterName
    """The cluster's name in etcdguard (a DNS-1123 label)."""
    cluster_id: uuid.UUID
    """ClusterVersion `spec.clusterID`."""
    ocp_version: _OcpVersion
    """The z-stream the backup was taken on (first Completed ClusterVersion history entry)."""
    etcd_version: Annotated[str, Field(pattern=r"^\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.-]+)?$")]
    """The etcd server version, e.g. `3.4.14`."""
    created_at: UtcDatetime
    """When the manifest was written (UTC)."""
    source_node: Annotated[str, AfterValidator(_node_name)]
    """The control-plane node the snapshot was taken on."""
    flow_run_id: Annotated[str, Field(min_length=1)] | None = None
    """The Prefect flow run that took the backup, if any."""
    encryption: Encryption | None
    """APIServer `spec.encryption.type` at backup time; None when unset (off)."""
    files: Annotated[tuple[ManifestFile, ...], Field(min_length=1)]
    """The stored objects: exactly one snapshot, at most one static-resources archive."""
    snapshot: SnapshotStatus
    """`etcdctl snapshot status` of the snapshot."""
    sha256_trailer: TrailerState
    """The sha256 trailer `etcdctl snapshot save` appends: present and correct, absent, or wrong."""
    drills: tuple[DrillResult, ...] = ()
    """Restore drills run against this backup, oldest first."""

    @pydantic.model_validator(mode="after")
    def _files_belong_together(self) -> BackupManifest:
        snapshots = [f for f in self.files if f.kind == "snapshot"]
        statics = [f for f in self.files if f.kind == "static_resources"]
        if len(snapshots) != 1 or len(statics) > 1:
            raise ValueError(
                f"A manifest lists exactly one snapshot and at most one static-resources file; this "
                f"one lists {len(snapshots)} and {len(statics)}."
            )
        taken_at = snapshots[0].backup_key.taken_at
        for file in self.files:
            parsed = file.backup_key
            if (parsed.cluster, parsed.ocp_version, parsed.taken_at) != (
                self.cluster,
                self.ocp_version,
                taken_at,
            ):
                raise ValueError(
                    f"File {file.key!r} belongs to backup {parsed.backup_id}, not to this manifest's "
                    f"backup {self.cluster}/{self.ocp_version} taken at {taken_at.isoformat()}."
                )
        return self

    @property
    def encryption_enabled(self) -> bool:
        """True when etcd encryption (aescbc or aesgcm) was on: the static resources then hold
        the encryption keys and the snapshot is useless without them."""
        return self.encryption in {"aescbc", "aesgcm"}

    @property
    def snapshot_file(self) -> ManifestFile:
        """The snapshot's entry in `files`."""
        return next(f for f in self.files if f.kind == "snapshot")

    @property
    def static_resources_file(self) -> ManifestFile | None:
        """The static-resources archive's entry in `files`, if stored."""
        return next((f for f in self.files if f.kind == "static_resources"), None)

    @property
    def taken_at(self) -> datetime:
        """The backup's instant, from its keys (UTC): what retention orders by."""
        return self.snapshot_file.backup_key.taken_at

    @property
    def backup_id(self) -> types.BackupId:
        """`<cluster>/<ocp-version>/<UTC timestamp>` of this backup."""
        return self.snapshot_file.backup_key.backup_id

    @property
    def manifest_key(self) -> str:
        """The S3 key this manifest is stored at (beside the snapshot)."""
        snapshot = self.snapshot_file.backup_key
        return keys.format_key(
            keys.BackupKey(
                prefix=snapshot.prefix,
                cluster=snapshot.cluster,
                ocp_version=snapshot.ocp_version,
                taken_at=snapshot.taken_at,
                kind="manifest",
            )
        )

    @property
    def stored_size(self) -> int:
        """Bytes stored for this backup's files (the manifest itself not counted)."""
        return sum(f.size for f in self.files)

    def with_drill(self, result: DrillResult) -> BackupManifest:
        """A copy of this manifest with `result` appended to `drills`."""
        data = self.model_dump()
        data["drills"] = (*self.drills, result)
        return BackupManifest.model_validate(data)

    def to_json_bytes(self) -> bytes:
        """UTF-8 JSON with sorted keys, two-space indents and a final newline: stable bytes."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True, indent=2, ensure_ascii=False)
        return (text + "\n").encode("utf-8")

    @classmethod
    def from_json_bytes(cls, data: bytes | str) -> BackupManifest:
        """Read a manifest written by `to_json_bytes`; raises `IntegrityError` when it is not
        JSON, is from a newer schema version, or does not validate."""
        try:
            raw: Any = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise errors.IntegrityError(
                f"The manifest is not valid JSON ({exc}); it is corrupt or not an etcdguard manifest, "
                "so the backup cannot be trusted."
            ) from exc
        if not isinstance(raw, dict):
            raise errors.IntegrityError(
                f"The manifest is JSON of type {type(raw).__name__}, not an object; it is not an "
                "etcdguard manifest."
            )
        schema = raw.get("schema_version")
        if isinstance(schema, int) and not isinstance(schema, bool) and schema > 1:
            raise errors.IntegrityError(
                f"The manifest has schema_version {schema}, written by a newer etcdguard than this "
                "one (which reads version 1); upgrade etcdguard to read it."
            )
        try:
            return cls.model_validate_json(data)
        except pydantic.ValidationError as exc:
            details = errors.truncate_remote(str(exc), limit=1000)
            raise errors.IntegrityError(
                f"The manifest does not validate ({exc.error_count()} errors), so the backup cannot be "
                f"trusted: {details}"
            ) from exc


def parse_snapshot_status(output: str | bytes) -> SnapshotStatus:
    """Read `etcdctl snapshot status <file> -w json` output, e.g.
    `{"hash":3866667823,"revision":31407,"totalKey":12828,"totalSize":114446336}`.

    Other lines (log or deprecation notices) are ignored: the last line that is a JSON object
    is read. Fields etcd adds later (3.5's `version`) are ignored. Raises `IntegrityError` naming
    what is missing or wrong, with the output truncated and redacted.
    """
    text = output.decode("utf-8", errors="replace") if isinstance(output, bytes) else output

    def refuse(problem: str) -> errors.IntegrityError:
        return errors.IntegrityError(
            f"etcdctl snapshot status output cannot be read: {problem}. Expected one JSON object "
            'like {"hash":3866667823,"revision":31407,"totalKey":12828,"totalSize":114446336}; '
            f"got: {errors.truncate_remote(text, limit=300)!r}"
        )

    lines = [line.strip() for line in text.splitlines()]
    candidates = [line for line in lines if line.startswith("{") and line.endswith("}")]
    if not candidates:
        raise refuse("no line is a JSON object")
    try:
        raw: Any = json.loads(candidates[-1])
    except ValueError as exc:
        raise refuse(f"the JSON does not parse ({exc})") from exc
    missing = [name for name in _STATUS_FIELDS if name not in raw]
    if missing:
        raise refuse(f"the fields {', '.join(missing)} are missing")
    values: dict[str, int] = {}
    for name, field in _STATUS_FIELDS.items():
        value = raw[name]
        if not isinstance(value, int) or isinstance(value, bool):
            raise refuse(f"{name} is {value!r}, not an integer")
        values[field] = value
    try:
        return SnapshotStatus.model_validate(values)
    except pydantic.ValidationError as exc:
        raise refuse(f"a figure is out of range ({exc.errors()[0]['msg']})") from exc
