"""CSR validation: may etcdguard approve this kubelet CertificateSigningRequest?

After a cluster restore (guide 4.3.2) or with expired control-plane certificates (4.3.3), kubelets
file CSRs that the cluster-machine-approver refuses (the Node objects already exist). etcdguard
approves them itself, but only those that pass the checks the machine approver applies
(openshift/cluster-machine-approver `pkg/controller/csr_check.go`) and the kube-controller-manager
signers enforce:

client CSR (signer `kubernetes.io/kube-apiserver-client-kubelet`)
    subject O exactly [system:nodes], CN `system:node:<name>`, no SANs of any kind, usages exactly
    {digital signature, client auth} (+ key encipherment), requested by the node-bootstrapper
    service account with exactly its three groups, and one Machine whose InternalDNS is the node
    name. Unlike the machine approver, a client CSR for an existing Node is accepted (that is the
    recovery case) provided the Machine's nodeRef names that Node; for a Node that does not exist
    the Machine must have no nodeRef yet (a new machine).
serving CSR (signer `kubernetes.io/kubelet-serving`)
    requested by `system:node:<name>` with groups including system:nodes and system:authenticated,
    usages {digital signature, server auth} (+ key encipherment), CN equal to the username, O
    containing system:nodes, the Node registered, and one Machine whose nodeRef is that node,
    every DNS SAN among its InternalDNS/Hostname addresses and every IP SAN among its InternalIP
    addresses; e-mail, URI and other SANs are refused (the kubelet-serving signer refuses them too).
every CSR
    denied ones are never approved, approved ones are not approved again, other signers are
    refused, the request must parse, its public key must load and its signature must verify.

Everything here is pure: plain data in, a verdict out. `validate_csr` never raises on bad input;
a CSR it cannot read is refused with a reason. A verdict approves exactly when it has no reasons.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import ipaddress
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, Literal

from cryptography import exceptions, x509
from cryptography.x509.oid import NameOID

__all__ = [
    "CLIENT_SIGNER",
    "SERVING_SIGNER",
    "ApprovalPlan",
    "CsrKind",
    "CsrVerdict",
    "CsrView",
    "MachineAddresses",
    "plan_approvals",
    "validate_csr",
]

CLIENT_SIGNER = "kubernetes.io/kube-apiserver-client-kubelet"
SERVING_SIGNER = "kubernetes.io/kubelet-serving"

_NODE_USER_PREFIX = "system:node:"
_NODES_GROUP = "system:nodes"
_AUTHENTICATED_GROUP = "system:authenticated"
_BOOTSTRAPPER = "system:serviceaccount:openshift-machine-config-operator:node-bootstrapper"
_BOOTSTRAPPER_GROUPS = frozenset(
    {
        "system:serviceaccounts",
        "system:serviceaccounts:openshift-machine-config-operator",
        _AUTHENTICATED_GROUP,
    }
)
_CLIENT_USAGES = (
    frozenset({"digital signature", "client auth"}),
    frozenset({"digital signature", "key encipherment", "client auth"}),
)
_SERVING_USAGES = (
    frozenset({"digital signature", "server auth"}),
    frozenset({"digital signature", "key encipherment", "server auth"}),
)

_IP_TYPES = (ipaddress.IPv4Address, ipaddress.IPv6Address)

CsrKind = Literal["client", "serving", "other"]


def _strings(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        return ()
    return tuple(str(item) for item in value)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


@dataclasses.dataclass(frozen=True)
class MachineAddresses:
    """What a CSR is checked against: one Machine's name, its nodeRef and its addresses."""

    machine_name: str
    node_name: str | None
    internal_ips: tuple[str, ...] = ()
    internal_dns: tuple[str, ...] = ()
    hostnames: tuple[str, ...] = ()

    @classmethod
    def from_machine(cls, machine: Mapping[str, Any]) -> MachineAddresses:
        """Read a `machine.openshift.io/v1beta1` Machine object as the API returns it (a dict)."""
        name = _mapping(machine.get("metadata")).get("name")
        if not isinstance(name, str) or not name:
            raise ValueError(
                f"The Machine object {str(machine)[:120]!r} has no metadata.name; "
                "pass Machine objects exactly as the API returns them."
            )
        status = _mapping(machine.get("status"))
        node_ref = _mapping(status.get("nodeRef")).get("name")
        by_type: dict[str, list[str]] = {"InternalIP": [], "InternalDNS": [], "Hostname": []}
        addresses = status.get("addresses")
        for entry in addresses if isinstance(addresses, list) else []:
            entry_map = _mapping(entry)
            kind, address = entry_map.get("type"), entry_map.get("address")
            if kind in by_type and isinstance(address, str) and address:
                by_type[kind].append(address)
        return cls(
            machine_name=name,
            node_name=node_ref if isinstance(node_ref, str) and node_ref else None,
            internal_ips=tuple(by_type["InternalIP"]),
            internal_dns=tuple(by_type["InternalDNS"]),
            hostnames=tuple(by_type["Hostname"]),
        )


