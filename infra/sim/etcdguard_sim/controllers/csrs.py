"""The kubelets' side of the CSR cycle, and the kube-controller-manager's signer.

A kubelet needs a new client certificate when
- its certificates expired (`DIR/run/certs-expired/<node>`, written by the fault injector) and
  it (re)started afterwards: `kubelet.json` `restarted_at` later than the fault file (a worker,
  which has no kubelet here: its power file written after the fault file), or
- it boots on a new Machine (phase `Provisioned`, no Node object yet).
It then files a pending client CSR (`csr-xxxxx`, a real PEM from `csrgen`, as the
node-bootstrapper). One per boot: while it is pending nothing more is filed; a denied one is left
alone and the kubelet stays without a certificate until it is restarted again.

Once a client CSR is approved (by an admin or etcdguard: the simulator never approves; the
machine approver refuses in these situations) the signer issues it (`status.certificate`, a
real certificate signed by the API CA, `DIR/pki/api`), the fault file goes (client certificate
renewed), the Node object is created if it does not exist (new Machine), and the kubelet files
its serving CSR (`system:node:<name>`, its InternalIP and name as SANs). When that one is
approved too it is issued and the node may become Ready (`nodes`).

Which CSR belongs to which node: a client CSR by the CN of its request, a serving CSR by its
username; "this boot's" CSRs are those created at or after the boot (whole seconds, as the API
writes `creationTimestamp`). Everything is read back from the API and the host files each pass,
so a restarted controller carries on.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import secrets
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from etcdguard_sim import layout
from etcdguard_sim.api import client as apiclient
from etcdguard_sim.controllers import context
from etcdguard_sim.hosts import csrgen
from etcdguard_sim.seed import core as _seed_core

__all__ = ["NOT_READY_MESSAGE", "CsrState", "awaiting_serving", "list_csrs", "reconcile"]

_API = "certificates.k8s.io/v1"
_KIND = "CertificateSigningRequest"
_NODE_PREFIX = "system:node:"
_ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"
_CERT_VALIDITY = dt.timedelta(days=30)

Obj = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class CsrState:
    """One kubelet CSR as this controller reads it."""

    name: str
    kind: Literal["client", "serving"]
    node: str
    created: float  # unix time, whole seconds
    approved: bool
    denied: bool
    issued: bool
    obj: Obj

    @property
    def pending(self) -> bool:
        return not (self.approved or self.denied)


def _created(obj: Obj) -> float:
    raw = obj["metadata"].get("creationTimestamp") or "1970-01-01T00:00:00Z"
    return dt.datetime.strptime(raw, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp()


def _client_node(request_b64: str, cache: dict[str, str | None], key: str) -> str | None:
    if key in cache:
        return cache[key]
    node: str | None = None
    try:
        request = x509.load_pem_x509_csr(base64.b64decode(request_b64))
        cns = request.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        cn = str(cns[0].value) if cns else ""
        node = cn[len(_NODE_PREFIX) :] if cn.startswith(_NODE_PREFIX) else None
    except (ValueError, TypeError):
        node = None  # the seed's placeholders, or a request this kubelet did not file
    cache[key] = node
    return node


def list_csrs(ctx: context.Context) -> list[CsrState]:
    """The cluster's kubelet CSRs whose node can be told (seeded placeholders are skipped)."""
    items = ctx.api.request("GET", ctx.api.path_for(_API, _KIND, namespace=None)).get("items") or []
    cache: dict[str, str | None] = ctx.memory.setdefault("csr-nodes", {})
    out: list[CsrState] = []
    for obj in items:
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        signer = spec.get("signerName")
        if signer == csrgen.CLIENT_SIGNER:
            kind: Literal["client", "serving"] = "client"
            node = _client_node(
                spec.get("request", ""), cache, obj["metadata"].get("uid") or obj["metadata"]["name"]
            )
        elif signer == csrgen.SERVING_SIGNER:
            kind = "serving"
            user = str(spec.get("username", ""))
            node = user[len(_NODE_PREFIX) :] if user.startswith(_NODE_PREFIX) else None
        else:
            continue
        if not node:
            continue
        conditions = status.get("conditions") or []

        def has(kind_: str, conditions: list[Obj] = conditions) -> bool:
            return any(c.get("type") == kind_ and c.get("status", "True") == "True" for c in conditions)

        out.append(
            CsrState(
                name=obj["metadata"]["name"],
                kind=kind,
                node=node,
                created=_created(obj),
                approved=has("Approved"),
                denied=has("Denied"),
                issued=bool(status.get("certificate")),
                obj=obj,
            )
        )
    return out


