"""The simulated cluster-etcd-operator (4.8): member health, per-node secrets, revisions, members.

Each pass (about once a second):

1. Member health from the real etcd: `etcdctl member list -w json`, then `GET <clientURL>/health`
   of each started member with the API server's etcd client certificate. `etcds/cluster` gets
   `EtcdMembersAvailable`, `EtcdMembersDegraded` and `EtcdMembersProgressing` with the messages
   of CEO's pkg/etcdcli/health.go ("2 of 3 members are available, NAME is unhealthy",
   ", NAME-PENDING-<peer host> has not started"). Without quorum `member list` fails and the API
   is down as well: nothing is written.
2. Per-node secrets `etcd-peer-<node>`, `etcd-serving-<node>`, `etcd-serving-metrics-<node>`
   (kubernetes.io/tls, real certificates from the etcd CA under `DIR/pki/etcd`) for every
   control-plane node that lacks them, as CEO's EtcdCertSignerController does (e.g. after the
   guide's `oc delete secret` of a replaced member, or for a new machine).
3. Revisions (`_revisions.rollout`): a new `forceRedeploymentReason` rolls a new revision out one
   node at a time; the next node starts once the member of the previous one is healthy again.
4. Membership, 4.8 style: only during a rollout. A node that gets the revision but has no etcd
   member is added with the real `etcdctl member add <node> --peer-urls=https://<ip>:2380` and its
   etcd is installed with `--initial-cluster` = every member plus the new one and
   `--initial-cluster-state=existing` (guide 4.2.4.1 / 4.2.4.2, and 4.3.2.2 step 13 after a
   restore, where only the recovery host has a member). Members are never removed here.
   Nodes without a member go first, so a restored single-member cluster grows before its own
   member restarts.

Deliberate difference: a node whose `/var/lib/etcd/member` belongs to no current member (a removed
member, or the data of the cluster before a restore) makes the real operator's init container
refuse to start etcd until the admin moves the directory. The simulator stops that node's etcd
pod, moves the directory to `/var/lib/etcd-backup/member-<UTC timestamp>` on the host and goes on.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import shutil
import ssl
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from etcdguard_sim import layout, pki
from etcdguard_sim.api import client as apiclient
from etcdguard_sim.controllers import _revisions, context
from etcdguard_sim.hosts import fs as hostfs

__all__ = ["member_conditions", "member_status_message", "reconcile"]

Obj = dict[str, Any]
_OPERAND = _revisions.OPERANDS["etcd"]
_SECRET_KINDS = ("peer", "serving", "serving-metrics")
_SECRETS_EVERY = 5.0


# ---- health ------------------------------------------------------------------------------------
def _peer_host(member: Obj) -> str:
    urls = member.get("peerURLs") or [""]
    return urllib.parse.urlparse(urls[0]).hostname or ""


def member_display_name(member: Obj) -> str:
    """The member's name, or `NAME-PENDING-<peer host>` for one that has not started."""
    return str(member.get("name") or f"NAME-PENDING-{_peer_host(member)}")


def member_status_message(members: list[Obj], healthy: set[int]) -> str:
    """CEO's `memberHealth.Status()`: "3 members are available" or
    "2 of 3 members are available, NAME is unhealthy" (", NAME has not started")."""
    if len(healthy) == len(members):
        return f"{len(members)} members are available"
    parts = [f"{len(healthy)} of {len(members)} members are available"]
    for member in members:
        if not member.get("clientURLs"):
            parts.append(f"{member_display_name(member)} has not started")
        elif member["ID"] not in healthy:
            parts.append(f"{member.get('name', '')} is unhealthy")
    return ", ".join(parts)


def member_conditions(members: list[Obj], healthy: set[int]) -> list[Obj]:
    """The three EtcdMembers* conditions for `members` of which `healthy` (IDs) answer."""
    message = member_status_message(members, healthy)
    unstarted = [m for m in members if not m.get("clientURLs")]
    unhealthy = [m for m in members if m.get("clientURLs") and m["ID"] not in healthy]
    quorate = len(healthy) > len(members) // 2
    return [
        {"type": "EtcdMembersAvailable", "status": "True" if quorate else "False",
         "reason": "EtcdQuorate" if quorate else "No quorum", "message": message},
        {"type": "EtcdMembersDegraded", "status": "True", "reason": "UnhealthyMembers", "message": message}
        if unhealthy or unstarted else
        {"type": "EtcdMembersDegraded", "status": "False", "reason": "AsExpected",
         "message": "No unhealthy members found"},
        {"type": "EtcdMembersProgressing", "status": "True", "reason": "MembersNotStarted",
         "message": message}
        if unstarted else
        {"type": "EtcdMembersProgressing", "status": "False", "reason": "AsExpected",
         "message": "No unstarted etcd members found"},
    ]  # fmt: skip


