"""Domain names for plain values, so signatures say what a `str` or `int` means.

`ClusterName` is a DNS-1123 label (the cluster's short name, e.g. `prod-east`); `OcpVersion` an
OpenShift release such as `4.8.12` or `4.9.0-rc.2` (see `etcdguard.core.versions`); `Revision` an
etcd revision; `BackupId` the `<cluster>/<ocp-version>/<UTC timestamp>` part of a backup's S3
prefix (see `etcdguard.core.keys`). Validation happens where values enter: `keys`, `manifest`.
"""

from __future__ import annotations

import zoneinfo
from typing import NewType

__all__ = ["BackupId", "ClusterName", "OcpVersion", "Revision", "known_zone"]

ClusterName = NewType("ClusterName", str)
OcpVersion = NewType("OcpVersion", str)
Revision = NewType("Revision", int)
BackupId = NewType("BackupId", str)


def known_zone(value: str, *, field: str) -> str:
    """`value` if it names an IANA time zone; else `ValueError` naming `field` and the fix."""
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(
            f"{field} {value!r} is not an IANA time zone name; use one like 'Europe/Berlin', "
            "'America/New_York' or 'UTC'."
        ) from exc
    return value
