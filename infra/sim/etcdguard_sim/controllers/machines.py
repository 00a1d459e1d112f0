"""The machine API (machine-api-operator with its AWS actuator), simulated over moto's EC2.

EC2 is the truth for power. Every pass, without the API (so that starting instances brings a
stopped cluster back):
- an instance whose state changed since the last pass powers its host on (`pending`, `running`)
  or off (anything else) through `DIR/run/power/<node>`;
- a host whose power changed while its instance did not (`shutdown -h` on the host, a fault
  injector writing the power file) makes the instance follow: stopped or started through EC2,
  as an instance-initiated shutdown does on AWS.
The last EC2 state seen of each node is kept in `DIR/run/ec2-state/<node>`, so a restarted
controller does not mistake an old change for a new one.

Then, through the API (openshift-machine-api Machines):
- `metadata.annotations[machine.openshift.io/instance-state]` and
  `status.providerStatus.instanceState` follow the instance's state;
- a Machine without `spec.providerID` is provisioned: phase `Provisioning` first, then an
  instance (tagged `Name=<machine>`, found again after a restart), a node in `sim.json` at the
  lowest free address of its role (masters `.1`-`.9`, workers `.11`-`.19`; addresses of
  terminated instances are not reused, as AWS hands out new ones) with its host files (every
  control-plane manifest at the operators' current revision, but no etcd: the etcd operator
  installs it), then `spec.providerID`, `status.addresses`, `status.providerStatus` and phase
  `Provisioned`; the supervisor starts the host and the kubelet asks for certificates (`csrs`);
- a `Provisioned` Machine whose Node exists gets `status.nodeRef` and phase `Running`;
- an instance whose Machine is gone (the API deletes at once: no finalizers) is terminated, its
  host powered off and removed from `sim.json` (the supervisor stops it) and its Node deleted.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import shutil
from pathlib import Path
from typing import Any

from etcdguard_sim import layout
from etcdguard_sim.api import client as apiclient
from etcdguard_sim.controllers import context
from etcdguard_sim.hosts import fs as hostfs
from etcdguard_sim.hosts import ns as hostns
from etcdguard_sim.hosts import ssh as sshsetup
from etcdguard_sim.runtime import cloud

__all__ = ["INSTANCE_STATE_ANNOTATION", "NAMESPACE", "reconcile"]

NAMESPACE = "openshift-machine-api"
INSTANCE_STATE_ANNOTATION = "machine.openshift.io/instance-state"
_API = "machine.openshift.io/v1beta1"
_PROVIDER_API = "awsproviderconfig.openshift.io/v1beta1"
_ON_STATES = ("pending", "running")
_GONE_STATES = ("shutting-down", "terminated")
_OPERATOR_CRS = {
    "etcd": "Etcd",
    "kube-apiserver": "KubeAPIServer",
    "kube-controller-manager": "KubeControllerManager",
    "kube-scheduler": "KubeScheduler",
}
_ADDRESS_RANGES = {"master": range(1, 10), "worker": range(11, 20)}
_ZONES = ("us-east-1a", "us-east-1b", "us-east-1c")

Obj = dict[str, Any]


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ec2(ctx: context.Context) -> Any:
    key = f"ec2:{ctx.spec.moto_endpoint}"
    client = ctx.memory.get(key)
    if client is None:
        client = ctx.memory[key] = cloud.ec2_client(ctx.spec)
    return client


def _instances(ec2: Any) -> list[Obj]:
    out: list[Obj] = []
    for page in ec2.get_paginator("describe_instances").paginate():
        for reservation in page["Reservations"]:
            out += reservation["Instances"]
    return out


def _tag(instance: Obj, key: str) -> str | None:
    for tag in instance.get("Tags") or []:
        if tag.get("Key") == key:
            return str(tag.get("Value"))
    return None


# ---- power: EC2 <-> the hosts, without the API -------------------------------------------
def _state_file(spec: layout.SimSpec, node: layout.NodeSpec) -> Path:
    return spec.run_dir / "ec2-state" / node.name


def _sync_power(ctx: context.Context, ec2: Any, by_id: dict[str, Obj]) -> None:
    for node in ctx.spec.nodes:
        instance = by_id.get(node.instance_id)
        if instance is None:
            continue
        state = str(instance["State"]["Name"])
        path = _state_file(ctx.spec, node)
        try:
            last: str | None = path.read_text().strip()
        except OSError:
            last = None
        on = state in _ON_STATES
        powered = ctx.powered(node)
        if last != state:
            if powered != on:
                word = "on" if on else "off"
                print(
                    f"machines: instance {node.instance_id} is {state}: {node.name} powers {word}", flush=True
                )
                ctx.set_power(node, on=on)
        elif powered != on and state not in _GONE_STATES:
            # The host changed power by itself: the instance follows, as on AWS.
            if powered:
                ec2.start_instances(InstanceIds=[node.instance_id])
            else:
                ec2.stop_instances(InstanceIds=[node.instance_id])
            word = "on" if powered else "off"
            print(f"machines: {node.name} powered {word}: instance {node.instance_id} follows", flush=True)
            desc = ec2.describe_instances(InstanceIds=[node.instance_id])
            instance = desc["Reservations"][0]["Instances"][0]
            by_id[node.instance_id] = instance
            state = str(instance["State"]["Name"])
        path.parent.mkdir(parents=True, exist_ok=True)
        if last != state:
            path.write_text(state + "\n")


# ---- API helpers ---------------------------------------------------------------------------
def _machine_path(ctx: context.Context, name: str = "") -> str:
    return ctx.api.path_for(_API, "Machine", namespace=NAMESPACE, name=name)


def _patch(ctx: context.Context, path: str, body: Obj) -> None:
    ctx.api.request("PATCH", path, body, content_type="application/merge-patch+json")


def _node_exists(ctx: context.Context, name: str) -> dict[str, Any] | None:
    try:
        node: Obj = ctx.api.get("v1", "Node", name)
    except apiclient.ApiError as exc:
        if exc.status == 404:
            return None
        raise
    return node


def _follow(ctx: context.Context, machine: Obj, by_id: dict[str, Obj]) -> None:
    """Mirror the instance state into the Machine; Provisioned -> Running once its Node exists."""
    name = machine["metadata"]["name"]
    instance_id = str(machine["spec"]["providerID"]).rsplit("/", 1)[-1]
    instance = by_id.get(instance_id)
    path = _machine_path(ctx, name)
    status = machine.get("status") or {}
    if instance is not None:
        state = str(instance["State"]["Name"])
        if (machine["metadata"].get("annotations") or {}).get(INSTANCE_STATE_ANNOTATION) != state:
            _patch(ctx, path, {"metadata": {"annotations": {INSTANCE_STATE_ANNOTATION: state}}})
        if (status.get("providerStatus") or {}).get("instanceState") != state:
            _patch(ctx, path + "/status", {"status": {"providerStatus": {"instanceState": state}}})
    if status.get("phase") == "Provisioned" and not status.get("nodeRef"):
        node_name = next(
            (a["address"] for a in status.get("addresses") or [] if a.get("type") == "InternalDNS"), None
        )
        node = _node_exists(ctx, node_name) if node_name else None
        if node is not None:
            ref = {"kind": "Node", "name": node_name, "uid": node["metadata"].get("uid", "")}
            _patch(
                ctx,
                path + "/status",
                {"status": {"nodeRef": ref, "phase": "Running", "lastUpdated": _now()}},
            )
            print(f"machines: {name} is Running as node {node_name}", flush=True)


# ---- provisioning ----------------------------------------------------------------------------
def _role(machine: Obj) -> layout.Role:
    labels = machine["metadata"].get("labels") or {}
    role = labels.get("machine.openshift.io/cluster-api-machine-role")
    if role in ("master", "worker"):
        return "master" if role == "master" else "worker"
    return "master" if "-master-" in machine["metadata"]["name"] else "worker"


def _zone(machine: Obj, index: int) -> str:
    value = ((machine.get("spec") or {}).get("providerSpec") or {}).get("value") or {}
    zone = (value.get("placement") or {}).get("availabilityZone")
    return str(zone) if zone else _ZONES[index % len(_ZONES)]


def _index(name: str, spec: layout.SimSpec, role: str) -> int:
    match = re.search(r"-(\d+)$", name)
    if match:
        return int(match.group(1))
    return len([n for n in spec.nodes if n.role == role])


def _free_address(spec: layout.SimSpec, role: str, instances: list[Obj]) -> str:
    in_spec = {n.ip for n in spec.nodes}
    ever = in_spec | {str(i.get("PrivateIpAddress")) for i in instances}
    for wanted in (ever, in_spec):  # never-used first; reuse a terminated one's only when full
        for host in _ADDRESS_RANGES[role]:
            address = f"{spec.prefix}.{host}"
            if address not in wanted:
                return address
    raise RuntimeError(
        f"no free {role} address left in {spec.prefix}.0/24 of cluster {spec.cluster_name}: "
        f"delete a {role} Machine first"
    )


def _revisions(ctx: context.Context) -> dict[str, int]:
    out = dict(layout.INITIAL_REVISIONS)
    for component, kind in _OPERATOR_CRS.items():
        cr = ctx.api.get("operator.openshift.io/v1", kind, "cluster")
        latest = (cr.get("status") or {}).get("latestAvailableRevision")
        if isinstance(latest, int) and latest > 0:
            out[component] = latest
    return out


def _prepare_host(ctx: context.Context, node: layout.NodeSpec) -> None:
    """The new host's files: every control-plane static pod except etcd, SSH keys."""
    spec = ctx.spec
    hostns.prepare_host_dirs(spec, node)
    # The etcd cert dir of the host lists the masters whose certificates exist; the etcd
    # operator rewrites it when it installs etcd on this host.
    with_certs = tuple(
        n for n in spec.nodes if n.role != "master" or all(p.exists() for p in spec.etcd_cert(n, "peer"))
    )
    revisions = _revisions(ctx)
    hostfs.populate_host(
        dataclasses.replace(spec, nodes=with_certs),
        node,
        revisions=revisions,
        encryption=spec.encryption,
        api_kubeconfig=spec.kubeconfig.read_bytes(),
    )
    etc = spec.host_root(node) / "etc" / "kubernetes"
    (etc / "manifests" / "etcd-pod.yaml").unlink(missing_ok=True)
    shutil.rmtree(etc / "static-pod-resources" / f"etcd-pod-{revisions['etcd']}", ignore_errors=True)
    sshsetup.ensure_keys(spec, node)


