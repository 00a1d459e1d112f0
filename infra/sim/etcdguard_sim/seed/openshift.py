"""Seed data, part 2: the OpenShift kinds.

Machines, ClusterVersion, ClusterOperators, the static-pod operators' CRs (etcd, kube-apiserver,
kube-controller-manager, kube-scheduler), the cluster config (Proxy, APIServer, Infrastructure),
the `etcd-quorum-guard` Deployment and its pods, the per-node etcd secrets, the `etcd-scripts`
ConfigMap and the kubelet signer secret.
Shapes and messages follow `shared/reference/openshift-internals.md`.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from etcdguard_sim import layout
from etcdguard_sim.seed import core

Obj = dict[str, Any]

_MACHINE_API = "machine.openshift.io/v1beta1"
_AWS_PROVIDER = "awsproviderconfig.openshift.io/v1beta1"
_RELEASE = "quay.io/openshift-release-dev/ocp-release@sha256:"


# ---- machines ---------------------------------------------------------------------------------
def machine_object(spec: layout.SimSpec, node: layout.NodeSpec, *, clock: core.Clock) -> Obj:
    itype, infra = core.instance_type(node), spec.infra_id
    labels = {
        "machine.openshift.io/cluster-api-cluster": infra,
        "machine.openshift.io/cluster-api-machine-role": node.role,
        "machine.openshift.io/cluster-api-machine-type": node.role,
        "machine.openshift.io/instance-type": itype,
        "machine.openshift.io/region": core.region(node.zone),
        "machine.openshift.io/zone": node.zone,
    }
    if node.role == "worker":
        labels["machine.openshift.io/cluster-api-machineset"] = f"{infra}-worker-{node.zone}"
    provider: Obj = {
        "apiVersion": _AWS_PROVIDER,
        "kind": "AWSMachineProviderConfig",
        "ami": {"id": "ami-0" + core.digest("ami", spec.ocp_version, core.region(node.zone))[:16]},
        "blockDevices": [{"ebs": {"encrypted": True, "iops": 0, "kmsKey": {"arn": ""}, "volumeSize": 120,
                                  "volumeType": "gp3"}}],
        "credentialsSecret": {"name": "aws-cloud-credentials"},
        "deviceIndex": 0,
        "iamInstanceProfile": {"id": f"{infra}-{node.role}-profile"},
        "instanceType": itype,
        "metadata": {"creationTimestamp": None},
        "placement": {"availabilityZone": node.zone, "region": core.region(node.zone)},
        "securityGroups": [{"filters": [{"name": "tag:Name", "values": [f"{infra}-{node.role}-sg"]}]}],
        "subnet": {"filters": [{"name": "tag:Name", "values": [f"{infra}-private-{node.zone}"]}]},
        "tags": [{"name": f"kubernetes.io/cluster/{infra}", "value": "owned"}],
        "userDataSecret": {"name": f"{node.role}-user-data"},
    }  # fmt: skip
    if node.role == "master":
        provider["loadBalancers"] = [{"name": f"{infra}-int", "type": "network"},
                                     {"name": f"{infra}-ext", "type": "network"}]  # fmt: skip
    created = clock.installed + dt.timedelta(minutes=2)
    machine_spec = {
        "metadata": {},
        "providerSpec": {"value": provider},
        "providerID": f"aws:///{node.zone}/{node.instance_id}",
    }
    status = {
        "addresses": [
            {"type": "InternalIP", "address": node.ip},
            {"type": "InternalDNS", "address": node.name},
            {"type": "Hostname", "address": node.name},
        ],
        "lastUpdated": core.ts(clock.rebooted(node)),
        "nodeRef": {"kind": "Node", "name": node.name, "uid": core.uid(spec, kind="Node", name=node.name)},
        "phase": "Running",
        "providerStatus": {
            "apiVersion": _AWS_PROVIDER,
            "kind": "AWSMachineProviderStatus",
            "conditions": [{**core.condition("MachineCreation", True, since=created,
                                             reason="MachineCreationSucceeded",
                                             message="machine successfully created"),
                            "lastProbeTime": core.ts(created)}],
            "instanceId": node.instance_id,
            "instanceState": "running",
        },
    }  # fmt: skip
    return core.make(
        spec, api_version=_MACHINE_API, kind="Machine", name=node.machine_name,
        namespace="openshift-machine-api", created=created, labels=labels,
        annotations={"machine.openshift.io/instance-state": "running"},
        body={"spec": machine_spec, "status": status},
    )  # fmt: skip


# ---- cluster version and operators ------------------------------------------------------------
def previous_version(version: str) -> str | None:
    """The z-stream the cluster was installed at: two z-streams back (4.8.12 -> 4.8.10), or none."""
    match = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)", version)
    if match is None:
        raise ValueError(
            f"The simulated cluster's OpenShift version {version!r} is not of the form X.Y.Z: "
            "create the cluster with a release version such as 4.8.12."
        )
    major, minor, patch = (int(g) for g in match.groups())
    return f"{major}.{minor}.{max(patch - 2, 0)}" if patch > 0 else None


def _errata(version: str) -> str:
    """The release's errata page (the real one for 4.8.12, a made-up number for other versions)."""
    number = "3511" if version == "4.8.12" else str(int(core.digest("errata", version)[:8], 16) % 9000 + 1000)
    return f"https://access.redhat.com/errata/RHBA-2021:{number}"