def _latest(csrs: list[CsrState], *, kind: str, node: str, since: float = 0.0) -> list[CsrState]:
    mine = [c for c in csrs if c.kind == kind and c.node == node and c.created >= since]
    return sorted(mine, key=lambda c: (c.created, c.name))


def awaiting_serving(csrs: list[CsrState]) -> set[str]:
    """Nodes whose latest client certificate was issued but whose serving CSR since then was not."""
    out: set[str] = set()
    for node in {c.node for c in csrs if c.kind == "client"}:
        issued = [c for c in _latest(csrs, kind="client", node=node) if c.issued]
        if not issued:
            continue
        serving = _latest(csrs, kind="serving", node=node, since=issued[-1].created)
        if not any(c.issued for c in serving):
            out.add(node)
    return out


# ---- triggers --------------------------------------------------------------------------------
def _fault(spec: layout.SimSpec, node: layout.NodeSpec) -> Path:
    return spec.run_dir / "certs-expired" / node.name


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _boot_time(ctx: context.Context, node: layout.NodeSpec) -> float | None:
    """When the node's kubelet last started, or None when it is not running."""
    if not ctx.powered(node):
        return None
    if node.role == "master":
        state = ctx.kubelet_state(node)
        if state.get("state") != "active" or not isinstance(state.get("restarted_at"), int | float):
            return None
        return float(state["restarted_at"])
    return _mtime(ctx.spec.run_dir / "power" / node.name) or 0.0


def _client_wanted(
    ctx: context.Context, node: layout.NodeSpec, *, machines: dict[str, Obj], nodes: set[str]
) -> float | None:
    """The boot time from which the node's kubelet asks for a client certificate, or None."""
    boot = _boot_time(ctx, node)
    if boot is None:
        return None
    expired_at = _mtime(_fault(ctx.spec, node))
    if expired_at is not None:
        return boot if boot > expired_at else None
    machine = machines.get(node.machine_name)
    if node.name not in nodes and machine is not None:
        status = machine.get("status") or {}
        if status.get("phase") == "Provisioned" and not status.get("nodeRef"):
            return boot
    return None


