"""The simulated machine API, node lifecycle, kubelet CSR cycle and ClusterOperators, driven from
outside as an admin would: boto3 against the cluster's EC2 endpoint, the real `kubectl`, `ssh`
with the cluster's ssh_config, and etcdguard's own CSR validator before every approval."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from collections.abc import Callable
from typing import Any, TypeVar

import boto3
import pytest
import yaml
from cryptography import x509
from etcdguard_sim import layout

from etcdguard.core import csr as csrcheck
from tests import simtools

pytestmark = pytest.mark.integration

T = TypeVar("T")
MACHINES_QUERY = (
    'jsonpath={range .items[*]}{@.status.nodeRef.name}{"\\t"}'
    '{@.status.providerStatus.instanceState}{"\\n"}{end}'
)
TAINTS_QUERY = (
    'jsonpath={range .items[*]}{"\\n"}{.metadata.name}{"\\t"}{range .spec.taints[*]}{.key}{" "}{end}{end}'
)


@pytest.fixture(scope="module")
def ec2(cluster: layout.SimSpec) -> Any:
    env = dict(
        line.split("=", 1) for line in (cluster.state_dir / "s3.env").read_text().splitlines() if "=" in line
    )
    return boto3.client(
        "ec2",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )


# ---- helpers ------------------------------------------------------------------------------------
def wait_for(what: str, probe: Callable[[], T | None], *, timeout: float = 30.0, every: float = 0.5) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def kget(spec: layout.SimSpec, *args: str) -> Any:
    return json.loads(simtools.kubectl(spec, "get", *args, "-o", "json").stdout)


def ssh_ok(spec: layout.SimSpec, node: str, *command: str) -> bool:
    argv = ["ssh", "-F", str(spec.state_dir / "ssh_config"), node, *(command or ("true",))]
    return subprocess.run(argv, capture_output=True, timeout=30, check=False).returncode == 0


def ready(spec: layout.SimSpec, node: str) -> str:
    obj = kget(spec, "node", node)
    return next(str(c["status"]) for c in obj["status"]["conditions"] if c["type"] == "Ready")


def verdicts(spec: layout.SimSpec, node: str) -> list[csrcheck.CsrVerdict]:
    """etcdguard's verdict on every pending CSR of `node`."""
    machines = [csrcheck.MachineAddresses.from_machine(m) for m in kget(spec, "machines", "-A")["items"]]
    nodes = {n["metadata"]["name"] for n in kget(spec, "nodes")["items"]}
    out = []
    for obj in kget(spec, "csr")["items"]:
        view = csrcheck.CsrView.from_object(obj)
        if view.pending:
            verdict = csrcheck.validate_csr(view, machines=machines, nodes_existing=nodes)
            if verdict.node_name == node:
                out.append(verdict)
    return out


def approve_next(spec: layout.SimSpec, node: str, kind: str) -> str:
    """Wait for the node's pending CSR of `kind`, check etcdguard approves it, approve it."""
    found = wait_for(
        f"a pending {kind} CSR of {node}", lambda: [v for v in verdicts(spec, node) if v.kind == kind]
    )
    assert len(found) == 1, f"more than one pending {kind} CSR of {node}: {found}"
    assert found[0].approve, found[0].reasons
    simtools.kubectl(spec, "certificate", "approve", found[0].name)
    return found[0].name


def issued_cert(spec: layout.SimSpec, name: str) -> x509.Certificate:
    pem = wait_for(
        f"the certificate of {name}", lambda: kget(spec, "csr", name).get("status", {}).get("certificate")
    )
    cert = x509.load_pem_x509_certificate(base64.b64decode(pem))
    ca = x509.load_pem_x509_certificate(spec.api_ca.read_bytes())
    cert.verify_directly_issued_by(ca)
    return cert


def instance_state(ec2: Any, instance_id: str) -> str:
    desc = ec2.describe_instances(InstanceIds=[instance_id])
    return str(desc["Reservations"][0]["Instances"][0]["State"]["Name"])