def cluster_version(spec: layout.SimSpec, clock: core.Clock) -> Obj:
    current = spec.ocp_version
    before = previous_version(current)
    channel = "stable-" + ".".join(current.split(".")[:2])
    image = _RELEASE + core.digest("release", current)
    history = [
        {"state": "Completed", "startedTime": core.ts(clock.upgrade_started),
         "completionTime": core.ts(clock.upgrade_done), "version": current, "image": image, "verified": True},
    ]  # fmt: skip
    if before is not None:
        history.append({"state": "Completed", "startedTime": core.ts(clock.installed),
                        "completionTime": core.ts(clock.install_done), "version": before,
                        "image": _RELEASE + core.digest("release", before), "verified": False})  # fmt: skip
    else:
        history[0] |= {"startedTime": core.ts(clock.installed), "completionTime": core.ts(clock.install_done),
                       "verified": False}  # fmt: skip
    done = clock.upgrade_done if before is not None else clock.install_done
    conditions = [
        core.condition("Available", True, since=done, message=f"Done applying {current}"),
        core.condition("Failing", False, since=done),
        core.condition("Progressing", False, since=done, message=f"Cluster version is {current}"),
        core.condition("RetrievedUpdates", True, since=clock.installed + dt.timedelta(minutes=1)),
    ]
    status = {
        "availableUpdates": None,
        "conditions": conditions,
        "desired": {"version": current, "image": image, "channels": [f"candidate-{channel[7:]}",
                    f"fast-{channel[7:]}", channel], "url": _errata(current)},
        "history": history,
        "observedGeneration": 1,
        "versionHash": core.b64(core.digest("version-hash", current))[:12],
    }  # fmt: skip
    body = {
        "spec": {"channel": channel, "clusterID": spec.cluster_id,
                 "upstream": "https://api.openshift.com/api/upgrades_info/v1/graph"},
        "status": status,
    }  # fmt: skip
    return core.make(spec, api_version="config.openshift.io/v1", kind="ClusterVersion", name="version",
                     created=clock.installed, body=body)  # fmt: skip


