"""The objects a new simulated OpenShift 4.8 cluster starts with.

`seed_objects(spec, now=...)` is a pure function: everything follows from the `SimSpec` and
`now` (uids are uuid5 of the object's identity, random-looking suffixes are hashes), so the same
input always gives the same objects. `etcdguard-sim up` POSTs each object, then PUTs its
`status`, in the order returned: namespaces first.

The cluster it describes is healthy and 40 days old (`INSTALL_AGE`): installed at an earlier
z-stream (4.8.10 for 4.8.12), upgraded to `spec.ocp_version` ten days ago, every node Ready,
every Machine running, every operator Available and not Progressing, every master at the latest
static-pod revision (`layout.INITIAL_REVISIONS`), all etcd members available, the kubelets'
CSRs approved long ago. Two user namespaces (`shop`, `payments`) hold a Deployment with its pod,
a Service, a ConfigMap, a Secret and an EBS-backed PVC/PV with its VolumeAttachment, which make
the guide's persistent-storage caveats (4.3.2.3) concrete.

Shapes and messages follow `shared/reference/openshift-internals.md`. Private parts:
`_seed_core` (helpers, nodes, pods) and `_seed_openshift` (the OpenShift kinds).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any, Literal, get_args

from etcdguard_sim import layout
from etcdguard_sim.seed import core, openshift

__all__ = ["INSTALL_AGE", "KUBELET_VERSION", "NAMESPACES", "Encryption", "seed_objects"]

KUBELET_VERSION = core.KUBELET_VERSION
INSTALL_AGE = core.INSTALL_AGE

Encryption = Literal["identity", "aescbc"]
Obj = dict[str, Any]

NAMESPACES: tuple[str, ...] = (
    "default",
    "kube-system",
    "openshift-etcd",
    "openshift-etcd-operator",
    "openshift-kube-apiserver",
    "openshift-kube-apiserver-operator",
    "openshift-kube-controller-manager",
    "openshift-kube-scheduler",
    "openshift-machine-api",
    "openshift-config",
    "openshift-cluster-version",
    "openshift-machine-config-operator",
    "shop",
    "payments",
)

# namespace -> (app, container port, volume size, config data)
_WORKLOADS: dict[str, tuple[str, int, str, dict[str, str]]] = {
    "shop": ("storefront", 8080, "10Gi", {"CATALOG_PAGE_SIZE": "48", "CURRENCY": "JPY"}),
    "payments": ("ledger", 9090, "20Gi", {"SETTLEMENT_CUTOFF": "23:30", "LEDGER_MODE": "strict"}),
}
_CSI_DRIVER = "ebs.csi.aws.com"


def seed_objects(
    spec: layout.SimSpec, *, now: dt.datetime, encryption: Encryption | None = None
) -> list[dict[str, Any]]:
    """Every seed object of the cluster `spec` describes, namespaces first, as of `now`.

    `now` must be timezone-aware; times are written in UTC, whole seconds. `encryption` becomes
    the APIServer's `spec.encryption.type` (omitted when None; `spec.encryption` is not read).
    Raises ValueError for a naive `now`, an unknown encryption type, a cluster without masters,
    or an `ocp_version` not of the form X.Y.Z.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(
            f"now={now.isoformat()} has no time zone: pass an aware datetime such as "
            "datetime.now(datetime.UTC), so the seeded timestamps are in UTC."
        )
    if encryption is not None and encryption not in get_args(Encryption):
        raise ValueError(
            f"encryption={encryption!r} is not an etcd encryption type of OpenShift 4.8: "
            "use 'identity', 'aescbc' or None (encryption off)."
        )
    if not spec.masters:
        raise ValueError(
            f"The simulated cluster {spec.cluster_name!r} has no control-plane node: "
            "create it with at least one master."
        )
    clock = core.Clock(now.astimezone(dt.UTC).replace(microsecond=0))
    out = [_namespace(spec, name, clock=clock) for name in NAMESPACES]
    out += openshift.cluster_config(spec, clock, encryption=encryption)
    out.append(openshift.cluster_version(spec, clock))
    out += openshift.cluster_operators(spec, clock)
    out += openshift.static_pod_operators(spec, clock)
    out += [core.node_object(spec, node, clock=clock) for node in spec.nodes]
    out += [openshift.machine_object(spec, node, clock=clock) for node in spec.nodes]
    out += _csrs(spec, clock)
    out += openshift.etcd_namespace_objects(spec, clock)
    out.append(openshift.kubelet_signer(spec, clock))
    out += core.static_pods(spec, clock)
    out += openshift.quorum_guard(spec, clock)
    for index, namespace in enumerate(_WORKLOADS):
        out += _workload(spec, clock, namespace=namespace, index=index)
    return out


