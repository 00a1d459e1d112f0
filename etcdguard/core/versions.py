"""OpenShift versions: parsing and ordering, what a ClusterVersion says, and the restore rule.

A version is `<major>.<minor>.<patch>` (`4.8.12`, `4.10.3`), optionally a candidate build
`-ec.N` / `-fc.N` / `-rc.N` (engineering, feature, release candidate: `4.9.0-rc.2`), ordered
ec < fc < rc < the release. Nightly, CI and OKD builds (`4.8.0-0.nightly-...`) are refused: their
backups could not be told apart reliably by z-stream.

ClusterVersion (`config.openshift.io/v1`, name `version`) keeps `status.history` newest first.
The current z-stream is the version of the first `Completed` entry (what `oc get clusterversion`
shows); `status.desired.version` runs ahead during an upgrade; the last entry is the installation.
The guide (4.3.2) allows restoring only a backup of the cluster's exact z-stream, and no script
checks it, so `may_restore` does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

from etcdguard.core import errors, types

__all__ = [
    "ParsedVersion",
    "current_zstream",
    "install_time",
    "is_upgrading",
    "may_restore",
    "parse_version",
    "upgrade_reason",
    "validate_version",
]

_NUMBER = r"(0|[1-9][0-9]{0,5})"
_VERSION = re.compile(rf"{_NUMBER}\.{_NUMBER}\.{_NUMBER}(?:-(ec|fc|rc)\.{_NUMBER})?")
_STAGE_RANK = {"ec": 0, "fc": 1, "rc": 2}
_RELEASE_RANK = 3


class ParsedVersion(NamedTuple):
    """A version as a tuple that orders correctly; `stage` is 0 ec, 1 fc, 2 rc, 3 release."""

    major: int
    minor: int
    patch: int
    stage: int
    candidate: int


def parse_version(version: str) -> ParsedVersion:
    """Parse `4.8.12`, `4.10.3` or `4.9.0-rc.2` into a tuple for ordering.

    Raises `ValueError` (so pydantic validators turn it into a validation error) for anything
    else, including nightly and OKD build names and leading zeros.
    """
    match = _VERSION.fullmatch(version) if isinstance(version, str) else None
    if match is None:
        raise ValueError(
            f"{version!r} is not an OpenShift release version: expected <major>.<minor>.<patch> such "
            "as '4.8.12', optionally with a candidate suffix such as '-rc.2', '-fc.0' or '-ec.1' "
            "(nightly, CI and OKD builds are not supported)."
        )
    major, minor, patch, stage, candidate = match.groups()
    return ParsedVersion(
        major=int(major),
        minor=int(minor),
        patch=int(patch),
        stage=_STAGE_RANK[stage] if stage else _RELEASE_RANK,
        candidate=int(candidate) if candidate else 0,
    )


def validate_version(version: str) -> types.OcpVersion:
    """Return `version` as an `OcpVersion` if `parse_version` accepts it, else raise ValueError."""
    parse_version(version)
    return types.OcpVersion(version)


def _status(clusterversion: Mapping[str, Any]) -> Mapping[str, Any]:
    status = clusterversion.get("status")
    return status if isinstance(status, Mapping) else {}


def _history(clusterversion: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    history = _status(clusterversion).get("history")
    if not isinstance(history, Sequence) or isinstance(history, str):
        return []
    return [entry for entry in history if isinstance(entry, Mapping)]


def current_zstream(clusterversion: Mapping[str, Any]) -> types.OcpVersion:
    """The version of the first `Completed` entry of `status.history` (newest first).

    Raises `PreflightRefused` when no entry is Completed (the installation never finished) or
    the version is not one `parse_version` accepts.
    """
    for entry in _history(clusterversion):
        if entry.get("state") != "Completed":
            continue
        version = entry.get("version")
        try:
            return validate_version(version if isinstance(version, str) else repr(version))
        except ValueError as exc:
            raise errors.PreflightRefused(
                f"ClusterVersion reports the completed version {version!r}, which etcdguard cannot "
                f"use as a z-stream: {exc} Backups of such clusters cannot be catalogued."
            ) from exc
    raise errors.PreflightRefused(
        "ClusterVersion status.history has no Completed entry, so the cluster's z-stream is unknown "
        "(its installation has not finished); wait until `oc get clusterversion` shows a version."
    )


def upgrade_reason(clusterversion: Mapping[str, Any]) -> str | None:
    """Why the cluster counts as upgrading, as a sentence fragment, or None when it is not.

    Upgrading means: the `Progressing` condition is True, or the newest history entry is
    `Partial`, or `status.desired.version` differs from the current z-stream (a cluster with no
    Completed entry is still installing, which counts too).
    """
    status = _status(clusterversion)
    conditions = status.get("conditions")
    for condition in conditions if isinstance(conditions, Sequence) else []:
        if (
            isinstance(condition, Mapping)
            and condition.get("type") == "Progressing"
            and condition.get("status") == "True"
        ):
            message = errors.truncate_remote(str(condition.get("message") or "no message"), limit=200)
            return f"the ClusterVersion condition Progressing is True ({message})"
    history = _history(clusterversion)
    if history and history[0].get("state") == "Partial":
        return (
            f"the newest ClusterVersion history entry ({history[0].get('version')!s}, started "
            f"{history[0].get('startedTime')!s}) is Partial"
        )
    try:
        current = current_zstream(clusterversion)
    except errors.PreflightRefused:
        return "no ClusterVersion history entry is Completed: the cluster has not finished installing"
    desired = status.get("desired")
    desired_version = desired.get("version") if isinstance(desired, Mapping) else None
    if isinstance(desired_version, str) and desired_version and desired_version != current:
        return f"status.desired.version is {desired_version} while the current z-stream is {current}"
    return None


def is_upgrading(clusterversion: Mapping[str, Any]) -> bool:
    """True when `upgrade_reason` finds a reason; backups and restores wait for the upgrade."""
    return upgrade_reason(clusterversion) is not None


def install_time(clusterversion: Mapping[str, Any]) -> datetime:
    """When the cluster was installed: the last history entry's `startedTime`, in UTC.

    Raises `PreflightRefused` when there is no history or the time is missing or unreadable.
    """
    history = _history(clusterversion)
    started = history[-1].get("startedTime") if history else None
    if not isinstance(started, str):
        raise errors.PreflightRefused(
            f"ClusterVersion status.history has no startedTime on its last entry (found {started!r}), "
            "so the cluster's age is unknown; check `oc get clusterversion version -o yaml`."
        )
    try:
        parsed = datetime.fromisoformat(started)
    except ValueError as exc:
        raise errors.PreflightRefused(
            f"ClusterVersion install time {started!r} is not an RFC 3339 timestamp, so the "
            "cluster's age is unknown; check `oc get clusterversion version -o yaml`."
        ) from exc
    if parsed.tzinfo is None:
        raise errors.PreflightRefused(
            f"ClusterVersion install time {started!r} has no time zone, so the cluster's age is "
            "unknown; the API serves UTC times ending in 'Z'."
        )
    return parsed.astimezone(UTC)


def may_restore(backup_version: str, cluster_version: str) -> None:
    """Return when a backup taken on `backup_version` may restore a cluster running
    `cluster_version`: only when both are exactly the same z-stream (guide 4.3.2).

    Raises `VersionMismatch` otherwise, and `ConfigError` when either is not a version.
    """
    for label, value in (("backup", backup_version), ("cluster", cluster_version)):
        try:
            parse_version(value)
        except ValueError as exc:
            raise errors.ConfigError(f"The {label} version is invalid: {exc}") from exc
    if backup_version == cluster_version:
        return
    raise errors.VersionMismatch(
        f"The backup was taken on {backup_version} but the cluster runs {cluster_version}: the guide "
        "allows restoring only a backup of the same z-stream. Choose a backup taken on "
        f"{cluster_version} (restore-cluster picks the newest one when no backup is named); if "
        f"there is none, this cluster cannot be restored from etcdguard's backups without Red Hat "
        "support."
    )
