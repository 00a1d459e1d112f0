"""Decisions of the restore-cluster flow (guide 4.3.2), as pure functions over plain data.

The flow gathers facts (what the API says if it answers, what each control-plane host says over
SSH, the backup's manifest) and these functions decide:

- `cluster_zstream`: which z-stream the cluster runs. From the API's ClusterVersion when it
  answers; else from the ClusterVersion a surviving etcd member still holds (a serializable read
  needs no quorum); else only the newest backup's version can be assumed, which is said in the
  report: a cluster upgraded after its newest backup would then be restored from an older
  z-stream, which the guide forbids, so the approval summary asks the operator to confirm it.
- `choose_recovery_host`: the named host, or the first reachable one (by name) that still has its
  etcd data directory, preferring one whose etcd runs. Never an unreachable host.
- `lost_hosts`: hosts SSH cannot reach. A host the API reports Ready but SSH cannot reach is
  refused (its static pods could not be stopped); otherwise it is taken as lost and its Machine is
  re-created, which terminates it.
- `clean_machine`: the guide's step 11c on a Machine object.
- `rollout_done`: whether an operator CR reached `AllNodesAtLatestRevision` for a revision newer
  than the one before the forced redeployment.
- `approval_summary`: the markdown the approval form shows.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from etcdguard.core import errors, openshift, versions

__all__ = [
    "HostProbe",
    "RestoreJournal",
    "ZStream",
    "approval_summary",
    "choose_recovery_host",
    "clean_machine",
    "cluster_zstream",
    "lost_hosts",
    "next_machine_name",
    "redeploy_reason",
    "rollout_done",
]

Obj = Mapping[str, Any]
RECREATED_ANNOTATION = "etcdguard.io/recreated-for-restore"


@dataclasses.dataclass(frozen=True, kw_only=True)
class HostProbe:
    """What one control-plane host said over SSH (or that it did not answer)."""

    name: str
    address: str
    reachable: bool
    error: str | None = None
    """Why SSH failed, when it did."""
    permanent: bool = False
    """SSH failed for a reason a retry cannot fix (host key, authentication)."""
    etcd_running: bool = False
    """`crictl ps` shows an etcd container."""
    data_dir: bool = False
    """`/var/lib/etcd/member` exists."""
    journal: str | None = None
    """The restore journal found on the host (JSON text), if any."""
    clusterversion: str | None = None
    """The ClusterVersion JSON the host's etcd member still holds, if it could be read."""
    proxy: str | None = None
    """The cluster Proxy JSON the host's etcd member still holds, if it could be read."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ZStream:
    version: str
    source: str
    """Where the version comes from, as a phrase for the report."""
    certain: bool
    """False when it is only assumed (from the newest backup)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class RestoreJournal:
    """Written on the recovery host when the destructive steps begin; a re-run reads it to go on
    where the interrupted run stopped instead of starting over."""

    backup_id: str
    recovery_node: str
    recovery_address: str
    started_at: str
    steps: tuple[str, ...] = ()

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RestoreJournal:
        try:
            data = json.loads(text)
            return cls(
                backup_id=str(data["backup_id"]),
                recovery_node=str(data["recovery_node"]),
                recovery_address=str(data["recovery_address"]),
                started_at=str(data["started_at"]),
                steps=tuple(str(s) for s in data.get("steps") or ()),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise errors.IntegrityError(
                f"The restore journal {errors.truncate_remote(text, limit=200)!r} is unreadable; inspect "
                "/home/core/backup on the recovery host and remove it if no restore is in progress."
            ) from exc

    def with_step(self, step: str) -> RestoreJournal:
        return dataclasses.replace(self, steps=self.steps if step in self.steps else (*self.steps, step))


def cluster_zstream(
    *, clusterversion: Obj | None, member_clusterversion: Obj | None, newest_backup_version: str | None
) -> ZStream:
    """The cluster's z-stream and where it comes from (see the module docstring)."""
    if clusterversion is not None:
        reason = versions.upgrade_reason(clusterversion)
        if reason is not None:
            raise errors.PreflightRefused(
                f"The cluster is upgrading ({reason}), so its z-stream is ambiguous and no backup can be "
                "matched to it. Let the upgrade finish, or restore with Red Hat support."
            )
        return ZStream(
            version=versions.current_zstream(clusterversion), source="the API's ClusterVersion", certain=True
        )
    if member_clusterversion is not None:
        return ZStream(
            version=versions.current_zstream(member_clusterversion),
            source="the ClusterVersion held by the surviving etcd member (the API is down)",
            certain=True,
        )
    if newest_backup_version is None:
        raise errors.NotFoundError(
            "The API is down, no etcd member could tell the cluster's z-stream, and the catalogue holds no "
            "backup of this cluster: there is nothing to restore from."
        )
    return ZStream(
        version=newest_backup_version,
        source=(
            "ASSUMED from the newest backup: the API is down and no etcd member could be read. If the "
            "cluster was upgraded after that backup, do not approve"
        ),
        certain=False,
    )


def choose_recovery_host(probes: Sequence[HostProbe], *, named: str | None) -> HostProbe:
    """The recovery host: `named` (which must be reachable and hold etcd data, or the journal of a
    restore in progress), else the host where a restore is in progress, else the first reachable
    host by name with its etcd data, one whose etcd runs first."""
    if named is not None:
        found = [p for p in probes if named in (p.name, p.address)]
        if not found:
            raise errors.NotFoundError(
                f"Recovery host {named!r} is not a control-plane host of this cluster; choose one of "
                f"{', '.join(sorted(p.name for p in probes)) or 'none known'}."
            )
        chosen = found[0]
        if not chosen.reachable:
            raise errors.PreflightRefused(
                f"Recovery host {chosen.name} does not answer over SSH ({chosen.error}); choose a healthy "
                "control-plane host."
            )
        if not chosen.data_dir and chosen.journal is None:  # a journal: a restore in progress there
            raise errors.PreflightRefused(
                f"Recovery host {chosen.name} has no etcd data directory (/var/lib/etcd/member): it is not a "
                "healthy control-plane host; choose another one."
            )
        return chosen
    resuming = [p for p in probes if p.reachable and p.journal is not None]
    if resuming:  # a restore was started there: continue it on the same host
        return sorted(resuming, key=lambda p: p.name)[0]
    healthy = [p for p in probes if p.reachable and p.data_dir]
    if not healthy:
        raise errors.PreflightRefused(
            "No control-plane host is healthy enough to be the recovery host (reachable over SSH with "
            "/var/lib/etcd/member present): "
            + "; ".join(f"{p.name}: {p.error or 'no etcd data'}" for p in probes)
        )
    return sorted(healthy, key=lambda p: (not p.etcd_running, p.name))[0]


def lost_hosts(probes: Sequence[HostProbe], *, ready_nodes: set[str] | None) -> list[HostProbe]:
    """Hosts SSH cannot reach, which the restore treats as lost. Refuses when SSH fails for a
    permanent reason, or when the API says an unreachable host's node is Ready."""
    permanent = [p for p in probes if not p.reachable and p.permanent]
    if permanent:
        raise errors.PreflightRefused(
            "SSH to these control-plane hosts fails for a reason a retry cannot fix: "
            + "; ".join(f"{p.name}: {p.error}" for p in permanent)
            + ". The guide requires SSH to every control-plane host before a restore: fix the profile's "
            "ssh settings or known_hosts first."
        )
    unreachable = [p for p in probes if not p.reachable]
    running = [p for p in unreachable if ready_nodes is not None and p.name in ready_nodes]
    if running:
        raise errors.PreflightRefused(
            f"The API reports {', '.join(p.name for p in running)} Ready, but SSH to it fails "
            f"({'; '.join(str(p.error) for p in running)}): its etcd and API server could not be stopped. "
            "Restore SSH access first (the guide requires it to every control-plane host)."
        )
    return unreachable


def machines_to_recreate(machines: Sequence[Obj], *, recovery_node: str) -> list[str]:
    """Step 11: the control-plane Machines to delete and re-create, in the API's order: every one
    but the recovery host's, and none that is itself a copy made by this restore."""
    return [
        str(m["metadata"]["name"])
        for m in machines
        if ((m.get("status") or {}).get("nodeRef") or {}).get("name") != recovery_node
        and RECREATED_ANNOTATION not in ((m.get("metadata") or {}).get("annotations") or {})
    ]


def next_machine_name(old: str, existing: Sequence[str]) -> str:
    """Step 11c: `openshift.next_machine_name`."""
    return openshift.next_machine_name(old, existing)


def clean_machine(machine: Obj, *, new_name: str, backup_id: str) -> dict[str, Any]:
    """The guide's step 11c (`openshift.clean_machine`), annotated with the restore it was made for
    and the Machine it replaces, so that a re-run finds the copy."""
    old_name = str((machine.get("metadata") or {}).get("name", ""))
    return openshift.clean_machine(
        machine, new_name=new_name, annotations={RECREATED_ANNOTATION: f"{backup_id} replaces {old_name}"}
    )


def redeploy_reason(now: datetime) -> str:
    """Steps 13 and 15: `recovery-$(date --rfc-3339=ns)`."""
    return openshift.redeploy_reason("recovery", now)


rollout_done = openshift.rollout_done


def approval_summary(
    *,
    cluster: str,
    backup_id: str,
    backup_taken_at: datetime,
    backup_version: str,
    zstream: ZStream,
    recovery: HostProbe,
    others: Sequence[HostProbe],
    lost: Sequence[HostProbe],
    machines_to_replace: Sequence[str],
    proxy_note: str,
    resumed: RestoreJournal | None,
    notes: Sequence[str],
    now: datetime,
) -> str:
    """What the operator approves: what will be destroyed, from which backup, what is lost."""
    age = now - backup_taken_at
    hours = age.total_seconds() / 3600
    lines = [
        f"# Restore cluster `{cluster}` from an etcd backup (guide 4.3.2)",
        "",
        "**This is destructive.** Every change made to the cluster after the backup is lost.",
        "",
        f"- backup: `{backup_id}` taken {backup_taken_at.isoformat()} ({hours:.1f} h ago), OpenShift "
        f"{backup_version}",
        f"- cluster z-stream: {zstream.version} ({zstream.source})",
        f"- lost since the backup: every API object created, changed or deleted in the last {hours:.1f} h "
        "(namespaces, deployments, secrets, CSR approvals, operator state); persistent volume contents are "
        "NOT rolled back (see 4.3.2.3)",
        f"- recovery host: `{recovery.name}` ({recovery.address}): its etcd data is moved to "
        "/var/lib/etcd-backup and replaced by the backup",
    ]
    for host in others:
        lines.append(
            f"- `{host.name}` ({host.address}): etcd and kube-apiserver stopped, /var/lib/etcd moved to /tmp"
        )
    for host in lost:
        lines.append(f"- `{host.name}` ({host.address}): unreachable ({host.error}), treated as lost")
    if machines_to_replace:
        lines.append(
            "- Machines deleted and re-created (their instances are terminated): "
            + ", ".join(f"`{m}`" for m in machines_to_replace)
        )
    lines.append(f"- proxy: {proxy_note}")
    if resumed is not None:
        lines.append(
            f"- **resuming** the restore started {resumed.started_at}; steps already done: "
            + (", ".join(resumed.steps) or "none")
        )
    lines += [f"- note: {note}" for note in notes]
    lines += ["", "Type the cluster's name to confirm, give a reason, and tick approve."]
    return "\n".join(lines) + "\n"
