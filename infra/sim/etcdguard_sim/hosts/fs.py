"""The files of a simulated RHCOS 4.8 control-plane host, written from outside the host.

A host's tree lives under `spec.host_root(node)` and is seen inside the host (`hostns`) at the
usual paths:

    /etc/kubernetes/manifests/{etcd,kube-apiserver,kube-controller-manager,kube-scheduler}-pod.yaml
    /etc/kubernetes/static-pod-resources/<component>-pod-<N>/      one per installed revision:
        <component>-pod.yaml, configmaps/, secrets/
        (kube-apiserver: secrets/encryption-config/encryption-config when encryption is on)
    /etc/kubernetes/static-pod-resources/etcd-certs/               the etcd installer's cert dir:
        configmaps/etcd-scripts/{etcd.env,etcd-common-tools,cluster-backup.sh,cluster-restore.sh}
        configmaps/{etcd-serving-ca,etcd-peer-client-ca}/ca-bundle.crt
        configmaps/restore-etcd-pod/pod.yaml
        secrets/etcd-all-certs/etcd-{peer,serving}-<node>.{crt,key}   for every master
    /etc/kubernetes/static-pod-certs -> static-pod-resources/etcd-certs   (see below)
    /etc/kubernetes/static-pod-resources/kube-apiserver-certs/secrets/node-kubeconfigs/localhost.kubeconfig
    /usr/local/bin/{cluster-backup.sh,cluster-restore.sh,crictl,systemctl,shutdown,oc}
    /home/core (.ssh 0700), /var/lib/etcd (0700)

`etcd.env` keeps the 4.8 paths `/etc/kubernetes/static-pod-certs/...` (where the etcd pod mounts
its cert dir). On a host those paths exist through the `static-pod-certs` symlink that the
4.4-4.8 scripts create ("TODO handle properly" in CEO's cluster-backup.sh); the simulator creates
it up front, so sourcing `etcd.env` and running `etcdctl` works on a host from the start.

`install_revision` is what an installer pod does for a new revision; `populate_host` installs
every component at its revision plus the files that do not change per revision. Both are
idempotent and deterministic (same inputs, same bytes), so a second call changes no manifest and
the kubelet restarts nothing.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import pwd
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from etcdguard_sim import layout
from etcdguard_sim.hosts import _manifests

__all__ = [
    "COMPONENTS",
    "HOST_COMMANDS",
    "encryption_config",
    "etcd_env",
    "install_revision",
    "populate_host",
]

COMPONENTS = _manifests.COMPONENTS
HOSTBIN = Path(__file__).parent / "bin"
HOST_COMMANDS: tuple[str, ...] = (
    "cluster-backup.sh",
    "cluster-restore.sh",
    "crictl",
    "systemctl",
    "shutdown",
    "oc",
)
_SCRIPTS = ("cluster-backup.sh", "cluster-restore.sh", "etcd-common-tools")
_ENCRYPTION_TYPES = (None, "identity", "aescbc")


# ---- small file helpers -----------------------------------------------------------------------
def _write(path: Path, data: str | bytes, *, mode: int = 0o644) -> None:
    """Write `path` atomically (temp file + rename) with `mode`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    tmp = path.parent / f".{path.name}.tmp"
    tmp.write_bytes(raw)
    tmp.chmod(mode)
    tmp.replace(path)


def _etc(spec: layout.SimSpec, node: layout.NodeSpec) -> Path:
    return spec.host_root(node) / "etc" / "kubernetes"


def _hostbin(name: str, node: layout.NodeSpec) -> str:
    """A file of `bin/`; the etcd scripts with the installer's substitutions of
    NODE_ENVVAR_NAME (the node name with `-` and `.` as `_`) and NODE_NAME."""
    text = (HOSTBIN / name).read_text()
    if name in _SCRIPTS:
        text = text.replace("NODE_ENVVAR_NAME", node.safe_name).replace("NODE_NAME", node.name)
    return text


