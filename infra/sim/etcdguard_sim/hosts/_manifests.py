"""The static pod manifests of a simulated OpenShift 4.8 control-plane host, as plain dicts.

Shapes follow the operators' bindata of 4.8 (CEO `bindata/etcd/pod.yaml` and `restore-pod.yaml`,
the kube-apiserver, kube-controller-manager and kube-scheduler operators' `pod.yaml`): names,
namespaces, labels, container names and order, `hostPath` volumes naming the revision directory
(`cluster-backup.sh` greps a manifest for `/etc/kubernetes/static-pod-resources/<x>-pod-N`).

Differences that the simulator needs, all in the container commands:
- The kubelet stand-in runs each container as a process on the host, without volume mounts, so
  commands use host paths (`/etc/kubernetes/static-pod-resources/etcd-certs/...`, not the pod's
  `/etc/kubernetes/static-pod-certs/...`) and bind the node's own address, never 0.0.0.0: every
  host shares the machine's network namespace.
- `/bin/sh` is dash on the machine, so the scripts use `set -eu` (no `pipefail`).
- Only the etcd member (and the restore pod's etcd) is a real service; every other container
  runs `sleep infinity` in place of its component (the simulator serves the API itself).
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Literal

import yaml

from etcdguard_sim import layout

__all__ = [
    "CERTS_ON_HOST",
    "COMPONENTS",
    "IMAGE_PREFIX",
    "POD_CERTS",
    "Component",
    "component_pod",
    "dump",
    "etcd_env_vars",
    "etcd_pod",
    "image",
    "restore_pod",
]

Component = Literal["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"]
COMPONENTS: tuple[Component, ...] = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")

IMAGE_PREFIX = "quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:"
RESOURCES = "/etc/kubernetes/static-pod-resources"
# Where the etcd pod sees its cert dir, and where the same directory is on the host.
POD_CERTS = "/etc/kubernetes/static-pod-certs"
CERTS_ON_HOST = f"{RESOURCES}/etcd-certs"


def image(container: str) -> str:
    """The image reference of a container (the kubelet stand-in publishes the same one)."""
    return IMAGE_PREFIX + hashlib.sha256(container.encode()).hexdigest()


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True  # a shared list is written out twice, never as an anchor and alias


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump(obj: Any) -> str:
    """YAML as the installer writes it: keys in the given order, scripts as literal blocks."""
    return yaml.dump(obj, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=4096)


# ---- etcd ------------------------------------------------------------------------------------
def etcd_env_vars(spec: layout.SimSpec, node: layout.NodeSpec) -> dict[str, str]:
    """The etcd environment of `node` (CEO pkg/etcdenvvar, after the installer substituted
    NODE_NAME): the same map feeds `etcd.env` and the `env` of every etcd pod container."""
    endpoints = ",".join(spec.etcd_endpoints())
    env = {
        "ALL_ETCD_ENDPOINTS": endpoints,
        "ETCDCTL_API": "3",
        "ETCDCTL_CACERT": f"{POD_CERTS}/configmaps/etcd-serving-ca/ca-bundle.crt",
        "ETCDCTL_CERT": f"{POD_CERTS}/secrets/etcd-all-certs/etcd-peer-{node.name}.crt",
        "ETCDCTL_ENDPOINTS": endpoints,
        "ETCDCTL_KEY": f"{POD_CERTS}/secrets/etcd-all-certs/etcd-peer-{node.name}.key",
        "ETCD_DATA_DIR": "/var/lib/etcd",
        "ETCD_ELECTION_TIMEOUT": "1000",
        "ETCD_ENABLE_PPROF": "true",
        "ETCD_HEARTBEAT_INTERVAL": "100",
        "ETCD_IMAGE": image("etcd"),
        "ETCD_INITIAL_CLUSTER_STATE": "existing",
        "ETCD_QUOTA_BACKEND_BYTES": "8589934592",
    }
    for master in spec.masters:
        env[f"NODE_{master.safe_name}_ETCD_NAME"] = master.name
        env[f"NODE_{master.safe_name}_ETCD_URL_HOST"] = master.ip
        env[f"NODE_{master.safe_name}_IP"] = master.ip
    return dict(sorted(env.items()))


def _env_list(spec: layout.SimSpec, node: layout.NodeSpec, **extra: str) -> list[dict[str, str]]:
    items = [{"name": k, "value": v} for k, v in etcd_env_vars(spec, node).items()]
    return items + [{"name": k, "value": v} for k, v in extra.items()]


def _tls_flags(node: layout.NodeSpec) -> str:
    certs = f"{CERTS_ON_HOST}/secrets/etcd-all-certs"
    return "\n".join(
        [
            f"  --cert-file={certs}/etcd-serving-{node.name}.crt \\",
            f"  --key-file={certs}/etcd-serving-{node.name}.key \\",
            f"  --trusted-ca-file={CERTS_ON_HOST}/configmaps/etcd-serving-ca/ca-bundle.crt \\",
            "  --client-cert-auth=true \\",
            f"  --peer-cert-file={certs}/etcd-peer-{node.name}.crt \\",
            f"  --peer-key-file={certs}/etcd-peer-{node.name}.key \\",
            f"  --peer-trusted-ca-file={CERTS_ON_HOST}/configmaps/etcd-peer-client-ca/ca-bundle.crt \\",
            "  --peer-client-cert-auth=true \\",
        ]
    )


def _etcd_script(
    spec: layout.SimSpec,
    node: layout.NodeSpec,
    *,
    initial_cluster: str,
    initial_cluster_state: Literal["new", "existing"],
) -> str:
    ip = f"${{NODE_{node.safe_name}_IP}}"
    return "\n".join(
        [
            "#!/bin/sh",
            "set -eu",
            "",
            "# etcd 3.4 refuses a flag that an ETCD_* variable also sets: name, data dir (ETCD_DATA_DIR)",
            "# and the initial cluster come from the environment, as in OpenShift's etcd pod.",
            f'export ETCD_NAME="${{NODE_{node.safe_name}_ETCD_NAME}}"',
            f'export ETCD_INITIAL_CLUSTER="{initial_cluster}"',
            f'export ETCD_INITIAL_CLUSTER_STATE="{initial_cluster_state}"',
            "env | grep ETCD | grep -v NODE || true",
            "",
            "set -x",
            "exec etcd \\",
            "  --logger=zap \\",
            "  --log-level=info \\",
            f"  --initial-cluster-token={spec.etcd_cluster_token} \\",
            f"  --initial-advertise-peer-urls=https://{ip}:{layout.ETCD_PEER_PORT} \\",
            _tls_flags(node),
            f"  --advertise-client-urls=https://{ip}:{layout.ETCD_CLIENT_PORT} \\",
            f"  --listen-client-urls=https://{ip}:{layout.ETCD_CLIENT_PORT} \\",
            f"  --listen-peer-urls=https://{ip}:{layout.ETCD_PEER_PORT}",
            "",
        ]
    )


_SLEEP = "trap TERM INT; sleep infinity & wait"
_ETCD_LABELS = {"app": "etcd", "k8s-app": "etcd", "etcd": "true"}


def _stand_in(component: str) -> list[str]:
    return ["/bin/bash", "-c", f"# stands in for {component}: the simulator serves it\nexec sleep infinity\n"]


def _metadata(name: str, namespace: str, labels: dict[str, str], revision: int) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": {**labels, "revision": str(revision)}}


def _host_path(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "hostPath": {"path": path}}


def etcd_pod(
    spec: layout.SimSpec,
    node: layout.NodeSpec,
    *,
    revision: int,
    initial_cluster: str,
    initial_cluster_state: Literal["new", "existing"],
) -> dict[str, Any]:
    """`etcd-pod.yaml`: containers `etcdctl, etcd, etcd-metrics, etcd-health-monitor, etcd-readyz`."""
    script = _etcd_script(
        spec, node, initial_cluster=initial_cluster, initial_cluster_state=initial_cluster_state
    )
    commands = {
        "etcdctl": ["/bin/bash", "-c", _SLEEP],
        "etcd": ["/bin/sh", "-c", script],
        "etcd-metrics": _stand_in("etcd-metrics"),
        "etcd-health-monitor": _stand_in("etcd-health-monitor"),
        "etcd-readyz": _stand_in("etcd-readyz"),
    }
    containers = [
        {
            "name": name,
            "image": image(name),
            "imagePullPolicy": "IfNotPresent",
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "command": command,
            "env": _env_list(spec, node, ETCD_STATIC_POD_VERSION=str(revision)),
            "securityContext": {"privileged": True},
        }
        for name, command in commands.items()
    ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": _metadata(
            "etcd", "openshift-etcd", {"app": "etcd", "k8s-app": "etcd", "etcd": "true"}, revision
        ),
        "spec": {
            "containers": containers,
            "hostNetwork": True,
            "priorityClassName": "system-node-critical",
            "tolerations": [{"operator": "Exists"}],
            "volumes": [
                _host_path("static-pod-dir", "/etc/kubernetes/manifests"),
                _host_path("resource-dir", f"{RESOURCES}/etcd-pod-{revision}"),
                _host_path("cert-dir", CERTS_ON_HOST),
                _host_path("data-dir", "/var/lib/etcd"),
                _host_path("usr-local-bin", "/usr/local/bin"),
                _host_path("log-dir", "/var/log/etcd"),
            ],
        },
    }


def _restore_script(node: layout.NodeSpec) -> str:
    safe = node.safe_name
    return "\n".join(
        [
            "#!/bin/sh",
            "set -eu",
            "",
            f'export ETCD_NAME="${{NODE_{safe}_ETCD_NAME}}"',
            f'export ETCD_INITIAL_CLUSTER="${{ETCD_NAME}}=https://${{NODE_{safe}_ETCD_URL_HOST}}:2380"',
            "env | grep ETCD | grep -v NODE || true",
            f"export ETCD_NODE_PEER_URL=https://${{NODE_{safe}_ETCD_URL_HOST}}:2380",
            "",
            "# checking if data directory is empty, if not etcdctl restore will fail",
            'if [ -n "$(ls -A /var/lib/etcd)" ]; then',
            '  echo "please delete the contents of data directory before restoring, running the restore'
            ' script will do this for you"',
            "  exit 1",
            "fi",
            "",
            "# check if we have backup file to be restored",
            "# if the file exist, check if it has not changed size in last 5 seconds",
            "if [ ! -f /var/lib/etcd-backup/snapshot.db ]; then",
            '  echo "please make a copy of the snapshot db file, then move that copy to'
            ' /var/lib/etcd-backup/snapshot.db"',
            "  exit 1",
            "else",
            '  filesize=$(stat --format=%s "/var/lib/etcd-backup/snapshot.db")',
            "  sleep 5",
            '  newfilesize=$(stat --format=%s "/var/lib/etcd-backup/snapshot.db")',
            '  if [ "$filesize" != "$newfilesize" ]; then',
            '    echo "file size has changed since last 5 seconds, retry sometime after copying is complete"',
            "    exit 1",
            "  fi",
            "fi",
            "",
            "UUID=$(uuidgen 2>/dev/null || cat /proc/sys/kernel/random/uuid)",
            'echo "restoring to a single node cluster"',
            "ETCDCTL_API=3 /usr/bin/etcdctl snapshot restore /var/lib/etcd-backup/snapshot.db \\",
            '  --name "$ETCD_NAME" \\',
            '  --initial-cluster="$ETCD_INITIAL_CLUSTER" \\',
            '  --initial-cluster-token "openshift-etcd-${UUID}" \\',
            '  --initial-advertise-peer-urls "$ETCD_NODE_PEER_URL" \\',
            '  --data-dir="/var/lib/etcd/restore-${UUID}"',
            "",
            'mv "/var/lib/etcd/restore-${UUID}"/* /var/lib/etcd/',
            "",
            'rmdir "/var/lib/etcd/restore-${UUID}"',
            "rm /var/lib/etcd-backup/snapshot.db",
            "",
            "# a single-member cluster: name, data dir and initial cluster from the environment",
            "export ETCD_INITIAL_CLUSTER_STATE=new",
            "set -x",
            "exec etcd \\",
            "  --logger=zap \\",
            "  --log-level=info \\",
            '  --initial-cluster-token="openshift-etcd-${UUID}" \\',
            f"  --initial-advertise-peer-urls=https://${{NODE_{safe}_IP}}:2380 \\",
            _tls_flags(node),
            f"  --advertise-client-urls=https://${{NODE_{safe}_IP}}:2379 \\",
            f"  --listen-client-urls=https://${{NODE_{safe}_IP}}:2379 \\",
            f"  --listen-peer-urls=https://${{NODE_{safe}_IP}}:2380",
            "",
        ]
    )


def restore_pod(spec: layout.SimSpec, node: layout.NodeSpec, *, revision: int) -> dict[str, Any]:
    """`restore-etcd-pod/pod.yaml`: one `etcd` container that restores the snapshot and runs a
    single-member cluster (4.8 CEO `bindata/etcd/restore-pod.yaml`)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": _metadata(
            "etcd", "openshift-etcd", {"app": "etcd", "k8s-app": "etcd", "etcd": "true"}, revision
        ),
        "spec": {
            "containers": [
                {
                    "name": "etcd",
                    "image": image("etcd"),
                    "imagePullPolicy": "IfNotPresent",
                    "terminationMessagePolicy": "FallbackToLogsOnError",
                    "command": ["/bin/sh", "-c", _restore_script(node)],
                    "env": _env_list(spec, node, ETCD_STATIC_POD_REV=str(revision)),
                    "securityContext": {"privileged": True},
                }
            ],
            "hostNetwork": True,
            "priorityClassName": "system-node-critical",
            "tolerations": [{"operator": "Exists"}],
            "volumes": [
                _host_path("static-pod-dir", "/etc/kubernetes/manifests"),
                _host_path("cert-dir", CERTS_ON_HOST),
                _host_path("data-dir", "/var/lib/etcd"),
                _host_path("backup-dir", "/var/lib/etcd-backup"),
            ],
        },
    }