def _node_name(ip: str) -> str:
    return "ip-" + ip.replace(".", "-") + ".ec2.internal"


def _run_instance(ctx: context.Context, ec2: Any, *, machine: Obj, ip: str, zone: str, role: str) -> Obj:
    name = machine["metadata"]["name"]
    resp = ec2.run_instances(
        ImageId="ami-0d5f9982f029fbc14",
        MinCount=1,
        MaxCount=1,
        InstanceType="m5.xlarge" if role == "master" else "m5.large",
        Placement={"AvailabilityZone": zone},
        PrivateIpAddress=ip,
        TagSpecifications=[
            {
                "ResourceType": "instance",
                "Tags": [
                    {"Key": "Name", "Value": name},
                    {"Key": f"kubernetes.io/cluster/{ctx.spec.infra_id}", "Value": "owned"},
                    {"Key": "etcdguard.io/node", "Value": _node_name(ip)},
                ],
            }
        ],
    )
    instance: Obj = resp["Instances"][0]
    print(f"machines: {name}: instance {instance['InstanceId']} at {ip} in {zone}", flush=True)
    return instance


def _provision(ctx: context.Context, ec2: Any, machine: Obj, instances: list[Obj]) -> None:
    name = machine["metadata"]["name"]
    path = _machine_path(ctx, name)
    status = machine.get("status") or {}
    if status.get("phase") != "Provisioning":
        _patch(ctx, path + "/status", {"status": {"phase": "Provisioning", "lastUpdated": _now()}})
        print(f"machines: {name} is Provisioning", flush=True)
        return  # the instance comes next pass, so Provisioning can be seen
    role = _role(machine)
    spec = ctx.spec
    instance = next(
        (i for i in instances if _tag(i, "Name") == name and i["State"]["Name"] not in _GONE_STATES), None
    )
    index = _index(name, spec, role)
    if instance is None:
        ip = _free_address(spec, role, instances)
        instance = _run_instance(ctx, ec2, machine=machine, ip=ip, zone=_zone(machine, index), role=role)
        instances.append(instance)
    ip = str(instance["PrivateIpAddress"])
    zone = str(instance["Placement"]["AvailabilityZone"])
    node = next((n for n in spec.nodes if n.machine_name == name), None)
    if node is None:
        node = layout.NodeSpec(
            name=_node_name(ip),
            ip=ip,
            role=role,
            index=index,
            zone=zone,
            machine_name=name,
            instance_id=str(instance["InstanceId"]),
        )
        if role == "master":
            _prepare_host(ctx, node)
        spec = dataclasses.replace(spec, nodes=(*spec.nodes, node))
        spec.save()  # the supervisor starts the host
        ctx.spec = spec
        if role == "master":
            sshsetup.write_client_config(spec)
        print(f"machines: {name}: node {node.name} added to the cluster", flush=True)
    state = str(instance["State"]["Name"])
    provider_id = f"aws:///{zone}/{instance['InstanceId']}"
    _patch(
        ctx,
        path,
        {
            "metadata": {"annotations": {INSTANCE_STATE_ANNOTATION: state}},
            "spec": {"providerID": provider_id},
        },
    )
    created = _now()
    provider_status = {
        "apiVersion": _PROVIDER_API,
        "kind": "AWSMachineProviderStatus",
        "instanceId": instance["InstanceId"],
        "instanceState": state,
        "conditions": [
            {
                "type": "MachineCreation",
                "status": "True",
                "reason": "MachineCreationSucceeded",
                "message": "machine successfully created",
                "lastTransitionTime": created,
                "lastProbeTime": created,
            }
        ],
    }
    addresses = [
        {"type": "InternalIP", "address": ip},
        {"type": "InternalDNS", "address": node.name},
        {"type": "Hostname", "address": node.name},
    ]
    _patch(
        ctx,
        path + "/status",
        {
            "status": {
                "phase": "Provisioned",
                "providerStatus": provider_status,
                "addresses": addresses,
                "lastUpdated": created,
            }
        },
    )
    print(f"machines: {name} is Provisioned ({provider_id})", flush=True)