# ---- tests --------------------------------------------------------------------------------------
def test_stopping_a_master_instance_stops_its_host_and_node(cluster: layout.SimSpec, ec2: Any) -> None:
    node = cluster.masters[2]
    assert ssh_ok(cluster, node.name)
    ec2.stop_instances(InstanceIds=[node.instance_id])

    def stopped_lines() -> list[str]:
        out = simtools.kubectl(cluster, "get", "machines", "-A", "-o", MACHINES_QUERY).stdout
        return [line for line in out.splitlines() if "running" not in line]

    assert wait_for("the machine to show stopped", stopped_lines) == [f"{node.name}\tstopped"]
    assert not ssh_ok(cluster, node.name)

    def unreachable() -> list[str]:
        out = simtools.kubectl(cluster, "get", "nodes", "-o", TAINTS_QUERY).stdout
        return [line for line in out.splitlines() if "unreachable" in line]

    lines = wait_for("the unreachable taint", unreachable, timeout=20)
    assert lines[0].startswith(f"{node.name}\t")
    assert lines[0].count("node.kubernetes.io/unreachable") == 2
    assert ready(cluster, node.name) == "Unknown"
    health = simtools.etcdctl(
        cluster,
        "endpoint",
        "health",
        "-w",
        "json",
        endpoints=cluster.etcd_endpoints(),
        node=cluster.masters[0],
    )
    unhealthy = [e["endpoint"] for e in json.loads(health.stdout) if not e["health"]]
    assert unhealthy == [node.etcd_client_url]

    def etcd_degraded() -> str | None:
        conds = kget(cluster, "co", "etcd")["status"]["conditions"]
        degraded = next(c for c in conds if c["type"] == "Degraded")
        message = degraded.get("message", "")
        wanted = f"2 of 3 members are available, {node.name} is unhealthy"
        return message if degraded["status"] == "True" and wanted in message else None

    message = wait_for("etcd Degraded naming the member", etcd_degraded, timeout=20)
    assert f'node "{node.name}" not ready since' in message
    apiserver = kget(cluster, "co", "kube-apiserver")["status"]["conditions"]
    assert next(c for c in apiserver if c["type"] == "Degraded")["status"] == "True"

    ec2.start_instances(InstanceIds=[node.instance_id])
    wait_for("the machine to run again", lambda: not stopped_lines(), timeout=20)
    wait_for("the node to be Ready", lambda: ready(cluster, node.name) == "True", timeout=20)
    wait_for("SSH to answer again", lambda: ssh_ok(cluster, node.name), timeout=20)
    assert unreachable() == []
    for name in ("kube-apiserver", "kube-scheduler"):
        conds = kget(cluster, "co", name)["status"]["conditions"]
        assert {c["type"]: c["status"] for c in conds if c["type"] != "Upgradeable"} == {
            "Degraded": "False",
            "Progressing": "False",
            "Available": "True",
        }


def test_shutdown_on_the_host_stops_its_instance(cluster: layout.SimSpec, ec2: Any) -> None:
    node = cluster.workers[0]  # no host processes: power is the file the host's shutdown writes
    (cluster.run_dir / "power").mkdir(parents=True, exist_ok=True)
    (cluster.run_dir / "power" / node.name).write_text("off\n")
    wait_for("the instance to stop", lambda: instance_state(ec2, node.instance_id) == "stopped", timeout=15)
    ec2.start_instances(InstanceIds=[node.instance_id])
    wait_for("the power to come back", lambda: (cluster.run_dir / "power" / node.name).read_text() == "on\n")
    wait_for("the worker to be Ready", lambda: ready(cluster, node.name) == "True", timeout=15)


def test_expired_certificates_renew_through_the_csr_cycle(cluster: layout.SimSpec) -> None:
    node = cluster.masters[1]
    fault = cluster.run_dir / "certs-expired" / node.name
    fault.parent.mkdir(parents=True, exist_ok=True)
    fault.write_text("")
    time.sleep(1.1)  # the kubelet restarts strictly after the certificates expired
    assert ssh_ok(cluster, node.name, "sudo", "systemctl", "restart", "kubelet")
    client = approve_next(cluster, node.name, "client")
    cert = issued_cert(cluster, client)
    assert cert.subject.rfc4514_string() == f"CN=system:node:{node.name},O=system:nodes"
    wait_for("the fault to be cleared", lambda: not fault.exists())
    serving = approve_next(cluster, node.name, "serving")
    sans = issued_cert(cluster, serving).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert sans.value.get_values_for_type(x509.DNSName) == [node.name]
    wait_for("the node to be Ready", lambda: ready(cluster, node.name) == "True", timeout=15)


def test_a_denied_csr_is_left_alone(cluster: layout.SimSpec) -> None:
    node = cluster.workers[1]
    fault = cluster.run_dir / "certs-expired" / node.name
    fault.parent.mkdir(parents=True, exist_ok=True)
    fault.write_text("")
    time.sleep(1.1)
    (cluster.run_dir / "power" / node.name).write_text("on\n")  # the worker reboots
    found = wait_for("a pending client CSR", lambda: verdicts(cluster, node.name))
    simtools.kubectl(cluster, "certificate", "deny", found[0].name)
    wait_for("the node to go NotReady", lambda: ready(cluster, node.name) == "Unknown", timeout=15)
    time.sleep(3)
    assert verdicts(cluster, node.name) == []  # no new request, the denied one stays denied
    assert ready(cluster, node.name) == "Unknown"
    denied = kget(cluster, "csr", found[0].name)["status"]
    assert "certificate" not in denied
    (cluster.run_dir / "power" / node.name).write_text("on\n")  # another reboot asks again
    approve_next(cluster, node.name, "client")
    approve_next(cluster, node.name, "serving")
    wait_for("the node to be Ready", lambda: ready(cluster, node.name) == "True", timeout=15)