@dataclasses.dataclass(frozen=True)
class CsrView:
    """The parts of a `certificates.k8s.io/v1` CSR the validator reads; `request_pem` is decoded."""

    name: str
    signer_name: str
    username: str
    groups: tuple[str, ...]
    usages: tuple[str, ...]
    request_pem: bytes
    approved: bool
    denied: bool
    issued: bool

    @property
    def pending(self) -> bool:
        """Neither approved nor denied: the only state in which a CSR can be approved."""
        return not (self.approved or self.denied)

    @classmethod
    def from_object(cls, csr: Mapping[str, Any]) -> CsrView:
        """Read a CSR object dict as the API serves it (`spec.request` is base64 of the PEM).

        A request that is not valid base64 becomes empty bytes, which `validate_csr` refuses."""
        name = _mapping(csr.get("metadata")).get("name")
        if not isinstance(name, str) or not name:
            raise ValueError(
                f"The CSR object {str(csr)[:120]!r} has no metadata.name; "
                "pass CSR objects exactly as the API returns them."
            )
        spec, status = _mapping(csr.get("spec")), _mapping(csr.get("status"))
        request = spec.get("request")
        try:
            pem = base64.b64decode(request, validate=True) if isinstance(request, str | bytes) else b""
        except (binascii.Error, ValueError):
            pem = b""
        conditions = [_mapping(c) for c in status.get("conditions") or [] if isinstance(c, Mapping)]

        def has(kind: str) -> bool:
            return any(c.get("type") == kind and c.get("status", "True") == "True" for c in conditions)

        return cls(
            name=name,
            signer_name=str(spec.get("signerName") or ""),
            username=str(spec.get("username") or ""),
            groups=_strings(spec.get("groups")),
            usages=_strings(spec.get("usages")),
            request_pem=pem,
            approved=has("Approved"),
            denied=has("Denied"),
            issued=bool(status.get("certificate")),
        )


@dataclasses.dataclass(frozen=True)
class CsrVerdict:
    """The decision on one CSR. `approve` is True exactly when `reasons` is empty; each reason is a
    sentence naming the CSR and what is wrong with it."""

    name: str
    approve: bool
    node_name: str | None
    kind: CsrKind
    reasons: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class ApprovalPlan:
    """Pending CSRs split into those to approve and those to leave alone, each ordered by name."""

    approve: tuple[CsrVerdict, ...]
    refuse: tuple[CsrVerdict, ...]


@dataclasses.dataclass(frozen=True)
class _Request:
    common_names: tuple[str, ...]
    organizations: tuple[str, ...]
    dns_names: tuple[str, ...]
    ips: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]
    other_sans: tuple[str, ...]  # e-mail, URI and any other kind, as text
    problems: tuple[str, ...]  # unloadable key, bad signature


def _kind(signer_name: str) -> CsrKind:
    if signer_name == CLIENT_SIGNER:
        return "client"
    if signer_name == SERVING_SIGNER:
        return "serving"
    return "other"


def _after_prefix(value: str, prefix: str) -> str | None:
    if not value.startswith(prefix):
        return None
    return value[len(prefix) :] or None


def _parse_request(name: str, pem: bytes) -> _Request | str:
    try:
        request = x509.load_pem_x509_csr(pem)
        subject = request.subject
        try:
            sans = request.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            general_names: list[x509.GeneralName] = list(sans)
        except x509.ExtensionNotFound:
            general_names = []
    except (ValueError, x509.DuplicateExtension) as exc:
        return (
            f"CSR {name}: spec.request is not a readable PEM certificate request ({exc}), "
            "so it cannot be checked."
        )
    problems: list[str] = []
    try:
        request.public_key()
    except (ValueError, TypeError, exceptions.UnsupportedAlgorithm) as exc:
        problems.append(f"CSR {name}: the request's public key cannot be loaded ({exc}).")
    else:
        if not request.is_signature_valid:
            problems.append(
                f"CSR {name}: the request's signature does not verify against its own public key, "
                "so its contents were altered after signing."
            )
    dns_names: list[str] = []
    ips: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    others: list[str] = []
    for san in general_names:
        if isinstance(san, x509.DNSName):
            dns_names.append(san.value)
        elif isinstance(san, x509.IPAddress) and isinstance(san.value, _IP_TYPES):
            ips.append(san.value)
        else:
            others.append(f"{type(san).__name__} {san.value}")
    return _Request(
        common_names=tuple(str(a.value) for a in subject.get_attributes_for_oid(NameOID.COMMON_NAME)),
        organizations=tuple(str(a.value) for a in subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)),
        dns_names=tuple(dns_names),
        ips=tuple(ips),
        other_sans=tuple(others),
        problems=tuple(problems),
    )