# ---- deletion ---------------------------------------------------------------------------------
def _collect_orphans(ctx: context.Context, ec2: Any, instances: list[Obj], machine_names: set[str]) -> None:
    owned = f"kubernetes.io/cluster/{ctx.spec.infra_id}"
    for instance in instances:
        name = _tag(instance, "Name")
        if name is None or _tag(instance, owned) is None or name in machine_names:
            continue
        if instance["State"]["Name"] in _GONE_STATES:
            continue
        ec2.terminate_instances(InstanceIds=[instance["InstanceId"]])
        print(f"machines: Machine {name} is gone: instance {instance['InstanceId']} terminated", flush=True)
        node = next((n for n in ctx.spec.nodes if n.machine_name == name), None)
        if node is None:
            continue
        ctx.set_power(node, on=False)
        spec = dataclasses.replace(ctx.spec, nodes=tuple(n for n in ctx.spec.nodes if n.name != node.name))
        spec.save()  # the supervisor stops the host
        ctx.spec = spec
        if node.role == "master":
            sshsetup.write_client_config(spec)
        _state_file(spec, node).unlink(missing_ok=True)
        try:
            ctx.api.request("DELETE", ctx.api.path_for("v1", "Node", namespace=None, name=node.name))
        except apiclient.ApiError as exc:
            if exc.status != 404:
                raise
        print(f"machines: node {node.name} removed", flush=True)


# ---- the pass ---------------------------------------------------------------------------------
def reconcile(ctx: context.Context) -> None:
    ec2 = _ec2(ctx)
    instances = _instances(ec2)
    by_id = {str(i["InstanceId"]): i for i in instances}
    _sync_power(ctx, ec2, by_id)
    listing = ctx.api.request("GET", _machine_path(ctx))
    machines: list[Obj] = listing.get("items") or []
    if not machines or not (ctx.spec.state_dir / "seeded").exists():
        return  # an empty list, or one still being seeded, never means "delete every instance"
    for machine in machines:
        if (machine.get("spec") or {}).get("providerID"):
            _follow(ctx, machine, by_id)
        else:
            _provision(ctx, ec2, machine, instances)
    _collect_orphans(ctx, ec2, instances, {m["metadata"]["name"] for m in machines})