# name -> (Available message, extra operand versions beyond `operator`; "" means the OCP version)
_OPERATORS: dict[str, tuple[str, dict[str, str]]] = {
    "authentication": ("All is well", {"oauth-apiserver": "", "oauth-openshift": "_openshift"}),
    "cloud-credential": ("", {}),
    "cluster-autoscaler": ("at version {v}", {}),
    "config-operator": ("", {}),
    "console": ("All is well", {}),
    "dns": ("DNS \"default\" is available.", {"coredns": "", "openshift-cli": ""}),
    "etcd": ("StaticPodsAvailable: {n} nodes are active; {n} nodes are at revision {r}\n"
             "EtcdMembersAvailable: {n} members are available", {"raw-internal": "", "etcd": ""}),
    "image-registry": ("Available: The registry is ready", {}),
    "ingress": ("The \"default\" ingress controller reports Available=True.", {"ingress-controller": ""}),
    "kube-apiserver": ("StaticPodsAvailable: {n} nodes are active; {n} nodes are at revision {r}",
                       {"raw-internal": "", "kube-apiserver": "k8s"}),
    "kube-controller-manager": ("StaticPodsAvailable: {n} nodes are active; {n} nodes are at revision {r}",
                                {"raw-internal": "", "kube-controller-manager": "k8s"}),
    "kube-scheduler": ("StaticPodsAvailable: {n} nodes are active; {n} nodes are at revision {r}",
                       {"raw-internal": "", "kube-scheduler": "k8s"}),
    "machine-api": ("Cluster Machine API Operator is available at {v}", {}),
    "machine-config": ("Cluster has deployed {v}", {}),
    "monitoring": ("Successfully rolled out the stack.", {}),
    "network": ("", {}),
    "openshift-apiserver": ("All is well", {"openshift-apiserver": ""}),
    "openshift-controller-manager": ("", {}),
    "operator-lifecycle-manager": ("", {"operator-lifecycle-manager": "0.18.3"}),
    "service-ca": ("", {}),
    "storage": ("AWSEBSCSIDriverOperatorCRAvailable: All is well", {}),
}  # fmt: skip


def cluster_operators(spec: layout.SimSpec, clock: core.Clock) -> list[Obj]:
    out: list[Obj] = []
    current, n = spec.ocp_version, len(spec.masters)
    for index, (name, (message, operands)) in enumerate(_OPERATORS.items()):
        since = clock.upgrade_done - dt.timedelta(minutes=len(_OPERATORS) - index)
        revision = layout.INITIAL_REVISIONS.get(name, 0)
        static = name in layout.INITIAL_REVISIONS
        degraded, progressing = "All is well", "All is well"
        if static:
            degraded = "NodeControllerDegraded: All master nodes are ready"
            progressing = f"NodeInstallerProgressing: {n} nodes are at revision {revision}"
        if name == "etcd":
            degraded += "\nEtcdMembersDegraded: No unhealthy members found"
            progressing += "\nEtcdMembersProgressing: No unstarted etcd members found"
        available = message.format(v=current, n=n, r=revision)
        conditions = [
            core.condition("Degraded", False, since=since, reason="AsExpected", message=degraded),
            core.condition("Progressing", False, since=since, reason="AsExpected", message=progressing),
            core.condition("Available", True, since=since, reason="AsExpected", message=available),
            core.condition("Upgradeable", True, since=since, reason="AsExpected", message="All is well"),
        ]
        known = {"": current, "k8s": core.KUBE_VERSION, "_openshift": f"{current}_openshift"}
        versions = [{"name": "operator", "version": current}]
        versions += [{"name": operand, "version": known.get(v, v)} for operand, v in operands.items()]
        status = {"conditions": conditions, "versions": versions, "extension": None, "relatedObjects": []}
        out.append(core.make(spec, api_version="config.openshift.io/v1", kind="ClusterOperator", name=name,
                             created=clock.installed + dt.timedelta(minutes=3),
                             body={"spec": {}, "status": status}))  # fmt: skip
    return out


