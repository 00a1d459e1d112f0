"""The CSR validator against real PEM requests built the way a kubelet builds them (csrgen)."""

from __future__ import annotations

import base64
import itertools
from collections.abc import Collection, Sequence
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from etcdguard_sim.hosts import csrgen
from hypothesis import given, settings
from hypothesis import strategies as st

from etcdguard.core import csr

pytestmark = pytest.mark.unit

NODE = "ip-10-0-1-1.ec2.internal"
OTHER = "ip-10-0-2-2.ec2.internal"
NEW = "ip-10-0-3-3.ec2.internal"


def _machine(name: str, node: str, ip: str, *, linked: bool = True) -> dict[str, Any]:
    status: dict[str, Any] = {
        "phase": "Running" if linked else "Provisioned",
        "addresses": [
            {"type": "InternalIP", "address": ip},
            {"type": "InternalDNS", "address": node},
            {"type": "Hostname", "address": node.split(".")[0]},
        ],
    }
    if linked:
        status["nodeRef"] = {"kind": "Node", "name": node, "uid": "u-" + name}
    return {
        "apiVersion": "machine.openshift.io/v1beta1",
        "kind": "Machine",
        "metadata": {"name": name, "namespace": "openshift-machine-api"},
        "status": status,
    }


MACHINE = csr.MachineAddresses.from_machine(_machine("demo-x-master-0", NODE, "10.0.1.1"))
OTHER_MACHINE = csr.MachineAddresses.from_machine(_machine("demo-x-master-1", OTHER, "10.0.2.2"))
NEW_MACHINE = csr.MachineAddresses.from_machine(_machine("demo-x-master-3", NEW, "10.0.3.3", linked=False))
MACHINES = (MACHINE, OTHER_MACHINE, NEW_MACHINE)
NODES = frozenset({NODE, OTHER})


def _view(
    name: str,
    pem: bytes,
    *,
    signer: str,
    username: str,
    groups: Sequence[str],
    usages: Sequence[str],
    conditions: Sequence[dict[str, Any]] = (),
) -> csr.CsrView:
    obj = csrgen.csr_object(
        name,
        pem=pem,
        signer_name=signer,
        username=username,
        groups=groups,
        usages=usages,
        conditions=conditions,
    )
    return csr.CsrView.from_object(obj)


def client(
    name: str = "csr-client",
    *,
    node: str = NODE,
    pem: bytes | None = None,
    username: str = csrgen.BOOTSTRAPPER_USERNAME,
    groups: Sequence[str] = csrgen.BOOTSTRAPPER_GROUPS,
    usages: Sequence[str] = csrgen.CLIENT_USAGES,
    conditions: Sequence[dict[str, Any]] = (),
) -> csr.CsrView:
    return _view(
        name,
        csrgen.make_client_csr(node) if pem is None else pem,
        signer=csrgen.CLIENT_SIGNER,
        username=username,
        groups=groups,
        usages=usages,
        conditions=conditions,
    )


def serving(
    name: str = "csr-serving",
    *,
    node: str = NODE,
    pem: bytes | None = None,
    username: str | None = None,
    groups: Sequence[str] = csrgen.NODE_GROUPS,
    usages: Sequence[str] = csrgen.SERVING_USAGES,
    conditions: Sequence[dict[str, Any]] = (),
) -> csr.CsrView:
    if pem is None:
        pem = csrgen.make_serving_csr(node, ips=["10.0.1.1"], dns_names=[NODE, "ip-10-0-1-1"])
    return _view(
        name,
        pem,
        signer=csrgen.SERVING_SIGNER,
        username=f"system:node:{node}" if username is None else username,
        groups=groups,
        usages=usages,
        conditions=conditions,
    )


def check(
    view: csr.CsrView,
    *,
    machines: Sequence[csr.MachineAddresses] = MACHINES,
    nodes: Collection[str] = NODES,
) -> csr.CsrVerdict:
    verdict = csr.validate_csr(view, machines=machines, nodes_existing=nodes)
    assert verdict.approve == (not verdict.reasons)  # the documented invariant
    assert all(reason.startswith(f"CSR {view.name}") for reason in verdict.reasons)
    return verdict


