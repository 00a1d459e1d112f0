"""The kubelet's side of the CSR cycle: real PEM certificate signing requests and CSR API objects.

A kubelet that needs a client certificate (first boot, or its certificate expired) asks for one
as the node-bootstrapper service account; once it is a node it asks for a serving certificate
whose SANs are its own addresses. Both requests are real PKCS#10 requests signed with a fresh
EC P-256 key, as the kubelet generates them, so the product's validator parses and verifies
exactly what a real cluster would hand it.

The keyword arguments (`organization`, `common_name`, `dns_names`, `ips`, `emails`, `uris`) exist
so tests can build the bad requests a validator must refuse (wrong organisation, extra SAN, ...).
The constants are written out here on purpose rather than imported from the product: the
simulator states what a kubelet does independently of what the validator expects.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
from collections.abc import Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = [
    "BOOTSTRAPPER_GROUPS",
    "BOOTSTRAPPER_USERNAME",
    "CLIENT_SIGNER",
    "CLIENT_USAGES",
    "NODE_GROUPS",
    "SERVING_SIGNER",
    "SERVING_USAGES",
    "csr_object",
    "make_client_csr",
    "make_serving_csr",
]

CLIENT_SIGNER = "kubernetes.io/kube-apiserver-client-kubelet"
SERVING_SIGNER = "kubernetes.io/kubelet-serving"
BOOTSTRAPPER_USERNAME = "system:serviceaccount:openshift-machine-config-operator:node-bootstrapper"
BOOTSTRAPPER_GROUPS = (
    "system:serviceaccounts",
    "system:serviceaccounts:openshift-machine-config-operator",
    "system:authenticated",
)
NODE_GROUPS = ("system:nodes", "system:authenticated")
CLIENT_USAGES = ("digital signature", "key encipherment", "client auth")
SERVING_USAGES = ("digital signature", "key encipherment", "server auth")

_NODES_ORG = ("system:nodes",)


def _build(
    *,
    organization: Sequence[str],
    common_name: str,
    dns_names: Sequence[str],
    ips: Sequence[str],
    emails: Sequence[str],
    uris: Sequence[str],
) -> bytes:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organization]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attrs))
    sans: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    sans += [x509.RFC822Name(email) for email in emails]
    sans += [x509.UniformResourceIdentifier(uri) for uri in uris]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    key = ec.generate_private_key(ec.SECP256R1())
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def make_client_csr(
    node_name: str,
    *,
    organization: Sequence[str] = _NODES_ORG,
    common_name: str | None = None,
    dns_names: Sequence[str] = (),
    ips: Sequence[str] = (),
    emails: Sequence[str] = (),
    uris: Sequence[str] = (),
) -> bytes:
    """PEM of the kubelet's client request: `O=system:nodes, CN=system:node:<node_name>`, no SANs.

    The keyword arguments override the subject or add SANs, to build requests that must be refused.
    """
    return _build(
        organization=organization,
        common_name=f"system:node:{node_name}" if common_name is None else common_name,
        dns_names=dns_names,
        ips=ips,
        emails=emails,
        uris=uris,
    )


def make_serving_csr(
    node_name: str,
    *,
    ips: Sequence[str],
    dns_names: Sequence[str],
    organization: Sequence[str] = _NODES_ORG,
    common_name: str | None = None,
    emails: Sequence[str] = (),
    uris: Sequence[str] = (),
) -> bytes:
    """PEM of the kubelet's serving request: `O=system:nodes, CN=system:node:<node_name>`, with the
    node's addresses as SANs (DNS names first, then IPs, as the kubelet orders them)."""
    return _build(
        organization=organization,
        common_name=f"system:node:{node_name}" if common_name is None else common_name,
        dns_names=dns_names,
        ips=ips,
        emails=emails,
        uris=uris,
    )


def csr_object(
    name: str,
    *,
    pem: bytes,
    signer_name: str,
    username: str,
    groups: Sequence[str],
    usages: Sequence[str],
    conditions: Sequence[dict[str, Any]] = (),
    creation_timestamp: dt.datetime | None = None,
) -> dict[str, Any]:
    """A `certificates.k8s.io/v1` CertificateSigningRequest object as the API serves it, with
    `spec.request` the base64 of `pem`. `conditions` (e.g. an Approved or Denied entry) go into
    `status.conditions`; without them the CSR is pending."""
    metadata: dict[str, Any] = {"name": name}
    if creation_timestamp is not None:
        metadata["creationTimestamp"] = creation_timestamp.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    status: dict[str, Any] = {}
    if conditions:
        status["conditions"] = [dict(condition) for condition in conditions]
    return {
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": metadata,
        "spec": {
            "signerName": signer_name,
            "username": username,
            "groups": list(groups),
            "usages": list(usages),
            "request": base64.b64encode(pem).decode("ascii"),
        },
        "status": status,
    }
