"""Pure decisions of graceful shutdown/restart: machine inventory from providerIDs, the shutdown
state's key and round trip, the kubelet signer's expiry against the margin, cluster health."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from etcdguard.core import keys, lifecycle

pytestmark = pytest.mark.unit

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def machine(
    name: str, role: str, *, instance: str | None, node: str | None, ip: str = "10.0.0.1"
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "metadata": {"name": name, "labels": {"machine.openshift.io/cluster-api-machine-role": role}},
        "spec": {},
        "status": {"addresses": [{"type": "InternalIP", "address": ip}]},
    }
    if instance:
        obj["spec"]["providerID"] = f"aws:///us-east-1a/{instance}"
    if node:
        obj["status"]["nodeRef"] = {"kind": "Node", "name": node}
    return obj


def node(name: str, ready: str, *, reason: str = "", master: bool = False) -> dict[str, Any]:
    labels = {"node-role.kubernetes.io/master": ""} if master else {}
    cond = {"type": "Ready", "status": ready, "reason": reason}
    return {"metadata": {"name": name, "labels": labels}, "status": {"conditions": [cond]}}


def operator(name: str, degraded: str, message: str = "") -> dict[str, Any]:
    conds = [
        {"type": "Available", "status": "True"},
        {"type": "Degraded", "status": degraded, "message": message},
    ]
    return {"metadata": {"name": name}, "status": {"conditions": conds}}


def test_provider_id_is_parsed_and_foreign_ones_refused() -> None:
    assert lifecycle.parse_provider_id("aws:///us-east-1a/i-0fdb85790d76d0c3f") == (
        "us-east-1a",
        "i-0fdb85790d76d0c3f",
    )
    for bad in ("", "gce://p/z/name", "aws:///us-east-1a/", "aws://us-east-1a/i-1"):
        with pytest.raises(ValueError, match="is not an AWS one"):
            lifecycle.parse_provider_id(bad)


def test_inventory_orders_workers_first_and_reads_roles_ids_and_addresses() -> None:
    records = lifecycle.inventory(
        [
            machine("c-master-0", "master", instance="i-0a", node="n-m0", ip="10.0.0.1"),
            machine("c-worker-b", "worker", instance="i-0c", node="n-wb", ip="10.0.0.12"),
            machine("c-worker-a", "worker", instance="i-0b", node=None, ip="10.0.0.11"),
        ],
        [node("n-m0", "True", master=True), node("n-wb", "True")],
    )
    assert [(r.machine, r.role, r.instance_id, r.node, r.address) for r in records] == [
        ("c-worker-a", "worker", "i-0b", None, "10.0.0.11"),
        ("c-worker-b", "worker", "i-0c", "n-wb", "10.0.0.12"),
        ("c-master-0", "master", "i-0a", "n-m0", "10.0.0.1"),
    ]


def test_inventory_refuses_a_machine_without_an_instance() -> None:
    with pytest.raises(ValueError, match=r"Machine c-master-3 has no spec\.providerID"):
        lifecycle.inventory([machine("c-master-3", "master", instance=None, node=None)], [])


def test_shutdown_state_round_trips_and_lives_outside_every_backup_prefix() -> None:
    record = lifecycle.MachineRecord(
        machine="m", node="n", role="master", instance_id="i-1", zone="z", address="10.0.0.1"
    )
    state = lifecycle.ShutdownState(cluster="prod", ocp_version="4.8.12", recorded_at=NOW, machines=(record,))
    assert lifecycle.ShutdownState.from_json_bytes(state.to_json_bytes()) == state
    key = lifecycle.state_key(prefix="etcd", cluster="prod")
    assert key == "etcd/_etcdguard/prod/shutdown-state.json"
    assert not key.startswith(keys.backup_prefix(prefix="etcd", cluster="prod"))
    assert lifecycle.state_key(prefix="", cluster="prod") == "_etcdguard/prod/shutdown-state.json"


@given(st.integers(min_value=-400 * 24, max_value=400 * 24), st.floats(min_value=0, max_value=90))
def test_too_close_exactly_when_less_than_the_margin_remains(hours: int, margin_days: float) -> None:
    not_after = NOW + timedelta(hours=hours)
    expiry = lifecycle.assess_cert_expiry(
        not_after.strftime("%Y-%m-%dT%H:%M:%SZ"), now=NOW, margin_days=margin_days
    )
    assert expiry.last_safe_restart == not_after
    assert expiry.too_close == (timedelta(hours=hours) < timedelta(days=margin_days))
    assert not_after.strftime("%Y-%m-%d %H:%M:%S UTC") in expiry.message


def test_expiry_messages() -> None:
    far = lifecycle.assess_cert_expiry("2026-06-01T00:00:00Z", now=NOW, margin_days=30)
    assert far.message == (
        "Restart the cluster on or before 2026-06-01 00:00:00 UTC (91.5 days from now), when the kubelet signer expires."
    )
    near = lifecycle.assess_cert_expiry("2026-03-04T12:00:00Z", now=NOW, margin_days=30)
    assert "in 3.0 days, less than the 30-day margin (profile shutdown.min_cert_margin_days)" in near.message
    gone = lifecycle.assess_cert_expiry("2026-02-27T12:00:00Z", now=NOW, margin_days=30)
    assert "expired on 2026-02-27 12:00:00 UTC (2.0 days ago)" in gone.message
    assert "recover-expired-certs" in gone.message
    for bad, why in (
        (None, "has no auth.openshift.io/certificate-not-after"),
        ("soon", "is not an RFC 3339 date"),
    ):
        with pytest.raises(ValueError, match=why):
            lifecycle.assess_cert_expiry(bad, now=NOW, margin_days=30)
    with pytest.raises(ValueError, match="has no time zone"):
        lifecycle.assess_cert_expiry("2026-06-01T00:00:00", now=NOW, margin_days=30)


def test_health_names_nodes_not_ready_missing_nodes_and_degraded_operators() -> None:
    health = lifecycle.assess_health(
        [node("a", "True"), node("b", "Unknown", reason="NodeStatusUnknown"), {"metadata": {"name": "c"}}],
        [operator("etcd", "True", "NodeControllerDegraded: node b not ready"), operator("dns", "False")],
        expected_nodes=["a", "b", "d"],
    )
    assert not health.healthy
    assert health.ready == ("a",)
    assert health.problems() == [
        "node b is not Ready: Ready=Unknown (NodeStatusUnknown)",
        "node c is not Ready: Ready=Unknown (no Ready condition)",
        "node d is not Ready: the Node object does not exist",
        "ClusterOperator etcd is Degraded: NodeControllerDegraded: node b not ready",
    ]
    assert lifecycle.assess_health(
        [node("a", "True")], [operator("etcd", "False")], expected_nodes=["a"]
    ).healthy