def _etcd_member_conditions(n: int, since: dt.datetime) -> list[Obj]:
    """All members healthy: the messages of CEO's pkg/etcdcli/health.go for that case."""
    return [
        core.condition("EtcdMembersAvailable", True, since=since, reason="EtcdQuorate",
                       message=f"{n} members are available"),
        core.condition("EtcdMembersDegraded", False, since=since, reason="AsExpected",
                       message="No unhealthy members found"),
        core.condition("EtcdMembersProgressing", False, since=since, reason="AsExpected",
                       message="No unstarted etcd members found"),
    ]  # fmt: skip


# kind -> (its operand's key in INITIAL_REVISIONS, the extra controllers reporting `<name>Degraded`)
_STATIC_POD_OPERATORS: dict[str, tuple[str, tuple[str, ...]]] = {
    "Etcd": ("etcd", ("ClusterMemberController", "EtcdCertSignerController", "EtcdMembersController",
                      "EnvVarController", "ScriptController", "BootstrapTeardown", "QuorumGuardController")),
    "KubeAPIServer": ("kube-apiserver", ("CertRotationTimeUpgradeableController",
                                         "EncryptionMigrationController", "KubeAPIServerStaticResources",
                                         "ConfigObservation")),
    "KubeControllerManager": ("kube-controller-manager", ("KubeControllerManagerStaticResources",
                                                          "ConfigObservation")),
    "KubeScheduler": ("kube-scheduler", ("KubeSchedulerStaticResources", "ConfigObservation")),
}  # fmt: skip


def static_pod_operators(spec: layout.SimSpec, clock: core.Clock) -> list[Obj]:
    """`etcd/cluster`, `kubeapiserver/cluster`, ...: every master at the latest revision."""
    out: list[Obj] = []
    n = len(spec.masters)
    for kind, (operand, controllers) in _STATIC_POD_OPERATORS.items():
        revision = layout.INITIAL_REVISIONS[operand]
        since = clock.upgrade_started + dt.timedelta(minutes=50 + 6 * n)
        conditions: list[Obj] = []
        for prefix in ("Node", "Installer", "NodeInstaller", "RevisionController", "ResourceSyncController",
                       "TargetConfigController", "StaticPods", "InstallerPodPending",
                       "InstallerPodContainerWaiting", "InstallerPodNetworking", *controllers):  # fmt: skip
            message = "All master nodes are ready" if prefix == "Node" else ""
            conditions.append(
                core.condition(f"{prefix}Degraded", False, since=since, reason="AsExpected", message=message)
            )
        conditions += [
            core.condition("NodeInstallerProgressing", False, since=since, reason="AllNodesAtLatestRevision",
                           message=f"{n} nodes are at revision {revision}"),
            core.condition("StaticPodsAvailable", True, since=since, reason="AsExpected",
                           message=f"{n} nodes are active; {n} nodes are at revision {revision}"),
            core.condition("UnsupportedConfigOverridesUpgradeable", True, since=since,
                           reason="NoUnsupportedConfigOverrides",
                           message="No unsupported config overrides found"),
        ]  # fmt: skip
        if kind == "Etcd":
            conditions += _etcd_member_conditions(n, since)
        status = {
            "observedGeneration": 1,
            "latestAvailableRevision": revision,
            "readyReplicas": 0,
            "conditions": conditions,
            "nodeStatuses": [{"nodeName": node.name, "currentRevision": revision} for node in spec.masters],
        }
        body = {
            "spec": {"managementState": "Managed", "logLevel": "Normal", "operatorLogLevel": "Normal",
                     "forceRedeploymentReason": "", "unsupportedConfigOverrides": None, "observedConfig": {},
                     "failedRevisionLimit": 0, "succeededRevisionLimit": 0},
            "status": status,
        }  # fmt: skip
        out.append(core.make(spec, api_version="operator.openshift.io/v1", kind=kind, name="cluster",
                             created=clock.installed + dt.timedelta(minutes=4), body=body))  # fmt: skip
    return out