# ---- contents ---------------------------------------------------------------------------------
def etcd_env(spec: layout.SimSpec, node: layout.NodeSpec) -> str:
    """`etcd.env` of `node`: `export KEY="value"` lines, keys sorted, as CEO's script controller
    writes it (ETCDCTL_* with the 4.8 `/etc/kubernetes/static-pod-certs/...` paths, which exist on
    the host through the `static-pod-certs` symlink)."""
    lines = [f'export {k}="{v}"' for k, v in _manifests.etcd_env_vars(spec, node).items()]
    return "\n".join(lines) + "\n"


def encryption_config(spec: layout.SimSpec, encryption: str) -> str:
    """The kube-apiserver's EncryptionConfiguration for `encryption` ("aescbc" or "identity").

    The aescbc key is derived from the cluster id, so every host and every revision holds the
    same key (on a real cluster the operator keeps it in a secret and installers copy it).
    """
    providers: list[dict[str, object]] = [{"identity": {}}]
    if encryption == "aescbc":
        key = hashlib.sha256(f"{spec.cluster_id}/encryption/aescbc/1".encode()).digest()
        secret = base64.b64encode(key).decode()
        providers = [{"aescbc": {"keys": [{"name": "1", "secret": secret}]}}, {"identity": {}}]
    return _manifests.dump(
        {
            "apiVersion": "apiserver.config.k8s.io/v1",
            "kind": "EncryptionConfiguration",
            "resources": [
                {"resources": ["secrets"], "providers": providers},
                {"resources": ["configmaps"], "providers": providers},
            ],
        }
    )


def _config_yaml(component: str) -> str:
    kinds = {
        "kube-apiserver": "KubeAPIServerConfig",
        "kube-controller-manager": "KubeControllerManagerConfig",
        "kube-scheduler": "KubeSchedulerConfiguration",
    }
    return _manifests.dump(
        {"apiVersion": "kubecontrolplane.config.openshift.io/v1", "kind": kinds[component]}
    )


def _revision_files(
    spec: layout.SimSpec,
    node: layout.NodeSpec,
    *,
    component: str,
    revision: int,
    manifest: str,
    encryption: str | None,
) -> dict[str, tuple[str | bytes, int]]:
    """Relative path -> (content, mode) of `static-pod-resources/<component>-pod-<N>/`."""
    files: dict[str, tuple[str | bytes, int]] = {
        f"{component}-pod.yaml": (manifest, 0o644),
        f"configmaps/{component}-pod/pod.yaml": (manifest, 0o644),
        f"configmaps/{component}-pod/version": (str(revision), 0o644),
        f"configmaps/{component}-pod/forceRedeploymentReason": ("", 0o644),
    }
    etcd_pki = spec.pki_dir / "etcd"
    if component == "etcd":
        ca = spec.etcd_ca.read_bytes()
        files["configmaps/etcd-serving-ca/ca-bundle.crt"] = (ca, 0o644)
        files["configmaps/etcd-peer-client-ca/ca-bundle.crt"] = (ca, 0o644)
        for name, (content, mode) in _all_certs(spec).items():
            files[f"secrets/etcd-all-certs/{name}"] = (content, mode)
        return files
    files["configmaps/config/config.yaml"] = (_config_yaml(component), 0o644)
    token = hashlib.sha256(f"{spec.cluster_id}/{component}/localhost-recovery".encode()).hexdigest()
    files["secrets/localhost-recovery-client-token/token"] = (token, 0o600)
    files["secrets/localhost-recovery-client-token/namespace"] = (f"openshift-{component}", 0o600)
    if component == "kube-apiserver":
        files["configmaps/etcd-serving-ca/ca-bundle.crt"] = (spec.etcd_ca.read_bytes(), 0o644)
        files["secrets/etcd-client/tls.crt"] = ((etcd_pki / "apiserver-etcd-client.crt").read_bytes(), 0o600)
        files["secrets/etcd-client/tls.key"] = ((etcd_pki / "apiserver-etcd-client.key").read_bytes(), 0o600)
        if encryption is not None:
            files["secrets/encryption-config/encryption-config"] = (
                encryption_config(spec, encryption),
                0o600,
            )
    return files