# ---- the other control-plane components ----------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Shape:
    pod_name: str
    namespace: str
    labels: dict[str, str]
    containers: tuple[str, ...]


_SHAPES: dict[str, _Shape] = {
    "kube-apiserver": _Shape(
        "kube-apiserver",
        "openshift-kube-apiserver",
        {"app": "openshift-kube-apiserver", "apiserver": "true"},
        (
            "kube-apiserver",
            "kube-apiserver-cert-syncer",
            "kube-apiserver-cert-regeneration-controller",
            "kube-apiserver-insecure-readyz",
            "kube-apiserver-check-endpoints",
        ),
    ),
    "kube-controller-manager": _Shape(
        "kube-controller-manager",
        "openshift-kube-controller-manager",
        {"app": "kube-controller-manager", "kube-controller-manager": "true"},
        (
            "kube-controller-manager",
            "cluster-policy-controller",
            "kube-controller-manager-cert-syncer",
            "kube-controller-manager-recovery-controller",
        ),
    ),
    "kube-scheduler": _Shape(
        "openshift-kube-scheduler",
        "openshift-kube-scheduler",
        {"app": "openshift-kube-scheduler", "scheduler": "true"},
        ("kube-scheduler", "kube-scheduler-cert-syncer", "kube-scheduler-recovery-controller"),
    ),
}


def component_pod(component: str, *, revision: int) -> dict[str, Any]:
    """`<component>-pod.yaml` of kube-apiserver, kube-controller-manager or kube-scheduler."""
    try:
        shape = _SHAPES[component]
    except KeyError:
        raise ValueError(
            f"no static pod shape for component {component!r}: use one of {sorted(_SHAPES)}"
            " (etcd has its own)"
        ) from None
    containers = [
        {
            "name": name,
            "image": image(name),
            "imagePullPolicy": "IfNotPresent",
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "command": _stand_in(name),
        }
        for name in shape.containers
    ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": _metadata(shape.pod_name, shape.namespace, shape.labels, revision),
        "spec": {
            "containers": containers,
            "hostNetwork": True,
            "priorityClassName": "system-node-critical",
            "tolerations": [{"operator": "Exists"}],
            "volumes": [
                _host_path("resource-dir", f"{RESOURCES}/{component}-pod-{revision}"),
                _host_path("cert-dir", f"{RESOURCES}/{component}-certs"),
            ],
        },
    }