# ---- the signer ------------------------------------------------------------------------------
def _api_ca(spec: layout.SimSpec) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    api_dir = spec.pki_dir / "api"
    key = serialization.load_pem_private_key((api_dir / "ca.key").read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError(f"{api_dir / 'ca.key'} is not an EC key: recreate the PKI with `etcdguard-sim up`")
    return x509.load_pem_x509_certificate((api_dir / "ca.crt").read_bytes()), key


def _sign(spec: layout.SimSpec, csr: CsrState) -> bytes:
    """A real certificate for the request, signed by the API CA, as the kube-controller-manager does."""
    request = x509.load_pem_x509_csr(base64.b64decode(csr.obj["spec"]["request"]))
    ca_cert, ca_key = _api_ca(spec)
    now = dt.datetime.now(dt.UTC)
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if csr.kind == "client" else ExtendedKeyUsageOID.SERVER_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(request.subject)
        .issuer_name(ca_cert.subject)
        .public_key(request.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _CERT_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if csr.kind == "serving":
        try:
            sans = request.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            sans = None
        if sans is not None:
            builder = builder.add_extension(sans, critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM)


def _issue(ctx: context.Context, csr: CsrState) -> None:
    obj = dict(csr.obj)
    obj["status"] = {
        **(obj.get("status") or {}),
        "certificate": base64.b64encode(_sign(ctx.spec, csr)).decode(),
    }
    path = ctx.api.path_for(_API, _KIND, namespace=None, name=csr.name)
    ctx.api.request("PUT", path + "/status", obj)
    print(f"csrs: issued {csr.kind} certificate of {csr.node} ({csr.name})", flush=True)


def _create_csr(ctx: context.Context, node: layout.NodeSpec, kind: Literal["client", "serving"]) -> None:
    name = "csr-" + "".join(secrets.choice(_ALPHANUMS) for _ in range(5))
    if kind == "client":
        obj = csrgen.csr_object(
            name,
            pem=csrgen.make_client_csr(node.name),
            signer_name=csrgen.CLIENT_SIGNER,
            username=csrgen.BOOTSTRAPPER_USERNAME,
            groups=csrgen.BOOTSTRAPPER_GROUPS,
            usages=csrgen.CLIENT_USAGES,
        )
    else:
        obj = csrgen.csr_object(
            name,
            pem=csrgen.make_serving_csr(node.name, ips=[node.ip], dns_names=[node.name]),
            signer_name=csrgen.SERVING_SIGNER,
            username=_NODE_PREFIX + node.name,
            groups=csrgen.NODE_GROUPS,
            usages=csrgen.SERVING_USAGES,
        )
    del obj["status"]
    ctx.api.request("POST", ctx.api.path_for(_API, _KIND, namespace=None), obj)
    print(f"csrs: {node.name} filed {kind} CSR {name}", flush=True)


def _node_object(spec: layout.SimSpec, node: layout.NodeSpec) -> Obj:
    """The Node a new kubelet registers: labels, providerID and addresses as the seeded ones,
    Ready False until its serving certificate is issued."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    obj = _seed_core.node_object(spec, node, clock=_seed_core.Clock(now))
    meta = obj["metadata"]
    meta.pop("uid", None)
    meta["creationTimestamp"] = _seed_core.ts(now)
    for cond in obj["status"]["conditions"]:
        cond["lastHeartbeatTime"] = cond["lastTransitionTime"] = _seed_core.ts(now)
        if cond["type"] == "Ready":
            cond.update(status="False", reason="KubeletNotReady", message=NOT_READY_MESSAGE)
    return obj


NOT_READY_MESSAGE = (
    "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady "
    "message:Network plugin returns error: No CNI configuration file in /etc/kubernetes/cni/net.d/. "
    "Has your network provider started?"
)


def _after_client_issued(ctx: context.Context, node: layout.NodeSpec, nodes: set[str]) -> None:
    _fault(ctx.spec, node).unlink(missing_ok=True)
    if node.name not in nodes:
        try:
            ctx.api.create(_node_object(ctx.spec, node))
        except apiclient.ApiError as exc:
            if exc.status != 409:
                raise
        nodes.add(node.name)
        print(f"csrs: node {node.name} registered", flush=True)


# ---- the pass ---------------------------------------------------------------------------------
def _client_cycle(
    ctx: context.Context, node: layout.NodeSpec, csrs: list[CsrState], *, boot: float, nodes: set[str]
) -> bool:
    """One step of the client half; True when it wrote a CSR."""
    mine = _latest(csrs, kind="client", node=node.name, since=float(int(boot)))
    if any(c.issued for c in mine):
        _after_client_issued(ctx, node, nodes)
        return False
    approved = [c for c in mine if c.approved and not c.denied]
    if approved:
        _issue(ctx, approved[-1])
        _after_client_issued(ctx, node, nodes)
        return True
    if mine:
        return False  # pending (wait for an approver) or denied (left alone until the next restart)
    _create_csr(ctx, node, "client")
    return True


def _serving_cycle(
    ctx: context.Context, node: layout.NodeSpec, csrs: list[CsrState], *, nodes: set[str]
) -> None:
    issued = [c for c in _latest(csrs, kind="client", node=node.name) if c.issued]
    if not issued or node.name not in nodes or _fault(ctx.spec, node).exists():
        return
    mine = _latest(csrs, kind="serving", node=node.name, since=issued[-1].created)
    if any(c.issued for c in mine):
        return
    approved = [c for c in mine if c.approved and not c.denied]
    if approved:
        _issue(ctx, approved[-1])
        return
    if mine:
        return
    if _boot_time(ctx, node) is not None:
        _create_csr(ctx, node, "serving")


def reconcile(ctx: context.Context) -> None:
    machines_list = ctx.api.request(
        "GET", ctx.api.path_for("machine.openshift.io/v1beta1", "Machine", namespace="openshift-machine-api")
    )
    machines = {m["metadata"]["name"]: m for m in machines_list.get("items") or []}
    nodes = {n["metadata"]["name"] for n in ctx.api.request("GET", "/api/v1/nodes").get("items") or []}
    csrs = list_csrs(ctx)
    for node in ctx.spec.nodes:
        boot = _client_wanted(ctx, node, machines=machines, nodes=nodes)
        if boot is not None and _client_cycle(ctx, node, csrs, boot=boot, nodes=nodes):
            csrs = list_csrs(ctx)
        _serving_cycle(ctx, node, csrs, nodes=nodes)