def _all_certs(spec: layout.SimSpec) -> dict[str, tuple[bytes, int]]:
    """`etcd-all-certs`: the peer and serving pair of every master."""
    out: dict[str, tuple[bytes, int]] = {}
    for master in spec.masters:
        for kind in ("peer", "serving"):
            crt, key = spec.etcd_cert(master, kind)
            out[crt.name] = (crt.read_bytes(), 0o600)
            out[key.name] = (key.read_bytes(), 0o600)
    return out


def _write_tree(target: Path, files: Mapping[str, tuple[str | bytes, int]]) -> None:
    """Replace directory `target` with exactly `files`, built aside and renamed into place."""
    staging = target.parent / f".{target.name}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    for rel, (content, mode) in files.items():
        _write(staging / rel, content, mode=mode)
    old = target.parent / f".{target.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)


# ---- what an installer pod does -----------------------------------------------------------------
def install_revision(
    spec: layout.SimSpec,
    node: layout.NodeSpec,
    *,
    component: str,
    revision: int,
    encryption: str | None = None,
    initial_cluster: str | None = None,
    initial_cluster_state: Literal["new", "existing"] = "existing",
) -> None:
    """Install revision `revision` of `component` on `node`, as the operator's installer pod does.

    Writes `static-pod-resources/<component>-pod-<revision>/` (replacing it if present), then
    replaces `manifests/<component>-pod.yaml` atomically with the manifest labelled
    `revision: "<revision>"`; the kubelet then restarts the pod.

    `encryption` (kube-apiserver only): the APIServer's `spec.encryption.type` (None, "identity"
    or "aescbc"); with a value the revision holds `secrets/encryption-config/encryption-config`.
    `initial_cluster` / `initial_cluster_state` (etcd only): the member's `--initial-cluster`
    (default: every master of the spec) and `--initial-cluster-state`. For etcd this also
    refreshes the cert dir `static-pod-resources/etcd-certs/` (scripts, CA bundles, certificates,
    restore pod), as the etcd installer does.
    """
    if component not in COMPONENTS:
        raise ValueError(f"unknown component {component!r}: use one of {', '.join(COMPONENTS)}")
    if revision < 1:
        raise ValueError(f"revision must be a positive integer, got {revision} for {component}")
    if encryption not in _ENCRYPTION_TYPES:
        raise ValueError(f"unknown encryption type {encryption!r}: use None (off), 'identity' or 'aescbc'")
    if initial_cluster_state not in ("new", "existing"):
        raise ValueError(f"initial_cluster_state must be 'new' or 'existing', got {initial_cluster_state!r}")
    if component == "etcd":
        pod = _manifests.etcd_pod(
            spec,
            node,
            revision=revision,
            initial_cluster=initial_cluster or spec.etcd_initial_cluster(),
            initial_cluster_state=initial_cluster_state,
        )
    else:
        pod = _manifests.component_pod(component, revision=revision)
    manifest = _manifests.dump(pod)
    etc = _etc(spec, node)
    files = _revision_files(
        spec, node, component=component, revision=revision, manifest=manifest, encryption=encryption
    )
    _write_tree(etc / "static-pod-resources" / f"{component}-pod-{revision}", files)
    if component == "etcd":
        _write_etcd_certs(spec, node, revision=revision)
    _write(etc / "manifests" / f"{component}-pod.yaml", manifest)