def _ssl(ctx: context.Context) -> ssl.SSLContext:
    found = ctx.memory.get("ssl")
    if isinstance(found, ssl.SSLContext):
        return found
    etcd_dir = ctx.spec.pki_dir / "etcd"
    made = ssl.create_default_context(cafile=str(ctx.spec.etcd_ca))
    made.load_cert_chain(
        str(etcd_dir / "apiserver-etcd-client.crt"), str(etcd_dir / "apiserver-etcd-client.key")
    )
    ctx.memory["ssl"] = made
    return made


def _healthy(ctx: context.Context, client_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{client_url}/health", context=_ssl(ctx), timeout=1.0) as resp:
            return bool(json.loads(resp.read()).get("health") == "true")
    except (OSError, ValueError):
        return False


def _members(ctx: context.Context) -> tuple[list[Obj], set[int]] | None:
    """(members, IDs of the healthy ones), or None when no member answers with quorum."""
    proc = ctx.etcdctl("member", "list", "-w", "json")
    if proc.returncode != 0:
        return None
    try:
        members: list[Obj] = json.loads(proc.stdout).get("members") or []
    except ValueError:
        return None
    healthy = {m["ID"] for m in members if m.get("clientURLs") and _healthy(ctx, m["clientURLs"][0])}
    return members, healthy


def _member_of(members: list[Obj], node: layout.NodeSpec) -> Obj | None:
    for member in members:
        if member.get("name") == node.name or node.etcd_peer_url in (member.get("peerURLs") or []):
            return member
    return None


# ---- secrets -----------------------------------------------------------------------------------
def _cert_paths(spec: layout.SimSpec, node: layout.NodeSpec, kind: str) -> tuple[Path, Path]:
    if kind in ("peer", "serving"):
        return spec.etcd_cert(node, "peer" if kind == "peer" else "serving")
    base = spec.pki_dir / "etcd"
    return base / f"etcd-{kind}-{node.name}.crt", base / f"etcd-{kind}-{node.name}.key"


def _etcd_ca(spec: layout.SimSpec) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = serialization.load_pem_private_key((spec.pki_dir / "etcd" / "ca.key").read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError(f"{spec.pki_dir / 'etcd' / 'ca.key'} is not an EC key: recreate the simulator's PKI")
    return x509.load_pem_x509_certificate(spec.etcd_ca.read_bytes()), key


def _ensure_certs(ctx: context.Context) -> None:
    """Certificates for every master of the spec (new machines appear in sim.json)."""
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None
    for node in ctx.spec.masters:
        for kind in _SECRET_KINDS:
            crt, key = _cert_paths(ctx.spec, node, kind)
            if crt.exists() and key.exists():
                continue
            if ca is None:
                ca = _etcd_ca(ctx.spec)
            pki.issue_pair(
                ca=ca, crt_path=crt, key_path=key, cn=f"system:etcd-{kind}:{node.name}",
                org=f"system:etcd-{kind}s", ips=[node.ip, "127.0.0.1"], dns=[node.name, "localhost"],
            )  # fmt: skip


def _sync_secrets(ctx: context.Context, nodes: list[Obj]) -> None:
    if time.monotonic() - float(ctx.memory.get("secrets_at", 0.0)) < _SECRETS_EVERY:
        return
    ctx.memory["secrets_at"] = time.monotonic()
    collection = ctx.api.path_for("v1", "Secret", namespace="openshift-etcd")
    have = {s["metadata"]["name"] for s in ctx.api.request("GET", collection).get("items", [])}
    specs = {n.name: n for n in ctx.spec.masters}
    for node_obj in nodes:
        node = specs.get(node_obj["metadata"]["name"])
        if node is None:
            continue
        for kind in _SECRET_KINDS:
            name = f"etcd-{kind}-{node.name}"
            if name in have:
                continue
            crt, key = _cert_paths(ctx.spec, node, kind)
            now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            secret = {
                "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                "metadata": {"name": name, "namespace": "openshift-etcd",
                             "annotations": {"auth.openshift.io/certificate-not-before": now,
                                             "auth.openshift.io/certificate-issuer": "etcd-signer"}},
                "data": {"tls.crt": base64.b64encode(crt.read_bytes()).decode(),
                         "tls.key": base64.b64encode(key.read_bytes()).decode()},
            }  # fmt: skip
            print(f"controllers: etcd: regenerating secret openshift-etcd/{name}", flush=True)
            try:
                ctx.api.create(secret)
            except apiclient.ApiError as exc:
                if exc.status != 409:
                    raise


# ---- installing a member -----------------------------------------------------------------------
def _etcd_running(ctx: context.Context, node: layout.NodeSpec) -> bool:
    pod = f"{_OPERAND.pod_prefix}-{node.name}"
    return any(c.get("pod") == pod and c.get("state") == "CONTAINER_RUNNING" for c in ctx.containers(node))


def _initial_cluster(spec: layout.SimSpec, members: list[Obj]) -> str:
    by_peer = {n.etcd_peer_url: n.name for n in spec.masters}
    parts = []
    for member in members:
        for url in member.get("peerURLs") or []:
            name = member.get("name") or by_peer.get(url) or member_display_name(member)
            parts.append(f"{name}={url}")
    return ",".join(sorted(parts))


class _Installer:
    """The etcd operand's hooks for `_revisions.rollout`, over this pass's member list."""

    def __init__(self, ctx: context.Context, members: list[Obj], healthy: set[int]) -> None:
        self.ctx = ctx
        self.members = members
        self.healthy = healthy

    def order(self, node: layout.NodeSpec, node_status: Obj) -> tuple[Any, ...]:
        member = _member_of(self.members, node)
        started = member is not None and bool(member.get("clientURLs"))
        healthy = member is not None and member["ID"] in self.healthy
        return (started, healthy, int(node_status.get("currentRevision") or 0), node.name)

    def ready(self, node: layout.NodeSpec) -> bool:
        member = _member_of(self.members, node)
        return (
            member is not None
            and member.get("name") == node.name
            and bool(member.get("clientURLs"))
            and _healthy(self.ctx, node.etcd_client_url)
        )

    def install(self, node: layout.NodeSpec, revision: int) -> bool:
        ctx, spec = self.ctx, self.ctx.spec
        member = _member_of(self.members, node)
        started = member is not None and bool(member.get("clientURLs"))
        data = spec.etcd_data_dir(node) / "member"
        if not started and data.exists():
            # Stale data of a member that is not in the cluster: stop etcd, move the data aside.
            _revisions.manifest_path(spec, node, _OPERAND).unlink(missing_ok=True)
            if _etcd_running(ctx, node):
                return False
            stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S")
            backup = spec.host_root(node) / "var" / "lib" / "etcd-backup" / f"member-{stamp}"
            backup.parent.mkdir(parents=True, exist_ok=True)
            print(f"controllers: etcd: moving the stale {data} of {node.name} to {backup}", flush=True)
            shutil.move(str(data), str(backup))
        members = self.members
        if member is None:
            endpoints = [m["clientURLs"][0] for m in members if m["ID"] in self.healthy]
            if not endpoints:
                return False
            proc = ctx.etcdctl(
                "member", "add", node.name, f"--peer-urls={node.etcd_peer_url}", "-w", "json",
                endpoints=endpoints,
            )  # fmt: skip
            if proc.returncode != 0:
                print(f"controllers: etcd: member add {node.name} failed: {proc.stderr.strip()}", flush=True)
                return False
            print(f"controllers: etcd: added member {node.name} ({node.etcd_peer_url})", flush=True)
            try:
                members = json.loads(proc.stdout).get("members") or members
            except ValueError:
                members = [*members, {"name": node.name, "peerURLs": [node.etcd_peer_url]}]
        hostfs.install_revision(
            spec, node, component="etcd", revision=revision,
            initial_cluster=_initial_cluster(spec, members), initial_cluster_state="existing",
        )  # fmt: skip
        return True


# ---- the pass ----------------------------------------------------------------------------------
def _write_member_conditions(ctx: context.Context, members: list[Obj], healthy: set[int]) -> None:
    cr = ctx.api.get(_revisions.API, "Etcd", "cluster")
    old = (cr.get("status") or {}).get("conditions") or []
    new = _revisions.merge_conditions(old, member_conditions(members, healthy), now=_revisions.now_ts())
    if new != old:
        path = ctx.api.path_for(_revisions.API, "Etcd", namespace=None, name="cluster")
        ctx.api.request(
            "PATCH",
            path + "/status",
            {"status": {"conditions": new}},
            content_type="application/merge-patch+json",
        )


def reconcile(ctx: context.Context) -> None:
    """One pass of the etcd operator (see the module docstring)."""
    found = _members(ctx)
    if found is None:
        return  # no quorum: the API is down too
    members, healthy = found
    _write_member_conditions(ctx, members, healthy)
    _ensure_certs(ctx)
    _sync_secrets(ctx, _revisions.master_nodes(ctx))
    installer = _Installer(ctx, members, healthy)
    hooks = _revisions.Hooks(install=installer.install, ready=installer.ready, order=installer.order)
    _revisions.rollout(ctx, _OPERAND, hooks)
