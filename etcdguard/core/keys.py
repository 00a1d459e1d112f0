"""The S3 key layout of the backup catalogue: the one `format_key`/`parse_key` pair.

```
<prefix>/<cluster>/<ocp-version>/<UTC yyyy-mm-ddTHHMMSSZ>/snapshot_<datestring>.db[.zst]
<prefix>/<cluster>/<ocp-version>/<UTC yyyy-mm-ddTHHMMSSZ>/manifest.json
<key-prefix>/<cluster>/<ocp-version>/<UTC yyyy-mm-ddTHHMMSSZ>/static_kuberesources_<datestring>.tar.gz
```

`<datestring>` is cluster-backup.sh's `DATESTRING` (`date "+%F_%H%M%S"`, e.g. `2021-06-25_190035`)
for the same instant as the directory, both in UTC. The static resources hold the etcd encryption
keys when encryption is on, so they go under their own prefix (often their own bucket), as the
guide advises. `<prefix>` may be empty or hold several `/`-separated segments; it is recovered by
parsing from the right. Cluster names are DNS-1123 labels; versions are those
`etcdguard.core.versions.parse_version` accepts.

Backups are ordered by the parsed timestamp (`sort_by_time`), never by the key string: keys of
`4.10.x` sort before `4.9.x` lexicographically (etcd-operator #2113 deleted the newest backups
that way).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Literal

from etcdguard.core import types, versions

__all__ = [
    "BackupKey",
    "KeyKind",
    "backup_prefix",
    "format_key",
    "parse_key",
    "sort_by_time",
    "validate_cluster_name",
    "validate_prefix",
]

KeyKind = Literal["snapshot", "manifest", "static_resources"]

_DIR_FORMAT = "%Y-%m-%dT%H%M%SZ"
_DNS_LABEL = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")
_PREFIX_SEGMENT = re.compile(r"[A-Za-z0-9_.-]{1,255}")
_DIR = re.compile(r"\d{4}-\d{2}-\d{2}T\d{6}Z")
_FILE = re.compile(
    r"snapshot_(?P<snap>\d{4}-\d{2}-\d{2}_\d{6})\.db(?P<zst>\.zst)?"
    r"|static_kuberesources_(?P<static>\d{4}-\d{2}-\d{2}_\d{6})\.tar\.gz"
    r"|(?P<manifest>manifest\.json)"
)
_KIND_ORDER: dict[str, int] = {"snapshot": 0, "static_resources": 1, "manifest": 2}


# strftime("%Y") drops leading zeros of years before 1000 on glibc: format by hand.
def _dir_stamp(moment: datetime) -> str:
    return f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment:%H%M%S}Z"


def _datestring(moment: datetime) -> str:
    return f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}_{moment:%H%M%S}"


def validate_cluster_name(name: str) -> types.ClusterName:
    """Return `name` as a `ClusterName` if it is a DNS-1123 label, else raise ValueError."""
    if not isinstance(name, str) or _DNS_LABEL.fullmatch(name) is None:
        raise ValueError(
            f"Cluster name {name!r} is not a DNS-1123 label: use 1-63 lower-case letters, digits "
            "and '-', starting and ending with a letter or digit (e.g. 'prod-east-1')."
        )
    return types.ClusterName(name)


def validate_prefix(prefix: str) -> str:
    """Return `prefix` if it is empty or `/`-separated segments of `A-Za-z0-9_.-` (no empty
    segment, no `.`/`..`, no leading or trailing `/`), else raise ValueError."""
    if prefix == "":
        return prefix
    segments = prefix.split("/") if isinstance(prefix, str) else [""]
    for segment in segments:
        if _PREFIX_SEGMENT.fullmatch(segment) is None or segment in {".", ".."}:
            raise ValueError(
                f"S3 key prefix {prefix!r} is not usable: give '/'-separated segments of letters, "
                "digits, '_', '.' and '-' without a leading or trailing '/' (e.g. 'etcd-backups' "
                "or 'ocp/etcd'), or an empty prefix."
            )
    return prefix


@dataclasses.dataclass(frozen=True, kw_only=True)
class BackupKey:
    """One object of a backup, as the parts of its S3 key.

    `taken_at` is the backup's instant: timezone-aware, stored in UTC, whole seconds.
    `compressed` (zstd, `.zst`) applies to snapshots only.
    """

    prefix: str
    cluster: types.ClusterName
    ocp_version: types.OcpVersion
    taken_at: datetime
    kind: KeyKind
    compressed: bool = False

    def __post_init__(self) -> None:
        validate_prefix(self.prefix)
        validate_cluster_name(self.cluster)
        versions.validate_version(self.ocp_version)
        if self.taken_at.tzinfo is None or self.taken_at.utcoffset() is None:
            raise ValueError(
                f"BackupKey.taken_at {self.taken_at.isoformat()} is naive; pass a timezone-aware "
                "datetime (e.g. datetime.now(UTC))."
            )
        if self.taken_at.microsecond:
            raise ValueError(
                f"BackupKey.taken_at {self.taken_at.isoformat()} has fractions of a second, which "
                "the key cannot hold; use taken_at.replace(microsecond=0)."
            )
        if self.taken_at.tzinfo is not UTC:
            object.__setattr__(self, "taken_at", self.taken_at.astimezone(UTC))
        if self.kind not in _KIND_ORDER:
            raise ValueError(
                f"BackupKey.kind {self.kind!r} is unknown: use 'snapshot', 'manifest' or 'static_resources'."
            )
        if self.compressed and self.kind != "snapshot":
            raise ValueError(
                f"A {self.kind} object cannot be stored compressed: only the snapshot gets '.zst'."
            )

    @property
    def backup_id(self) -> types.BackupId:
        """`<cluster>/<ocp-version>/<UTC timestamp>`: the same for every object of one backup."""
        return types.BackupId(f"{self.cluster}/{self.ocp_version}/{_dir_stamp(self.taken_at)}")

    @property
    def datestring(self) -> str:
        """cluster-backup.sh's `DATESTRING` for `taken_at`, e.g. `2021-06-25_190035`."""
        return _datestring(self.taken_at)