def refused_for(view: csr.CsrView, fragment: str, **kwargs: Any) -> csr.CsrVerdict:
    verdict = check(view, **kwargs)
    assert not verdict.approve
    assert any(fragment in reason for reason in verdict.reasons), verdict.reasons
    return verdict


def _pem(der: bytes) -> bytes:
    body = base64.encodebytes(der).replace(b"\n", b"")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    armour = b"-----%s CERTIFICATE REQUEST-----"
    return b"\n".join([armour % b"BEGIN", *lines, armour % b"END", b""])


def _der(pem: bytes) -> bytes:
    return x509.load_pem_x509_csr(pem).public_bytes(serialization.Encoding.DER)


ABSENT = "evil.example.com"
_APPROVED = {"type": "Approved", "status": "True", "reason": "KubectlApprove", "message": "approved"}
_DENIED = {"type": "Denied", "status": "True", "reason": "KubectlDeny", "message": "denied"}


# --- parsing -------------------------------------------------------------------------------------


def test_machine_addresses_parsed_from_machine_object() -> None:
    expected = csr.MachineAddresses(
        machine_name="demo-x-master-0",
        node_name=NODE,
        internal_ips=("10.0.1.1",),
        internal_dns=(NODE,),
        hostnames=("ip-10-0-1-1",),
    )
    assert expected == MACHINE
    assert NEW_MACHINE.node_name is None
    provisioning = csr.MachineAddresses.from_machine({"metadata": {"name": "m"}, "status": {}})
    assert provisioning == csr.MachineAddresses(machine_name="m", node_name=None)


def test_machine_without_name_is_rejected_with_a_sentence() -> None:
    with pytest.raises(ValueError, match=r"has no metadata\.name"):
        csr.MachineAddresses.from_machine({"status": {}})


def test_csr_view_reads_state_and_request() -> None:
    pem = csrgen.make_client_csr(NODE)
    obj = csrgen.csr_object(
        "csr-x",
        pem=pem,
        signer_name=csrgen.CLIENT_SIGNER,
        username=csrgen.BOOTSTRAPPER_USERNAME,
        groups=csrgen.BOOTSTRAPPER_GROUPS,
        usages=csrgen.CLIENT_USAGES,
        conditions=[_APPROVED],
    )
    obj["status"]["certificate"] = "TFMwdExTMUNSVWRKVGlCRFJWSlVTVVpKUTBGVVJTMHRMUzB0"
    view = csr.CsrView.from_object(obj)
    assert view.request_pem == pem
    assert (view.approved, view.denied, view.issued, view.pending) == (True, False, True, False)
    assert view.groups == csrgen.BOOTSTRAPPER_GROUPS
    assert client().pending


