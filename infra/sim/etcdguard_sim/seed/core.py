"""Seed data, part 1: shared helpers and the Kubernetes objects of the control plane.

Helpers every part uses (`make` builds an object's metadata; uids, suffixes and digests are
hashes of the object's identity), Nodes, and pods: the control-plane static pods (etcd,
kube-apiserver, kube-controller-manager, kube-scheduler) with etcd's installer and pruner pods.
Everything is derived from the `SimSpec` and the times in `Clock`: no clock, no I/O, no
randomness.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import uuid
from typing import Any

from etcdguard_sim import layout

Obj = dict[str, Any]

KUBELET_VERSION = "v1.21.1+051ac4f"
KUBE_VERSION = "1.21.1"  # the upstream version the operands report
INSTALL_AGE = dt.timedelta(days=40)
UPGRADE_AGE = dt.timedelta(days=10)
SIGNER_VALIDITY = dt.timedelta(days=365)
OS_IMAGE = "Red Hat Enterprise Linux CoreOS 48.84.202109100857-0 (Ootpa)"
CRIO_VERSION = "cri-o://1.21.3-3.rhaos4.8.git6ba0ae8.el8"
KERNEL_VERSION = "4.18.0-305.19.1.el8_4.x86_64"
# Kubernetes' name-suffix alphabet (no vowels, no confusable digits).
_ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"


@dataclasses.dataclass(frozen=True)
class Clock:
    """The cluster's life, relative to `now`: installed at 4.8.x, upgraded to the current z-stream."""

    now: dt.datetime

    @property
    def installed(self) -> dt.datetime:
        return self.now - INSTALL_AGE

    @property
    def install_done(self) -> dt.datetime:
        return self.installed + dt.timedelta(minutes=38)

    @property
    def upgrade_started(self) -> dt.datetime:
        return self.now - UPGRADE_AGE

    @property
    def upgrade_done(self) -> dt.datetime:
        return self.upgrade_started + dt.timedelta(hours=1, minutes=17)

    def joined(self, node: layout.NodeSpec) -> dt.datetime:
        """When the node registered during the installation."""
        base = 12 if node.role == "master" else 24
        return self.installed + dt.timedelta(minutes=base + node.index)

    def rebooted(self, node: layout.NodeSpec) -> dt.datetime:
        """When the machine-config operator last rebooted the node (late in the upgrade)."""
        base = 40 if node.role == "master" else 55
        return self.upgrade_started + dt.timedelta(minutes=base + 6 * node.index)


def ts(when: dt.datetime) -> str:
    """RFC 3339 in UTC, seconds precision, `Z` suffix (as the API server writes times)."""
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


def token(seed: str, length: int) -> str:
    """A Kubernetes-style random suffix (`5b9f4c6d8d`, `x7k2q`), derived from `seed`."""
    raw = hashlib.sha256(seed.encode()).digest()
    return "".join(_ALPHANUMS[b % len(_ALPHANUMS)] for b in raw[:length])


def uid(spec: layout.SimSpec, *, kind: str, name: str, namespace: str | None = None) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"etcdguard-sim:{spec.cluster_id}:{kind}:{namespace}:{name}"))


def image(container: str) -> str:
    """A container's image; the same reference the static pod manifests on the hosts use."""
    return (
        "quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:"
        + hashlib.sha256(container.encode()).hexdigest()
    )


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def fake_pem(label: str, subject: str) -> str:
    """A PEM-shaped placeholder: its body is plain text, so no parser mistakes it for a real one."""
    body = f"etcdguard-sim placeholder, not a real {label.lower()}: {subject}"
    return f"-----BEGIN {label}-----\n{body}\n-----END {label}-----\n"


def region(zone: str) -> str:
    return zone[:-1]


def make(
    spec: layout.SimSpec,
    *,
    api_version: str,
    kind: str,
    name: str,
    created: dt.datetime,
    namespace: str | None = None,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    body: Obj | None = None,
) -> Obj:
    """A full object: apiVersion, kind, metadata, then `body` (spec, status, data...)."""
    meta: Obj = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    meta |= {
        "uid": uid(spec, kind=kind, name=name, namespace=namespace),
        "labels": dict(labels or {}),
        "annotations": dict(annotations or {}),
        "creationTimestamp": ts(created),
    }
    return {"apiVersion": api_version, "kind": kind, "metadata": meta, **(body or {})}