def _write_etcd_certs(spec: layout.SimSpec, node: layout.NodeSpec, *, revision: int) -> None:
    certs = _etc(spec, node) / "static-pod-resources" / "etcd-certs"
    scripts = certs / "configmaps" / "etcd-scripts"
    _write(scripts / "etcd.env", etcd_env(spec, node))
    for name in _SCRIPTS:
        _write(scripts / name, _hostbin(name, node), mode=0o755)
    ca = spec.etcd_ca.read_bytes()
    _write(certs / "configmaps" / "etcd-serving-ca" / "ca-bundle.crt", ca)
    _write(certs / "configmaps" / "etcd-peer-client-ca" / "ca-bundle.crt", ca)
    restore = _manifests.dump(_manifests.restore_pod(spec, node, revision=revision))
    _write(certs / "configmaps" / "restore-etcd-pod" / "pod.yaml", restore)
    for name, (content, mode) in _all_certs(spec).items():
        _write(certs / "secrets" / "etcd-all-certs" / name, content, mode=mode)


# ---- a whole host ---------------------------------------------------------------------------------
def _install_commands(spec: layout.SimSpec, node: layout.NodeSpec) -> None:
    """`/usr/local/bin`: the etcd scripts (as the etcd pod's resources-copy init container puts
    them there) and the stand-ins for crictl, systemctl, shutdown and oc."""
    bin_dir = spec.host_root(node) / "usr" / "local" / "bin"
    for name in HOST_COMMANDS:
        _write(bin_dir / name, _hostbin(name, node), mode=0o755)


def _home(spec: layout.SimSpec, node: layout.NodeSpec) -> None:
    home = spec.host_root(node) / "home" / "core"
    ssh_dir = home / ".ssh"
    ssh_dir.mkdir(parents=True, exist_ok=True)
    ssh_dir.chmod(0o700)
    try:
        core = pwd.getpwnam("core")
    except KeyError:
        return
    for path in (home, ssh_dir):
        os.chown(path, core.pw_uid, core.pw_gid)


def populate_host(
    spec: layout.SimSpec,
    node: layout.NodeSpec,
    *,
    revisions: Mapping[str, int],
    encryption: str | None,
    api_kubeconfig: bytes,
) -> None:
    """Write the whole tree of control-plane host `node` (idempotent, deterministic).

    `revisions` maps each of etcd, kube-apiserver, kube-controller-manager, kube-scheduler to the
    revision the host runs (e.g. `layout.INITIAL_REVISIONS`); `encryption` is the APIServer's
    encryption type (None, "identity", "aescbc"); `api_kubeconfig` is the kubeconfig the host's
    `oc` (and the Progressing check of `cluster-backup.sh`) uses: it becomes
    `kube-apiserver-certs/secrets/node-kubeconfigs/localhost.kubeconfig`.
    The etcd member is configured for a new cluster of every master of `spec`.
    """
    if node.role != "master":
        raise ValueError(f"{node.name} is a {node.role}: only control-plane hosts get a host tree")
    missing = [c for c in COMPONENTS if c not in revisions]
    if missing:
        raise ValueError(f"revisions lacks {', '.join(missing)}: give a revision for each of {COMPONENTS}")
    for component in COMPONENTS:
        install_revision(
            spec,
            node,
            component=component,
            revision=revisions[component],
            encryption=encryption if component == "kube-apiserver" else None,
            initial_cluster_state="new",
        )
    etc = _etc(spec, node)
    for component in ("kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        (etc / "static-pod-resources" / f"{component}-certs" / "secrets").mkdir(parents=True, exist_ok=True)
    kubeconfigs = etc / "static-pod-resources" / "kube-apiserver-certs" / "secrets" / "node-kubeconfigs"
    _write(kubeconfigs / "localhost.kubeconfig", api_kubeconfig, mode=0o600)
    link = etc / "static-pod-certs"
    if not link.is_symlink() and not link.exists():
        with contextlib.suppress(FileExistsError):
            link.symlink_to("static-pod-resources/etcd-certs")
    _install_commands(spec, node)
    _home(spec, node)
    data_dir = spec.etcd_data_dir(node)
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)