def backup_prefix(
    *,
    prefix: str,
    cluster: str,
    ocp_version: str | None = None,
    taken_at: datetime | None = None,
) -> str:
    """The key prefix (ending in `/`) under which to list a cluster's backups, one z-stream's,
    or one backup's objects. The trailing `/` keeps cluster `prod` from matching `prod-2`.

    `taken_at` needs `ocp_version`; it must be aware and whole seconds, like `BackupKey.taken_at`.
    """
    parts = [validate_prefix(prefix)] if prefix else []
    parts.append(validate_cluster_name(cluster))
    if ocp_version is not None:
        parts.append(versions.validate_version(ocp_version))
    if taken_at is not None:
        if ocp_version is None:
            raise ValueError(
                "backup_prefix() was given taken_at without ocp_version; a backup's prefix "
                "contains its OpenShift version, so pass both."
            )
        key = BackupKey(
            prefix=prefix,
            cluster=types.ClusterName(cluster),
            ocp_version=types.OcpVersion(ocp_version),
            taken_at=taken_at,
            kind="manifest",
        )
        parts.append(_dir_stamp(key.taken_at))
    return "/".join(parts) + "/"


def format_key(key: BackupKey) -> str:
    """The S3 key of `key`'s object (see the module docstring for the layout)."""
    if key.kind == "snapshot":
        name = f"snapshot_{key.datestring}.db" + (".zst" if key.compressed else "")
    elif key.kind == "static_resources":
        name = f"static_kuberesources_{key.datestring}.tar.gz"
    else:
        name = "manifest.json"
    directory = backup_prefix(
        prefix=key.prefix, cluster=key.cluster, ocp_version=key.ocp_version, taken_at=key.taken_at
    )
    return directory + name


def parse_key(key: str) -> BackupKey:
    """The inverse of `format_key`: `parse_key(format_key(k)) == k` for every valid `k`.

    Raises ValueError naming the key and the part that does not fit the layout.
    """

    def refuse(problem: str) -> ValueError:
        return ValueError(
            f"S3 key {key!r} is not an etcdguard backup object: {problem}. Expected "
            "'<prefix>/<cluster>/<ocp-version>/<yyyy-mm-ddTHHMMSSZ>/' followed by "
            "'snapshot_<yyyy-mm-dd_HHMMSS>.db[.zst]', 'manifest.json' or "
            "'static_kuberesources_<yyyy-mm-dd_HHMMSS>.tar.gz'."
        )

    parts = key.split("/") if isinstance(key, str) else []
    if len(parts) < 4:
        raise refuse("it has fewer than four '/'-separated parts")
    *prefix_parts, cluster, version, directory, name = parts
    if _DIR.fullmatch(directory) is None:
        raise refuse(f"the timestamp directory {directory!r} is not yyyy-mm-ddTHHMMSSZ")
    try:
        taken_at = datetime.strptime(directory, _DIR_FORMAT).replace(tzinfo=UTC)
    except ValueError as exc:
        raise refuse(f"the timestamp directory {directory!r} is not a valid date and time") from exc
    match = _FILE.fullmatch(name)
    if match is None:
        raise refuse(f"the file name {name!r} is not one etcdguard writes")
    kind: KeyKind
    if match.group("manifest"):
        kind, datestring = "manifest", None
    elif match.group("snap"):
        kind, datestring = "snapshot", match.group("snap")
    else:
        kind, datestring = "static_resources", match.group("static")
    if any(segment == "" for segment in prefix_parts):
        raise refuse("its prefix has an empty segment (a leading, trailing or doubled '/')")
    if datestring is not None and datestring != _datestring(taken_at):
        raise refuse(f"the file's time {datestring} differs from its directory's time {directory}")
    try:
        return BackupKey(
            prefix="/".join(prefix_parts),
            cluster=validate_cluster_name(cluster),
            ocp_version=versions.validate_version(version),
            taken_at=taken_at,
            kind=kind,
            compressed=match.group("zst") is not None,
        )
    except ValueError as exc:
        raise refuse(str(exc).rstrip(".")) from exc


def _order(key: BackupKey) -> tuple[datetime, str, versions.ParsedVersion, str, int, bool]:
    return (
        key.taken_at,
        key.cluster,
        versions.parse_version(key.ocp_version),
        key.prefix,
        _KIND_ORDER[key.kind],
        key.compressed,
    )


def sort_by_time(keys: Iterable[BackupKey], *, newest_first: bool = False) -> list[BackupKey]:
    """`keys` ordered by `taken_at` (oldest first unless `newest_first`), never by key string.

    Ties break on cluster, version (by `parse_version`), prefix, kind (snapshot, static
    resources, manifest) and compression, so the order is total and repeatable.
    """
    return sorted(keys, key=_order, reverse=newest_first)