def _one_cn(name: str, request: _Request) -> tuple[str | None, list[str]]:
    if len(request.common_names) != 1:
        return None, [
            f"CSR {name}: the subject has {len(request.common_names)} common names "
            f"{list(request.common_names)}; a kubelet request has exactly one."
        ]
    return request.common_names[0], []


def _usages_reason(name: str, csr: CsrView, allowed: tuple[frozenset[str], ...], what: str) -> list[str]:
    if len(csr.usages) == len(set(csr.usages)) and frozenset(csr.usages) in allowed:
        return []
    options = " or ".join(str(sorted(option)) for option in allowed)
    return [f"CSR {name}: usages {list(csr.usages)} are not those of a {what} ({options})."]


def _single(name: str, candidates: list[MachineAddresses], how: str) -> MachineAddresses | str:
    if not candidates:
        return f"CSR {name}: no Machine has {how}; check `oc get machines -n openshift-machine-api -o wide`."
    if len(candidates) > 1:
        names = sorted(m.machine_name for m in candidates)
        return f"CSR {name}: several Machines have {how} ({', '.join(names)}), so the owner is ambiguous."
    return candidates[0]


def _client_reasons(
    csr: CsrView,
    request: _Request,
    *,
    machines: Sequence[MachineAddresses],
    nodes_existing: Collection[str],
) -> tuple[str | None, list[str]]:
    name = csr.name
    cn, reasons = _one_cn(name, request)
    node = _after_prefix(cn or "", _NODE_USER_PREFIX)
    if request.organizations != (_NODES_GROUP,):
        reasons.append(
            f"CSR {name}: subject organization {list(request.organizations)} must be exactly "
            f"['{_NODES_GROUP}'] for a kubelet client certificate."
        )
    if cn is not None and node is None:
        reasons.append(
            f'CSR {name}: subject common name "{cn}" must be "system:node:<node name>" '
            "for a kubelet client certificate."
        )
    sans = [*request.dns_names, *(str(ip) for ip in request.ips), *request.other_sans]
    if sans:
        reasons.append(
            f"CSR {name}: a kubelet client certificate carries no subject alternative names, "
            f"but the request asks for {sans}."
        )
    reasons += _usages_reason(name, csr, _CLIENT_USAGES, "kubelet client certificate")
    if csr.username != _BOOTSTRAPPER:
        reasons.append(
            f'CSR {name}: it was requested by "{csr.username}", not by the node-bootstrapper '
            f'"{_BOOTSTRAPPER}"; only bootstrap client CSRs are approved here '
            "(a node renewing its own client certificate is approved by kube-controller-manager)."
        )
    if frozenset(csr.groups) != _BOOTSTRAPPER_GROUPS or len(csr.groups) != len(_BOOTSTRAPPER_GROUPS):
        reasons.append(
            f"CSR {name}: groups {list(csr.groups)} must be exactly {sorted(_BOOTSTRAPPER_GROUPS)} "
            "for a node-bootstrapper request."
        )
    if node is None:
        return None, reasons
    found = _single(name, [m for m in machines if node in m.internal_dns], f'InternalDNS "{node}"')
    if isinstance(found, str):
        reasons.append(found)
    elif node in nodes_existing and found.node_name != node:
        reasons.append(
            f"CSR {name}: node {node} exists but machine {found.machine_name} is not linked to it "
            f"(nodeRef {found.node_name or 'unset'}); wait until the machine's nodeRef names the node."
        )
    elif node not in nodes_existing and found.node_name is not None:
        reasons.append(
            f"CSR {name}: node {node} does not exist but machine {found.machine_name} already has "
            f"nodeRef {found.node_name}; a client certificate for a new node is approved only for a "
            "machine without a node."
        )
    return node, reasons