def tls_secret(
    spec: layout.SimSpec, *, name: str, namespace: str, created: dt.datetime, not_after: dt.datetime
) -> Obj:
    annotations = {
        "auth.openshift.io/certificate-not-before": ts(created),
        "auth.openshift.io/certificate-not-after": ts(not_after),
    }
    data = {"tls.crt": b64(fake_pem("CERTIFICATE", name)), "tls.key": b64(fake_pem("RSA PRIVATE KEY", name))}
    return make(
        spec, api_version="v1", kind="Secret", name=name, namespace=namespace, created=created,
        annotations=annotations, body={"type": "kubernetes.io/tls", "data": data},
    )  # fmt: skip


def condition(kind: str, status: bool, *, since: dt.datetime, reason: str = "", message: str = "") -> Obj:
    """A status condition; `since` is its lastTransitionTime."""
    out: Obj = {"type": kind, "status": "True" if status else "False", "lastTransitionTime": ts(since)}
    if reason:
        out["reason"] = reason
    if message:
        out["message"] = message
    return out


def replica_set_owner(spec: layout.SimSpec, name: str, *, namespace: str) -> Obj:
    """The owner reference of a Deployment's pod (its ReplicaSet is not served by the simulator)."""
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "name": name,
        "uid": uid(spec, kind="ReplicaSet", name=name, namespace=namespace),
    }


# ---- nodes ------------------------------------------------------------------------------------
_CAPACITY = {
    "master": ("m5.xlarge", "4", "16116152Ki", "3500m", "14965176Ki"),
    "worker": ("m5.large", "2", "7935036Ki", "1500m", "6784060Ki"),
}


def instance_type(node: layout.NodeSpec) -> str:
    return _CAPACITY[node.role][0]


def node_object(spec: layout.SimSpec, node: layout.NodeSpec, *, clock: Clock) -> Obj:
    itype, cpu, memory, alloc_cpu, alloc_memory = _CAPACITY[node.role]
    labels = {
        "beta.kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/instance-type": itype,
        "beta.kubernetes.io/os": "linux",
        "failure-domain.beta.kubernetes.io/region": region(node.zone),
        "failure-domain.beta.kubernetes.io/zone": node.zone,
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/hostname": node.name,
        "kubernetes.io/os": "linux",
        f"node-role.kubernetes.io/{node.role}": "",
        "node.kubernetes.io/instance-type": itype,
        "node.openshift.io/os_id": "rhcos",
        "topology.ebs.csi.aws.com/zone": node.zone,
        "topology.kubernetes.io/region": region(node.zone),
        "topology.kubernetes.io/zone": node.zone,
    }
    rendered = f"rendered-{node.role}-{digest(spec.ocp_version, node.role)[:32]}"
    annotations = {
        "machine.openshift.io/machine": f"openshift-machine-api/{node.machine_name}",
        "machineconfiguration.openshift.io/currentConfig": rendered,
        "machineconfiguration.openshift.io/desiredConfig": rendered,
        "machineconfiguration.openshift.io/reason": "",
        "machineconfiguration.openshift.io/state": "Done",
        "volumes.kubernetes.io/controller-managed-attach-detach": "true",
    }
    node_spec: Obj = {"providerID": f"aws:///{node.zone}/{node.instance_id}"}
    if node.role == "master":
        node_spec["taints"] = [{"key": "node-role.kubernetes.io/master", "effect": "NoSchedule"}]
    up = clock.rebooted(node) + dt.timedelta(minutes=2)
    conditions = [
        condition("MemoryPressure", False, since=up, reason="KubeletHasSufficientMemory",
                  message="kubelet has sufficient memory available"),
        condition("DiskPressure", False, since=up, reason="KubeletHasNoDiskPressure",
                  message="kubelet has no disk pressure"),
        condition("PIDPressure", False, since=up, reason="KubeletHasSufficientPID",
                  message="kubelet has sufficient PID available"),
        condition("Ready", True, since=up, reason="KubeletReady", message="kubelet is posting ready status"),
    ]  # fmt: skip
    for cond in conditions:
        cond["lastHeartbeatTime"] = ts(clock.now)
    status = {
        "addresses": [
            {"type": "InternalIP", "address": node.ip},
            {"type": "Hostname", "address": node.name},
            {"type": "InternalDNS", "address": node.name},
        ],
        "capacity": {"attachable-volumes-aws-ebs": "25", "cpu": cpu, "ephemeral-storage": "125293548Ki",
                     "hugepages-1Gi": "0", "hugepages-2Mi": "0", "memory": memory, "pods": "250"},
        "allocatable": {"attachable-volumes-aws-ebs": "25", "cpu": alloc_cpu,
                        "ephemeral-storage": "114396791822", "hugepages-1Gi": "0", "hugepages-2Mi": "0",
                        "memory": alloc_memory, "pods": "250"},
        "conditions": conditions,
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        "nodeInfo": {
            "architecture": "amd64",
            "bootID": str(uuid.uuid5(uuid.NAMESPACE_URL, f"boot:{node.name}:{ts(clock.rebooted(node))}")),
            "containerRuntimeVersion": CRIO_VERSION,
            "kernelVersion": KERNEL_VERSION,
            "kubeProxyVersion": KUBELET_VERSION,
            "kubeletVersion": KUBELET_VERSION,
            "machineID": digest("machine-id", node.name)[:32],
            "operatingSystem": "linux",
            "osImage": OS_IMAGE,
            "systemUUID": "ec2" + digest("system-uuid", node.instance_id)[3:32],
        },
    }  # fmt: skip
    return make(
        spec, api_version="v1", kind="Node", name=node.name, created=clock.joined(node),
        labels=labels, annotations=annotations, body={"spec": node_spec, "status": status},
    )  # fmt: skip