def test_undecodable_request_is_refused() -> None:
    obj = csrgen.csr_object(
        "csr-bad",
        pem=b"",
        signer_name=csrgen.CLIENT_SIGNER,
        username=csrgen.BOOTSTRAPPER_USERNAME,
        groups=csrgen.BOOTSTRAPPER_GROUPS,
        usages=csrgen.CLIENT_USAGES,
    )
    obj["spec"]["request"] = "not base64!"
    refused_for(csr.CsrView.from_object(obj), "not a readable PEM certificate request")
    refused_for(client(pem=b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n"), "not a readable PEM")


# --- client CSRs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("usages", [csrgen.CLIENT_USAGES, ("client auth", "digital signature")])
def test_client_csr_for_existing_node_is_approved(usages: Sequence[str]) -> None:
    verdict = check(client(usages=usages))
    expected = csr.CsrVerdict(name="csr-client", approve=True, node_name=NODE, kind="client", reasons=())
    assert verdict == expected


def test_client_csr_for_new_machine_is_approved() -> None:
    assert check(client(node=NEW)).approve


@pytest.mark.parametrize("organization", [("system:masters",), ("system:nodes", "system:masters"), ()])
def test_client_organization_must_be_exactly_system_nodes(organization: tuple[str, ...]) -> None:
    refused_for(client(pem=csrgen.make_client_csr(NODE, organization=organization)), "subject organization")


@pytest.mark.parametrize("common_name", ["system:admin", "system:node:", NODE])
def test_client_common_name_must_name_a_node(common_name: str) -> None:
    pem = csrgen.make_client_csr(NODE, common_name=common_name)
    refused_for(client(pem=pem), 'must be "system:node:<node name>"')


@pytest.mark.parametrize(
    "sans",
    [{"dns_names": [NODE]}, {"ips": ["10.0.1.1"]}, {"emails": ["a@b.c"]}, {"uris": ["spiffe://x/y"]}],
)
def test_client_csr_carries_no_sans(sans: dict[str, Any]) -> None:
    refused_for(client(pem=csrgen.make_client_csr(NODE, **sans)), "carries no subject alternative names")


@pytest.mark.parametrize(
    "usages",
    [
        ("digital signature", "key encipherment", "client auth", "server auth"),
        ("digital signature", "key encipherment"),
        ("digital signature", "client auth", "client auth"),
        ("digital signature", "key encipherment", "server auth"),
    ],
)
def test_client_usages_must_be_exact(usages: tuple[str, ...]) -> None:
    refused_for(client(usages=usages), "are not those of a kubelet client certificate")


def test_client_csr_must_come_from_node_bootstrapper() -> None:
    refused_for(client(username=f"system:node:{NODE}"), "not by the node-bootstrapper")


@pytest.mark.parametrize(
    "groups",
    [
        (*csrgen.BOOTSTRAPPER_GROUPS, "system:masters"),
        csrgen.BOOTSTRAPPER_GROUPS[:2],
        ("system:nodes", "system:authenticated"),
    ],
)
def test_client_groups_must_be_exactly_the_bootstrapper_groups(groups: tuple[str, ...]) -> None:
    refused_for(client(groups=groups), "for a node-bootstrapper request")


def test_client_csr_for_node_without_machine_is_refused() -> None:
    verdict = refused_for(client(node="ip-10-9-9-9.ec2.internal"), 'no Machine has InternalDNS "ip-10-9-9-9')
    assert verdict.node_name == "ip-10-9-9-9.ec2.internal"


def test_client_csr_for_existing_node_needs_a_linked_machine() -> None:
    refused_for(client(node=NEW), "is not linked to it (nodeRef unset)", nodes={*NODES, NEW})


def test_client_csr_for_new_node_needs_a_machine_without_node() -> None:
    refused_for(client(), f"already has nodeRef {NODE}", nodes={OTHER})


def test_client_csr_with_ambiguous_machine_is_refused() -> None:
    twin = csr.MachineAddresses(machine_name="demo-x-master-9", node_name=None, internal_dns=(NODE,))
    refused_for(client(), "several Machines have", machines=(*MACHINES, twin))


# --- serving CSRs --------------------------------------------------------------------------------


@pytest.mark.parametrize("usages", [csrgen.SERVING_USAGES, ("server auth", "digital signature")])
def test_serving_csr_with_own_addresses_is_approved(usages: Sequence[str]) -> None:
    verdict = check(serving(usages=usages))
    assert verdict == csr.CsrVerdict(
        name="csr-serving", approve=True, node_name=NODE, kind="serving", reasons=()
    )


def test_serving_dns_match_ignores_case_and_trailing_dot() -> None:
    dotted = csr.MachineAddresses(
        machine_name="demo-x-master-0", node_name=NODE, internal_ips=("10.0.1.1",), internal_dns=(NODE + ".",)
    )
    pem = csrgen.make_serving_csr(NODE, ips=["10.0.1.1"], dns_names=[NODE.upper()])
    assert check(serving(pem=pem), machines=[dotted]).approve


def test_serving_csr_must_come_from_a_node() -> None:
    view = serving(username=csrgen.BOOTSTRAPPER_USERNAME)
    verdict = refused_for(view, "which is not a node")
    assert verdict.node_name is None


@pytest.mark.parametrize("groups", [("system:authenticated",), ("system:nodes", "system:serviceaccounts")])
def test_serving_groups_must_include_nodes_and_authenticated(groups: tuple[str, ...]) -> None:
    refused_for(serving(groups=groups), "which a node always has")


def test_serving_extra_groups_are_allowed() -> None:
    assert check(serving(groups=(*csrgen.NODE_GROUPS, "system:extra"))).approve


@pytest.mark.parametrize(
    "usages",
    [
        ("digital signature", "key encipherment", "server auth", "client auth"),
        ("digital signature", "server auth", "client auth"),
        ("key encipherment", "server auth"),
    ],
)
def test_serving_usages_must_be_exact(usages: tuple[str, ...]) -> None:
    refused_for(serving(usages=usages), "are not those of a kubelet serving certificate")


def test_serving_common_name_must_equal_username() -> None:
    pem = csrgen.make_serving_csr(
        NODE, ips=["10.0.1.1"], dns_names=[NODE], common_name=f"system:node:{OTHER}"
    )
    refused_for(serving(pem=pem), "differs from the requesting user")


def test_serving_organization_must_include_system_nodes() -> None:
    pem = csrgen.make_serving_csr(NODE, ips=["10.0.1.1"], dns_names=[NODE], organization=("system:masters",))
    refused_for(serving(pem=pem), "does not include 'system:nodes'")
    pem = csrgen.make_serving_csr(
        NODE, ips=["10.0.1.1"], dns_names=[NODE], organization=("system:nodes", "extra")
    )
    assert check(serving(pem=pem)).approve


def test_serving_dns_san_outside_machine_is_refused() -> None:
    pem = csrgen.make_serving_csr(NODE, ips=["10.0.1.1"], dns_names=[NODE, ABSENT])
    verdict = refused_for(serving("csr-8vnps", pem=pem), "")
    assert verdict.reasons[0].startswith(
        f'CSR csr-8vnps: DNS SAN "{ABSENT}" is not an address of machine demo-x-master-0 (node {NODE})'
    )


def test_serving_san_of_another_machine_is_refused() -> None:
    pem = csrgen.make_serving_csr(NODE, ips=["10.0.1.1"], dns_names=[NODE, OTHER])
    refused_for(serving(pem=pem), f'DNS SAN "{OTHER}" is not an address of machine demo-x-master-0')
    pem = csrgen.make_serving_csr(NODE, ips=["10.0.1.1", "10.0.2.2"], dns_names=[NODE])
    refused_for(serving(pem=pem), 'IP SAN "10.0.2.2" is not an address of machine demo-x-master-0')


@pytest.mark.parametrize("extra", [{"emails": ["root@example.com"]}, {"uris": ["https://example.com"]}])
def test_serving_other_san_kinds_are_refused(extra: dict[str, Any]) -> None:
    pem = csrgen.make_serving_csr(NODE, ips=["10.0.1.1"], dns_names=[NODE], **extra)
    refused_for(serving(pem=pem), "carries only DNS and IP SANs")


def test_serving_csr_needs_a_machine_with_that_node_ref() -> None:
    refused_for(serving(), f"no Machine has nodeRef {NODE}", machines=[OTHER_MACHINE, NEW_MACHINE])


def test_serving_csr_needs_a_registered_node() -> None:
    pem = csrgen.make_serving_csr(NEW, ips=["10.0.3.3"], dns_names=[NEW])
    refused_for(serving(node=NEW, pem=pem), f"node {NEW} is not registered")


# --- every CSR -----------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [client, serving])
def test_denied_csr_is_never_approved(make: Any) -> None:
    verdict = refused_for(make(conditions=[_DENIED]), "is denied")
    assert len(verdict.reasons) == 1
    both = make(conditions=[_APPROVED, _DENIED])
    refused_for(both, "is denied")
    plan = csr.plan_approvals([make(conditions=[_DENIED])], machines=MACHINES, nodes_existing=NODES)
    assert plan == csr.ApprovalPlan(approve=(), refuse=())


def test_already_approved_csr_is_not_approved_again() -> None:
    refused_for(serving(conditions=[_APPROVED]), "already approved")


def test_other_signer_is_refused() -> None:
    view = _view(
        "csr-legacy",
        csrgen.make_client_csr(NODE),
        signer="kubernetes.io/kube-apiserver-client",
        username=csrgen.BOOTSTRAPPER_USERNAME,
        groups=csrgen.BOOTSTRAPPER_GROUPS,
        usages=csrgen.CLIENT_USAGES,
    )
    verdict = refused_for(view, 'has signer "kubernetes.io/kube-apiserver-client"')
    assert verdict.kind == "other"


def test_tampered_signature_is_refused() -> None:
    der = bytearray(_der(csrgen.make_client_csr(NODE)))
    der[-1] ^= 0x01  # last byte of the ECDSA signature's s
    verdict = refused_for(client(pem=_pem(bytes(der))), "signature does not verify")
    assert len(verdict.reasons) == 1


def test_subject_altered_after_signing_is_refused() -> None:
    # Signed for OTHER, then the name swapped for NODE: every field is now valid except the signature.
    der = _der(csrgen.make_client_csr(OTHER)).replace(b"ip-10-0-2-2", b"ip-10-0-1-1")
    verdict = refused_for(client(pem=_pem(der)), "signature does not verify")
    assert verdict.node_name == NODE
    assert len(verdict.reasons) == 1


def test_unloadable_public_key_is_refused() -> None:
    pem = csrgen.make_client_csr(NODE)
    point = (
        x509.load_pem_x509_csr(pem)
        .public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )
    der = bytearray(_der(pem))
    der[der.index(point) + 64] ^= 0x01  # the point leaves the curve
    refused_for(client(pem=_pem(bytes(der))), "public key cannot be loaded")


def test_plan_is_pending_only_and_ordered_by_name() -> None:
    views = [
        client("csr-b"),
        serving("csr-a"),
        client("csr-d", node="ip-10-9-9-9.ec2.internal"),
        serving("csr-c", conditions=[_APPROVED]),
        client("csr-e", conditions=[_DENIED]),
        client("csr-0", node=NEW),
    ]
    plans = {
        csr.plan_approvals(order, machines=MACHINES, nodes_existing=NODES)
        for order in itertools.permutations(views)
    }
    assert len(plans) == 1
    (plan,) = plans
    assert [v.name for v in plan.approve] == ["csr-0", "csr-a", "csr-b"]
    assert [v.name for v in plan.refuse] == ["csr-d"]
    assert all(v.approve for v in plan.approve)


# --- property ------------------------------------------------------------------------------------

_DNS = (*MACHINE.internal_dns, *MACHINE.hostnames)
_FOREIGN_DNS = (*OTHER_MACHINE.internal_dns, *OTHER_MACHINE.hostnames, ABSENT, "ip-10-0-1-1.ec2")
_FOREIGN_IPS = ("10.0.2.2", "10.0.1.2", "127.0.0.1", "::1", "fd00::1")


@settings(max_examples=40, deadline=None)
@given(
    dns=st.lists(st.sampled_from(_DNS), unique=True),
    ips=st.lists(st.sampled_from(MACHINE.internal_ips), unique=True),
    extra=st.one_of(
        st.none(),
        st.sampled_from(_FOREIGN_DNS).map(lambda d: ("dns", d)),
        st.sampled_from(_FOREIGN_IPS).map(lambda i: ("ip", i)),
    ),
)
def test_serving_sans_approved_iff_all_are_the_machines(
    dns: list[str], ips: list[str], extra: tuple[str, str] | None
) -> None:
    if extra is not None:
        (dns if extra[0] == "dns" else ips).append(extra[1])
    verdict = check(serving(pem=csrgen.make_serving_csr(NODE, ips=ips, dns_names=dns)))
    assert verdict.approve == (extra is None)
    if extra is not None:
        assert len(verdict.reasons) == 1
        assert f'SAN "{extra[1]}" is not an address of machine demo-x-master-0' in verdict.reasons[0]
