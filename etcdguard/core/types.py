"""Domain names for plain values, so signatures say what a `str` or `int` means.

`ClusterName` is a DNS-1123 label (the cluster's short name, e.g. `prod-east`); `OcpVersion` an
OpenShift release such as `4.8.12` or `4.9.0-rc.2` (see `etcdguard.core.versions`); `Revision` an
etcd revision; `BackupId` the `<cluster>/<ocp-version>/<UTC timestamp>` part of a backup's S3
prefix (see `etcdguard.core.keys`). Validation happens where values enter: `keys`, `manifest`.
"""

from __future__ import annotations

from typing import NewType

__all__ = ["BackupId", "ClusterName", "OcpVersion", "Revision"]

ClusterName = NewType("ClusterName", str)
OcpVersion = NewType("OcpVersion", str)
Revision = NewType("Revision", int)
BackupId = NewType("BackupId", str)