# ---- pods -------------------------------------------------------------------------------------
def _container_status(
    spec: layout.SimSpec, *, pod: str, name: str, started: dt.datetime, finished: dt.datetime | None = None
) -> Obj:
    state: Obj
    if finished is None:
        state = {"running": {"startedAt": ts(started)}}
    else:
        state = {
            "terminated": {
                "exitCode": 0,
                "reason": "Completed",
                "startedAt": ts(started),
                "finishedAt": ts(finished),
                "containerID": f"cri-o://{digest(pod, name)}",
            }
        }
    return {
        "name": name,
        "image": image(name),
        "imageID": image(name),
        "containerID": f"cri-o://{digest(pod, name)}",
        "ready": finished is None,
        "started": finished is None,
        "restartCount": 0,
        "state": state,
        "lastState": {},
    }


def pod_object(
    spec: layout.SimSpec,
    *,
    node: layout.NodeSpec,
    namespace: str,
    name: str,
    containers: list[str],
    labels: dict[str, str],
    started: dt.datetime,
    finished: dt.datetime | None = None,
    static: bool = True,
    host_network: bool = True,
    owner: Obj | None = None,
) -> Obj:
    """A pod bound to `node`: a static (mirror) pod, a finished installer, or a controller's pod."""
    annotations: dict[str, str] = {}
    if static:
        config_hash = digest(namespace, name, labels.get("revision", ""))[:32]
        annotations = {
            "kubernetes.io/config.hash": config_hash,
            "kubernetes.io/config.mirror": config_hash,
            "kubernetes.io/config.seen": ts(started),
            "kubernetes.io/config.source": "file",
            "target.workload.openshift.io/management": '{"effect": "PreferredDuringScheduling"}',
        }
        owner = {
            "apiVersion": "v1",
            "kind": "Node",
            "name": node.name,
            "uid": uid(spec, kind="Node", name=node.name),
        }
    pod_spec: Obj = {
        "nodeName": node.name,
        "hostNetwork": host_network,
        "priorityClassName": "system-node-critical" if static else "system-cluster-critical",
        "restartPolicy": "Always" if finished is None else "Never",
        "tolerations": [{"operator": "Exists"}],
        "containers": [
            {"name": c, "image": image(c), "imagePullPolicy": "IfNotPresent",
             "resources": {"requests": {"cpu": "10m", "memory": "50Mi"}},
             "terminationMessagePolicy": "FallbackToLogsOnError"}
            for c in containers
        ],
    }  # fmt: skip
    done = finished is not None
    when = finished or started
    raw = hashlib.sha256(f"{namespace}/{name}".encode()).digest()
    pod_ip = node.ip if host_network else f"10.{128 + raw[0] % 4}.{raw[1] % 4 * 2}.{raw[2] % 250 + 4}"
    status = {
        "phase": "Succeeded" if done else "Running",
        "conditions": [
            condition("Initialized", True, since=started, reason="PodCompleted" if done else ""),
            condition("Ready", not done, since=when, reason="PodCompleted" if done else ""),
            condition("ContainersReady", not done, since=when, reason="PodCompleted" if done else ""),
            condition("PodScheduled", True, since=started),
        ],
        "hostIP": node.ip,
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "startTime": ts(started),
        "qosClass": "Burstable",
        "containerStatuses": [
            _container_status(spec, pod=name, name=c, started=started, finished=finished) for c in containers
        ],
    }
    obj = make(
        spec, api_version="v1", kind="Pod", name=name, namespace=namespace, created=started,
        labels=labels, annotations=annotations, body={"spec": pod_spec, "status": status},
    )  # fmt: skip
    if owner is not None:
        obj["metadata"]["ownerReferences"] = [{**owner, "controller": True}]
    return obj