def _san_reasons(name: str, node: str, request: _Request, machine: MachineAddresses) -> list[str]:
    reasons = []
    where = f"machine {machine.machine_name} (node {node})"
    dns_known = [a.rstrip(".") for a in (*machine.internal_dns, *machine.hostnames)]
    for san in request.dns_names:
        if san and not any(san.casefold() == known.casefold() for known in dns_known):
            reasons.append(
                f'CSR {name}: DNS SAN "{san}" is not an address of {where}; its DNS names are {dns_known}.'
            )
    ips_known = set()
    for address in machine.internal_ips:
        try:
            ips_known.add(ipaddress.ip_address(address))
        except ValueError:
            continue
    for ip in request.ips:
        if ip not in ips_known:
            reasons.append(
                f'CSR {name}: IP SAN "{ip}" is not an address of {where}; '
                f"its InternalIP addresses are {list(machine.internal_ips)}."
            )
    if request.other_sans:
        reasons.append(
            f"CSR {name}: a kubelet serving certificate carries only DNS and IP SANs, "
            f"but the request also asks for {list(request.other_sans)}."
        )
    return reasons


def _serving_reasons(
    csr: CsrView,
    request: _Request,
    *,
    machines: Sequence[MachineAddresses],
    nodes_existing: Collection[str],
) -> tuple[str | None, list[str]]:
    name = csr.name
    node = _after_prefix(csr.username, _NODE_USER_PREFIX)
    reasons: list[str] = []
    if node is None:
        reasons.append(
            f'CSR {name}: it was requested by "{csr.username}", which is not a node '
            '("system:node:<node name>"); a serving certificate is approved only for the node asking.'
        )
    missing = sorted({_NODES_GROUP, _AUTHENTICATED_GROUP} - set(csr.groups))
    if missing:
        reasons.append(f"CSR {name}: groups {list(csr.groups)} lack {missing}, which a node always has.")
    reasons += _usages_reason(name, csr, _SERVING_USAGES, "kubelet serving certificate")
    cn, cn_reasons = _one_cn(name, request)
    reasons += cn_reasons
    if cn is not None and cn != csr.username:
        reasons.append(
            f'CSR {name}: subject common name "{cn}" differs from the requesting user "{csr.username}"; '
            "a node may only ask for its own serving certificate."
        )
    if _NODES_GROUP not in request.organizations:
        reasons.append(
            f"CSR {name}: subject organization {list(request.organizations)} does not include "
            f"'{_NODES_GROUP}'."
        )
    if node is None:
        return None, reasons
    if node not in nodes_existing:
        reasons.append(
            f"CSR {name}: node {node} is not registered; a serving certificate is approved only for an "
            "existing Node (approve its client CSR first and wait for it to join)."
        )
    found = _single(name, [m for m in machines if m.node_name == node], f"nodeRef {node}")
    if isinstance(found, str):
        reasons.append(found)
    else:
        reasons += _san_reasons(name, node, request, found)
    return node, reasons


def validate_csr(
    csr: CsrView,
    *,
    machines: Sequence[MachineAddresses],
    nodes_existing: Collection[str],
) -> CsrVerdict:
    """Decide whether `csr` may be approved, given the cluster's Machines and the names of its Nodes."""
    kind = _kind(csr.signer_name)
    serving_node = _after_prefix(csr.username, _NODE_USER_PREFIX) if kind == "serving" else None

    def refuse(node: str | None, *reasons: str) -> CsrVerdict:
        return CsrVerdict(name=csr.name, approve=False, node_name=node, kind=kind, reasons=reasons)

    if csr.denied:
        return refuse(serving_node, f"CSR {csr.name} is denied, and a denied CSR is never approved.")
    if csr.approved:
        return refuse(serving_node, f"CSR {csr.name} is already approved; there is nothing to approve.")
    if kind == "other":
        return refuse(
            None,
            f'CSR {csr.name} has signer "{csr.signer_name}"; etcdguard approves only kubelet CSRs '
            f"({CLIENT_SIGNER} and {SERVING_SIGNER}).",
        )
    request = _parse_request(csr.name, csr.request_pem)
    if isinstance(request, str):
        return refuse(serving_node, request)
    check = _client_reasons if kind == "client" else _serving_reasons
    node, reasons = check(csr, request, machines=machines, nodes_existing=nodes_existing)
    reasons = [*request.problems, *reasons]
    return CsrVerdict(name=csr.name, approve=not reasons, node_name=node, kind=kind, reasons=tuple(reasons))


def plan_approvals(
    csrs: Iterable[CsrView],
    *,
    machines: Sequence[MachineAddresses],
    nodes_existing: Collection[str],
) -> ApprovalPlan:
    """Validate every pending CSR (neither approved nor denied), ordered by name."""
    pending = sorted((c for c in csrs if c.pending), key=lambda c: c.name)
    verdicts = [validate_csr(c, machines=machines, nodes_existing=nodes_existing) for c in pending]
    return ApprovalPlan(
        approve=tuple(v for v in verdicts if v.approve),
        refuse=tuple(v for v in verdicts if not v.approve),
    )
