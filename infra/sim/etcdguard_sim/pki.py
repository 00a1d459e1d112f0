"""Certificates of the simulated cluster: an etcd CA with per-node peer and serving pairs, and an
API CA with the API server's serving pair and the `system:admin` client pair of the kubeconfig.

Layout under `DIR/pki/`, mirroring the names OpenShift uses on the hosts:
    etcd/ca.crt, etcd/ca.key
    etcd/etcd-peer-<node>.crt|key, etcd/etcd-serving-<node>.crt|key
    etcd/apiserver-etcd-client.crt|key
    api/ca.crt, api/ca.key, api/server.crt|key, api/admin.crt|key

EC P-256 keys keep generation fast (the whole set takes well under a second).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from etcdguard_sim import layout

__all__ = ["ensure_pki", "issue_pair"]

_VALIDITY = dt.timedelta(days=3650)


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = []
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _make_ca(directory: Path, cn: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    crt, key_path = directory / "ca.crt", directory / "ca.key"
    if crt.exists() and key_path.exists():
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return x509.load_pem_x509_certificate(crt.read_bytes()), key
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn, "openshift"))
        .issuer_name(_name(cn, "openshift"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    _write_key(key_path, key)
    _write_cert(crt, cert)
    return cert, key


def issue_pair(
    *,
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    crt_path: Path,
    key_path: Path,
    cn: str,
    org: str | None = None,
    ips: Sequence[str] = (),
    dns: Sequence[str] = (),
    server: bool = True,
    client: bool = True,
) -> None:
    """Write a leaf certificate and key signed by `ca` (skipped when both files exist)."""
    if crt_path.exists() and key_path.exists():
        return
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    usages = []
    if server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn, org))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    )
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    _write_key(key_path, key)
    _write_cert(crt_path, cert)


def ensure_pki(spec: layout.SimSpec) -> None:
    """Create every certificate the cluster needs; existing files are kept (restarts reuse them)."""
    etcd_dir = spec.pki_dir / "etcd"
    etcd_ca = _make_ca(etcd_dir, "etcd-signer")
    for node in spec.masters:
        for kind in ("peer", "serving"):
            crt, key = spec.etcd_cert(node, kind)
            issue_pair(
                ca=etcd_ca,
                crt_path=crt,
                key_path=key,
                cn=f"system:etcd-{kind}:{node.name}",
                org=f"system:etcd-{kind}s",
                ips=[node.ip, "127.0.0.1"],
                dns=[node.name, "localhost"],
            )
    issue_pair(
        ca=etcd_ca,
        crt_path=etcd_dir / "apiserver-etcd-client.crt",
        key_path=etcd_dir / "apiserver-etcd-client.key",
        cn="system:etcd-client:apiserver",
        org="system:etcd-clients",
        server=False,
    )
    api_dir = spec.pki_dir / "api"
    api_ca = _make_ca(api_dir, "kube-apiserver-signer")
    issue_pair(
        ca=api_ca,
        crt_path=api_dir / "server.crt",
        key_path=api_dir / "server.key",
        cn="kube-apiserver",
        ips=[spec.api_host],
        dns=[f"api.{spec.cluster_name}.example.com", "kubernetes.default.svc", "localhost"],
        client=False,
    )
    issue_pair(
        ca=api_ca,
        crt_path=api_dir / "admin.crt",
        key_path=api_dir / "admin.key",
        cn="system:admin",
        org="system:masters",
        server=False,
    )