# One entry per static-pod operand: namespace, pod-name prefix, labels, containers.
STATIC_PODS: dict[str, tuple[str, str, dict[str, str], list[str]]] = {
    "etcd": ("openshift-etcd", "etcd", {"app": "etcd", "k8s-app": "etcd", "etcd": "true"},
             ["etcdctl", "etcd", "etcd-metrics", "etcd-health-monitor", "etcd-readyz"]),
    "kube-apiserver": ("openshift-kube-apiserver", "kube-apiserver",
                       {"app": "openshift-kube-apiserver", "apiserver": "true"},
                       ["kube-apiserver", "kube-apiserver-cert-syncer",
                        "kube-apiserver-cert-regeneration-controller", "kube-apiserver-insecure-readyz",
                        "kube-apiserver-check-endpoints"]),
    "kube-controller-manager": ("openshift-kube-controller-manager", "kube-controller-manager",
                                {"app": "kube-controller-manager", "kube-controller-manager": "true"},
                                ["kube-controller-manager", "cluster-policy-controller",
                                 "kube-controller-manager-cert-syncer",
                                 "kube-controller-manager-recovery-controller"]),
    "kube-scheduler": ("openshift-kube-scheduler", "openshift-kube-scheduler",
                       {"app": "openshift-kube-scheduler", "scheduler": "true"},
                       ["kube-scheduler", "kube-scheduler-cert-syncer",
                        "kube-scheduler-recovery-controller"]),
}  # fmt: skip


def static_pods(spec: layout.SimSpec, clock: Clock) -> list[Obj]:
    """Every control-plane static pod, plus etcd's installer and pruner pods of the revision."""
    out: list[Obj] = []
    for operand, (namespace, prefix, labels, containers) in STATIC_PODS.items():
        revision = layout.INITIAL_REVISIONS[operand]
        for node in spec.masters:
            started = clock.rebooted(node) + dt.timedelta(minutes=3)
            out.append(pod_object(
                spec, node=node, namespace=namespace, name=f"{prefix}-{node.name}", containers=containers,
                labels={**labels, "revision": str(revision)}, started=started,
            ))  # fmt: skip
    etcd_rev = layout.INITIAL_REVISIONS["etcd"]
    for node in spec.masters:
        # The revision was rolled out during the upgrade, before the node's reboot.
        start = clock.upgrade_started + dt.timedelta(minutes=8 + 2 * node.index)
        for prefix, container in (("installer", "installer"), ("revision-pruner", "pruner")):
            begun = start + (dt.timedelta(minutes=1) if container == "pruner" else dt.timedelta())
            out.append(pod_object(
                spec, node=node, namespace="openshift-etcd", name=f"{prefix}-{etcd_rev}-{node.name}",
                containers=[container], labels={"app": container}, started=begun,
                finished=begun + dt.timedelta(seconds=40), static=False, host_network=False,
            ))  # fmt: skip
    return out