def cluster_config(spec: layout.SimSpec, clock: core.Clock, *, encryption: str | None) -> list[Obj]:
    """Proxy (none), APIServer (encryption as asked), Infrastructure (AWS) named `cluster`."""
    api = "config.openshift.io/v1"
    apiserver_spec: Obj = {"audit": {"profile": "Default"}}
    if encryption is not None:
        apiserver_spec["encryption"] = {"type": encryption}
    topology = "HighlyAvailable" if len(spec.masters) >= 3 else "SingleReplica"
    zone = spec.masters[0].zone if spec.masters else "us-east-1a"
    infra_status = {
        "apiServerURL": spec.api_url, "apiServerInternalURI": spec.api_url,
        "controlPlaneTopology": topology, "infrastructureTopology": topology,
        "etcdDiscoveryDomain": "", "infrastructureName": spec.infra_id, "platform": "AWS",
        "platformStatus": {"type": "AWS", "aws": {"region": core.region(zone)}},
    }  # fmt: skip
    made = clock.installed
    return [
        core.make(spec, api_version=api, kind="Proxy", name="cluster", created=made,
                  body={"spec": {"trustedCA": {"name": ""}}, "status": {}}),
        core.make(spec, api_version=api, kind="APIServer", name="cluster", created=made,
                  body={"spec": apiserver_spec, "status": {}}),
        core.make(spec, api_version=api, kind="Infrastructure", name="cluster", created=made,
                  body={"spec": {"cloudConfig": {"name": ""}, "platformSpec": {"type": "AWS", "aws": {}}},
                        "status": infra_status}),
    ]  # fmt: skip


def quorum_guard(spec: layout.SimSpec, clock: core.Clock) -> list[Obj]:
    """The 4.8 quorum guard: Deployment `etcd-quorum-guard`, one ready pod per master."""
    name, ns = "etcd-quorum-guard", "openshift-etcd"
    labels = {"app": name, "k8s-app": name, "name": name}
    replicas = len(spec.masters)
    template_hash = core.token(f"{spec.cluster_id}/{name}/{spec.ocp_version}", 10)
    probe = "curl -o /dev/null -kLfs https://$(NODE_IP):2379/health"
    template = {
        "metadata": {"labels": labels},
        "spec": {
            "hostNetwork": True,
            "nodeSelector": {"node-role.kubernetes.io/master": ""},
            "priorityClassName": "system-cluster-critical",
            "tolerations": [{"key": "node-role.kubernetes.io/master", "effect": "NoSchedule",
                             "operator": "Exists"}],
            "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"k8s-app": name}},
                 "topologyKey": "kubernetes.io/hostname"}]}},
            "containers": [{"name": "guard", "image": core.image("guard"),
                            "command": ["/bin/bash", "-c", "sleep infinity"],
                            "readinessProbe": {"exec": {"command": ["/bin/sh", "-c", probe]},
                                               "periodSeconds": 5, "failureThreshold": 3}}],
        },
    }  # fmt: skip
    rolled = clock.upgrade_started + dt.timedelta(minutes=30)
    status = {
        "observedGeneration": 1, "replicas": replicas, "updatedReplicas": replicas,
        "readyReplicas": replicas, "availableReplicas": replicas,
        "conditions": [
            core.condition("Available", True, since=rolled, reason="MinimumReplicasAvailable",
                           message="Deployment has minimum availability."),
            core.condition("Progressing", True, since=rolled, reason="NewReplicaSetAvailable",
                           message=f'ReplicaSet "{name}-{template_hash}" has successfully progressed.'),
        ],
    }  # fmt: skip
    selector = {"matchLabels": {"k8s-app": name}}
    body = {"spec": {"replicas": replicas, "selector": selector, "template": template}, "status": status}
    out = [core.make(spec, api_version="apps/v1", kind="Deployment", name=name, namespace=ns,
                     created=clock.joined(spec.masters[0]), labels=labels, body=body)]  # fmt: skip
    rs = f"{name}-{template_hash}"
    owner = core.replica_set_owner(spec, rs, namespace=ns)
    for node in spec.masters:
        pod_name = f"{rs}-{core.token(f'{spec.cluster_id}/{rs}/{node.name}', 5)}"
        out.append(core.pod_object(
            spec, node=node, namespace=ns, name=pod_name, containers=["guard"],
            labels={**labels, "pod-template-hash": template_hash},
            started=clock.rebooted(node) + dt.timedelta(minutes=4), static=False, owner=owner,
        ))  # fmt: skip
    return out