def _namespace(spec: layout.SimSpec, name: str, *, clock: core.Clock) -> Obj:
    labels = {"kubernetes.io/metadata.name": name}
    if name.startswith("openshift-") or name in ("default", "kube-system"):
        labels["openshift.io/cluster-monitoring"] = "true"
    if name in ("openshift-etcd", "openshift-kube-apiserver", "kube-system", "default"):
        labels["openshift.io/run-level"] = "0"
    created = clock.installed + dt.timedelta(minutes=0 if name in ("default", "kube-system") else 5)
    if name in _WORKLOADS:
        created = clock.install_done + dt.timedelta(days=2)
    return core.make(
        spec, api_version="v1", kind="Namespace", name=name, created=created, labels=labels,
        annotations={"openshift.io/sa.scc.uid-range": "1000000000/10000"},
        body={"spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}},
    )  # fmt: skip


def _csrs(spec: layout.SimSpec, clock: core.Clock) -> list[Obj]:
    """Each kubelet's bootstrap client CSR and first serving CSR, approved by the machine approver."""
    bootstrapper = "system:serviceaccount:openshift-machine-config-operator:node-bootstrapper"
    kinds = {
        "kubernetes.io/kube-apiserver-client-kubelet": (
            bootstrapper,
            ["system:serviceaccounts", "system:serviceaccounts:openshift-machine-config-operator",
             "system:authenticated"],
            ["digital signature", "key encipherment", "client auth"],
        ),
        "kubernetes.io/kubelet-serving": (
            "",  # the node itself: system:node:<name>
            ["system:nodes", "system:authenticated"],
            ["digital signature", "key encipherment", "server auth"],
        ),
    }  # fmt: skip
    out: list[Obj] = []
    for node in spec.nodes:
        for offset, (signer, (username, groups, usages)) in enumerate(kinds.items()):
            created = clock.joined(node) + dt.timedelta(minutes=2 * offset - 1)
            approved = created + dt.timedelta(seconds=11)
            name = "csr-" + core.token(f"{spec.cluster_id}/{signer}/{node.name}", 5)
            csr_spec = {
                "signerName": signer,
                "username": username or f"system:node:{node.name}",
                "groups": groups,
                "usages": usages,
                "request": core.b64(core.fake_pem("CERTIFICATE REQUEST", f"system:node:{node.name}")),
            }
            condition = core.condition("Approved", True, since=approved, reason="NodeCSRApprove",
                                       message="This CSR was approved by the Node CSR Approver")  # fmt: skip
            condition["lastUpdateTime"] = core.ts(approved)
            certificate = core.b64(core.fake_pem("CERTIFICATE", f"system:node:{node.name}"))
            status = {"conditions": [condition], "certificate": certificate}
            out.append(core.make(spec, api_version="certificates.k8s.io/v1", kind="CertificateSigningRequest",
                                 name=name, created=created,
                                 body={"spec": csr_spec, "status": status}))  # fmt: skip
    return out


def _workload(spec: layout.SimSpec, clock: core.Clock, *, namespace: str, index: int) -> list[Obj]:
    """One user application: Deployment + pod, Service, ConfigMap, Secret, PVC, PV, VolumeAttachment."""
    app, port, size, config = _WORKLOADS[namespace]
    pool = spec.workers or spec.masters
    node = pool[index % len(pool)]
    created = clock.install_done + dt.timedelta(days=2, hours=index)
    started = clock.rebooted(node) + dt.timedelta(minutes=5)
    labels = {"app": app}
    claim, pvc_uid = (
        f"{app}-data",
        core.uid(spec, kind="PersistentVolumeClaim", name=f"{app}-data", namespace=namespace),
    )
    pv_name = f"pvc-{pvc_uid}"
    volume_id = "vol-0" + core.digest("volume", pv_name)[:16]
    image = f"quay.io/etcdguard-demo/{app}:1.{4 + index}.2"
    template_hash = core.token(f"{spec.cluster_id}/{namespace}/{app}", 10)

    def obj(kind: str, name: str, body: Obj, **meta: Any) -> Obj:
        meta = {"api_version": "v1", "namespace": namespace, "labels": labels, **meta}
        return core.make(spec, kind=kind, name=name, created=created, body=body, **meta)

    pod_spec: Obj = {
        "containers": [{"name": app, "image": image, "ports": [{"containerPort": port, "protocol": "TCP"}],
                        "envFrom": [{"configMapRef": {"name": f"{app}-config"}},
                                    {"secretRef": {"name": f"{app}-credentials"}}],
                        "volumeMounts": [{"name": "data", "mountPath": "/var/lib/" + app}]}],
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}],
    }  # fmt: skip
    deployment = {
        "spec": {"replicas": 1, "strategy": {"type": "Recreate"}, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels}, "spec": pod_spec}},
        "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1,
                   "availableReplicas": 1,
                   "conditions": [core.condition("Available", True, since=started,
                                                 reason="MinimumReplicasAvailable",
                                                 message="Deployment has minimum availability.")]},
    }  # fmt: skip
    rs = f"{app}-{template_hash}"
    pod = core.pod_object(
        spec, node=node, namespace=namespace, name=f"{rs}-{core.token(rs + node.name, 5)}", containers=[app],
        labels={**labels, "pod-template-hash": template_hash}, started=started, static=False,
        host_network=False, owner=core.replica_set_owner(spec, rs, namespace=namespace),
    )  # fmt: skip
    pod["spec"] |= {"containers": pod_spec["containers"], "volumes": pod_spec["volumes"]}
    del pod["spec"]["priorityClassName"], pod["spec"]["tolerations"]
    service = {"spec": {"type": "ClusterIP", "selector": labels, "ports": [{"name": "http", "port": 80,
               "targetPort": port, "protocol": "TCP"}], "clusterIP": f"172.30.{40 + index}.{17 + index}"},
               "status": {"loadBalancer": {}}}  # fmt: skip
    credentials = {"DB_USER": core.b64(app), "DB_PASSWORD": core.b64(f"not-a-secret-{app}")}
    secret = {"type": "Opaque", "data": credentials}
    pvc = {
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}},
                 "storageClassName": "gp2-csi", "volumeMode": "Filesystem", "volumeName": pv_name},
        "status": {"phase": "Bound", "accessModes": ["ReadWriteOnce"], "capacity": {"storage": size}},
    }  # fmt: skip
    pvc_annotations = {
        "pv.kubernetes.io/bind-completed": "yes",
        "pv.kubernetes.io/bound-by-controller": "yes",
        "volume.beta.kubernetes.io/storage-provisioner": _CSI_DRIVER,
        "volume.kubernetes.io/selected-node": node.name,
    }
    pv = {
        "spec": {"accessModes": ["ReadWriteOnce"], "capacity": {"storage": size},
                 "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "name": claim,
                              "namespace": namespace, "uid": pvc_uid},
                 "csi": {"driver": _CSI_DRIVER, "fsType": "ext4", "volumeHandle": volume_id},
                 "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                     {"key": "topology.ebs.csi.aws.com/zone", "operator": "In", "values": [node.zone]}]}]}},
                 "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "gp2-csi",
                 "volumeMode": "Filesystem"},
        "status": {"phase": "Bound"},
    }  # fmt: skip
    attachment_name = "csi-" + hashlib.sha256(f"{volume_id}{_CSI_DRIVER}{node.name}".encode()).hexdigest()
    attachment = {
        "spec": {"attacher": _CSI_DRIVER, "nodeName": node.name, "source": {"persistentVolumeName": pv_name}},
        "status": {"attached": True, "attachmentMetadata": {"devicePath": f"/dev/xvd{'ab'[index % 2]}a"}},
    }
    return [
        obj("ConfigMap", f"{app}-config", {"data": config}),
        obj("Secret", f"{app}-credentials", secret),
        obj("PersistentVolume", pv_name, pv, namespace=None, labels={},
            annotations={"pv.kubernetes.io/provisioned-by": _CSI_DRIVER}),
        obj("PersistentVolumeClaim", claim, pvc, annotations=pvc_annotations),
        obj("VolumeAttachment", attachment_name, attachment, api_version="storage.k8s.io/v1",
            namespace=None, labels={}, annotations={"csi.alpha.kubernetes.io/node-id": node.instance_id}),
        obj("Deployment", app, deployment, api_version="apps/v1"),
        obj("Service", app, service),
        pod,
    ]  # fmt: skip