def test_replacing_a_master_machine(cluster: layout.SimSpec, ec2: Any) -> None:
    """Guide 4.2.4.1: remove the member, save the machine, clean it, delete it, create `-master-3`."""
    old = cluster.masters[0]
    members = json.loads(
        simtools.etcdctl(cluster, "member", "list", "-w", "json", node=cluster.masters[1]).stdout
    )
    member_id = next(m["ID"] for m in members["members"] if m.get("name") == old.name)
    removed = simtools.etcdctl(cluster, "member", "remove", format(member_id, "x"), node=cluster.masters[1])
    assert removed.returncode == 0, removed.stderr
    # Removing the leader means an election (about 3 s), during which the API may be away.
    wait_for(
        "the API to answer after the member removal",
        lambda: simtools.kubectl(cluster, "get", "machines", "-A", check=False).returncode == 0,
    )

    machine = kget(cluster, "machine", "-n", "openshift-machine-api", old.machine_name)
    machine.pop("status")
    meta = machine["metadata"]
    meta["name"] = new_name = old.machine_name.replace("-master-0", "-master-3")
    for key in ("annotations", "generation", "resourceVersion", "uid", "creationTimestamp", "managedFields"):
        meta.pop(key, None)
    machine["spec"].pop("providerID")
    simtools.kubectl(cluster, "delete", "machine", "-n", "openshift-machine-api", old.machine_name)
    created = subprocess.run(
        ["kubectl", "create", "-f", "-"],
        input=yaml.safe_dump(machine),
        env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert created.returncode == 0, created.stderr

    phases: list[str] = []

    def provisioned() -> dict[str, Any] | None:
        obj: dict[str, Any] = kget(cluster, "machine", "-n", "openshift-machine-api", new_name)
        phase = obj.get("status", {}).get("phase", "")
        if phase and (not phases or phases[-1] != phase):
            phases.append(phase)
        return obj if phase == "Provisioned" else None

    new_machine = wait_for("the new machine to be Provisioned", provisioned, every=0.2)
    assert phases == ["Provisioning", "Provisioned"]
    provider_id = new_machine["spec"]["providerID"]
    instance_id = provider_id.rsplit("/", 1)[1]
    assert provider_id == f"aws:///{old.zone}/{instance_id}"
    assert instance_id != old.instance_id
    assert instance_state(ec2, instance_id) == "running"
    assert new_machine["status"]["providerStatus"]["instanceState"] in ("pending", "running")

    def instance_running() -> bool:
        obj = kget(cluster, "machine", "-n", "openshift-machine-api", new_name)
        annotation = obj["metadata"]["annotations"]["machine.openshift.io/instance-state"]
        return bool(annotation == obj["status"]["providerStatus"]["instanceState"] == "running")

    wait_for("the machine to show its instance running", instance_running)
    addresses = {a["type"]: a["address"] for a in new_machine["status"]["addresses"]}
    new_node = addresses["InternalDNS"]
    assert addresses == {"InternalIP": f"{cluster.prefix}.4", "InternalDNS": new_node, "Hostname": new_node}

    wait_for("the old instance to terminate", lambda: instance_state(ec2, old.instance_id) == "terminated")
    spec = layout.SimSpec.load(cluster.state_dir)
    assert old.name not in {n.name for n in spec.nodes}
    assert spec.node(new_node).machine_name == new_name
    assert spec.node(new_node).index == 3
    wait_for("the old host to refuse SSH", lambda: not ssh_ok(cluster, old.name))
    gone = simtools.kubectl(cluster, "get", "node", old.name, check=False)
    assert gone.returncode != 0
    assert "NotFound" in gone.stderr
    wait_for("the new host to answer SSH", lambda: ssh_ok(cluster, new_node), timeout=20)
    manifests = spec.host_root(spec.node(new_node)) / "etc" / "kubernetes" / "manifests"
    assert (manifests / "kube-apiserver-pod.yaml").exists()

    approve_next(cluster, new_node, "client")

    def running() -> dict[str, Any] | None:
        obj: dict[str, Any] = kget(cluster, "machine", "-n", "openshift-machine-api", new_name)
        return obj if obj["status"].get("phase") == "Running" else None

    status = wait_for("the machine to be Running", running)["status"]
    assert status["nodeRef"]["name"] == new_node
    assert ready(cluster, new_node) == "False"  # registered, serving certificate still pending
    approve_next(cluster, new_node, "serving")
    wait_for("the new node to be Ready", lambda: ready(cluster, new_node) == "True", timeout=15)
    node_obj = kget(cluster, "node", new_node)
    assert node_obj["spec"]["providerID"] == provider_id
    assert "node-role.kubernetes.io/master" in node_obj["metadata"]["labels"]