# ---- secrets and scripts ----------------------------------------------------------------------
def _etcd_env(spec: layout.SimSpec) -> str:
    """`etcd.env` as in the ConfigMap: `NODE_NAME` and `NODE_ENVVAR_NAME` are substituted on the host."""
    certs = "/etc/kubernetes/static-pod-certs"
    lines = {
        "ALL_ETCD_ENDPOINTS": ",".join(spec.etcd_endpoints()),
        "ETCDCTL_API": "3",
        "ETCDCTL_CACERT": f"{certs}/configmaps/etcd-serving-ca/ca-bundle.crt",
        "ETCDCTL_CERT": f"{certs}/secrets/etcd-all-certs/etcd-peer-NODE_NAME.crt",
        "ETCDCTL_KEY": f"{certs}/secrets/etcd-all-certs/etcd-peer-NODE_NAME.key",
        "ETCDCTL_ENDPOINTS": ",".join(spec.etcd_endpoints()),
        "ETCD_DATA_DIR": "/var/lib/etcd",
        "ETCD_IMAGE": core.image("etcd"),
        "ETCD_QUOTA_BACKEND_BYTES": str(8 * 1024**3),
    }
    for node in spec.masters:
        lines[f"NODE_{node.safe_name}_ETCD_NAME"] = node.name
        lines[f"NODE_{node.safe_name}_ETCD_URL_HOST"] = node.ip
        lines[f"NODE_{node.safe_name}_IP"] = node.ip
    return "".join(f'export {key}="{value}"\n' for key, value in lines.items())


def etcd_namespace_objects(spec: layout.SimSpec, clock: core.Clock) -> list[Obj]:
    """Per master `etcd-peer|serving|serving-metrics-<node>` secrets, and `etcd-scripts`."""
    out: list[Obj] = []
    for node in spec.masters:
        for kind in ("peer", "serving", "serving-metrics"):
            created = clock.joined(node)
            not_after = created + dt.timedelta(days=3 * 365)
            name = f"etcd-{kind}-{node.name}"
            out.append(core.tls_secret(spec, name=name, namespace="openshift-etcd", created=created,
                                       not_after=not_after))  # fmt: skip
    placeholder = "#!/usr/bin/env bash\n# {0}: the simulator installs the working script on each host.\n"
    data = {
        "etcd.env": _etcd_env(spec),
        "cluster-backup.sh": placeholder.format("cluster-backup.sh"),
        "cluster-restore.sh": placeholder.format("cluster-restore.sh"),
        "etcd-common-tools": placeholder.format("etcd-common-tools"),
    }
    out.append(core.make(spec, api_version="v1", kind="ConfigMap", name="etcd-scripts",
                         namespace="openshift-etcd", created=clock.installed,
                         body={"data": data}))  # fmt: skip
    return out


def kubelet_signer(spec: layout.SimSpec, clock: core.Clock) -> Obj:
    """`kube-apiserver-to-kubelet-signer`: issued at install, valid for 365 days."""
    secret = core.tls_secret(
        spec, name="kube-apiserver-to-kubelet-signer", namespace="openshift-kube-apiserver-operator",
        created=clock.installed, not_after=clock.installed + core.SIGNER_VALIDITY,
    )  # fmt: skip
    secret["metadata"]["annotations"]["auth.openshift.io/certificate-issuer"] = secret["metadata"]["name"]
    return secret
