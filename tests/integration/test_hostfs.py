"""The files and commands of a simulated RHCOS 4.8 control-plane host (`etcdguard_sim.hosts.fs`).

Three hosts (mount namespaces) of one cluster on 127.6.0.0/24 get their tree from
`populate_host` (etcd encryption on); the simulator's kubelet stand-in runs their static pods,
so the etcd members are the ones the manifests describe. A fourth, spare host (same node name
and certificates as the first master, encryption off, no kubelet) holds hand-written state for
`crictl`, `systemctl` and `shutdown`, and the refusal cases. Commands run inside a host with
`nsenter`, as root with sudo's PATH unless a test drops to `nobody`.

The tests share the module's cluster and run in file order: the restore test, last, replaces
the first member's data.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import json
import os
import re
import shutil
import socket
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from etcdguard_sim import layout, pki
from etcdguard_sim.hosts import fs as hostfs
from etcdguard_sim.hosts import kubelet
from etcdguard_sim.hosts import ns as hostns
from etcdguard_sim.runtime import control

pytestmark = pytest.mark.integration

PREFIX = "127.6.0"
API = f"{PREFIX}.100"
API_PORT = 6443
HOST_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "KUBECACHEDIR": "/tmp/kube-cache",
}
BACKUP = "/home/core/assets/backup"
NAME_RE = r"\d{4}-\d\d-\d\d_\d{6}"
KUBECONFIG = yaml.safe_dump(
    {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "sim", "cluster": {"server": f"http://{API}:{API_PORT}"}}],
        "users": [{"name": "admin", "user": {"token": "sim"}}],
        "contexts": [{"name": "admin", "context": {"cluster": "sim", "user": "admin"}}],
        "current-context": "admin",
    }
).encode()


@dataclasses.dataclass
class Host:
    spec: layout.SimSpec
    node: layout.NodeSpec
    pid: int

    @property
    def root(self) -> Path:
        return self.spec.host_root(self.node)

    def run(
        self,
        *argv: str,
        user: str | None = None,
        timeout: float = 60,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        cmd = list(argv)
        if user == "nobody":
            cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--", *cmd]
        return subprocess.run(
            hostns.enter_argv(self.pid, cmd),
            env={**HOST_ENV, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def etcdctl(self, *args: str, endpoint: str | None = None) -> subprocess.CompletedProcess[str]:
        """etcdctl on the host with `etcd.env`, as an admin would run it."""
        env = "source /etc/kubernetes/static-pod-resources/etcd-certs/configmaps/etcd-scripts/etcd.env"
        point = f" ETCDCTL_ENDPOINTS={endpoint}" if endpoint else ""
        return self.run("bash", "-c", f"{env} &&{point} etcdctl " + " ".join(args))


@dataclasses.dataclass
class Cluster:
    spec: layout.SimSpec
    hosts: list[Host]  # the three masters, kubelets running
    spare: Host  # master 0's name and certificates, encryption off, no kubelet
    kubelet_errors: list[BaseException]


def _wait(check: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(0.2)


@contextlib.contextmanager
def _claim(state_dir: Path) -> Iterator[None]:
    """Hold 127.6.0.0/24 in the simulator's claims so `control.up` elsewhere skips it."""
    control.CLAIMS_DIR.mkdir(parents=True, exist_ok=True)
    claim = control.CLAIMS_DIR / PREFIX
    with open(control.CLAIMS_DIR / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if claim.exists():
            owner = Path(claim.read_text().strip())
            if (owner / "sim.json").exists():
                raise AssertionError(f"{PREFIX}.0/24 is claimed by a running simulator in {owner}")
        claim.write_text(str(state_dir))
        fcntl.flock(lock, fcntl.LOCK_UN)
    try:
        yield
    finally:
        claim.unlink(missing_ok=True)


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp("hostfs")
    spec = layout.make_spec(state_dir=base / "sim", prefix=PREFIX, workers=0, encryption="aescbc")
    spare_spec = dataclasses.replace(spec, state_dir=base / "spare", encryption=None)
    busy = [f"{n.ip}:{p}" for n in spec.masters for p in (2379, 2380) if not _port_free(n.ip, p)]
    assert not busy, f"{', '.join(busy)} already in use: stop what listens there"
    for s in (spec, spare_spec):
        s.run_dir.mkdir(parents=True)
        s.save()
    pki.ensure_pki(spec)
    shutil.copytree(spec.pki_dir, spare_spec.pki_dir)
    stop = threading.Event()
    errors: list[BaseException] = []
    started: list[tuple[layout.SimSpec, layout.NodeSpec, subprocess.Popen[bytes]]] = []
    kubelets: list[tuple[kubelet.Kubelet, int]] = []
    loop = threading.Thread(target=lambda: None)
    with _claim(spec.state_dir):
        try:
            for s, node, enc in [(spec, n, "aescbc") for n in spec.masters] + [
                (spare_spec, spec.masters[0], None)
            ]:
                started.append((s, node, hostns.start_holder(s, node)))
                hostfs.populate_host(
                    s, node, revisions=layout.INITIAL_REVISIONS, encryption=enc, api_kubeconfig=KUBECONFIG
                )
            hosts = [Host(spec, node, proc.pid) for _, node, proc in started[:3]]
            kubelets = [(kubelet.Kubelet(spec, h.node), h.pid) for h in hosts]

            def sync_forever() -> None:
                while not stop.is_set():
                    for k, pid in kubelets:
                        try:
                            k.sync(holder_pid=pid)
                        except Exception as exc:  # reported by the tests, never lost in the thread
                            errors.append(exc)
                    stop.wait(0.25)

            loop = threading.Thread(target=sync_forever, name="kubelets")
            loop.start()
            spare = Host(spare_spec, spec.masters[0], started[3][2].pid)
            yield Cluster(spec=spec, hosts=hosts, spare=spare, kubelet_errors=errors)
        finally:
            stop.set()
            if loop.is_alive():
                loop.join(timeout=30)
            for k, _ in kubelets:
                k.stop_all()
            for s, node, proc in started:
                hostns.stop_holder(s, node)
                proc.wait(timeout=10)
                for pipe in (proc.stdout, proc.stderr):
                    if pipe is not None:
                        pipe.close()


def _healthy(host: Host, endpoint: str | None = None) -> bool:
    return host.etcdctl("endpoint", "health", endpoint=endpoint or host.node.etcd_client_url).returncode == 0


@pytest.fixture(scope="module")
def running(cluster: Cluster) -> Cluster:
    """The cluster once its three members, started by the kubelets from the manifests, answer."""
    for host in cluster.hosts:
        _wait(functools.partial(_healthy, host), timeout=45, what=f"etcd on {host.node.name} answering")
    assert cluster.kubelet_errors == []
    return cluster


# ---- the tree ------------------------------------------------------------------------------
def _files(root: Path) -> dict[str, tuple[bytes, int]]:
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            out[str(path.relative_to(root))] = (path.read_bytes(), path.stat().st_mode & 0o7777)
    return out


def test_host_tree_holds_manifests_revisions_certs_and_commands(cluster: Cluster) -> None:
    spec = cluster.spec
    etc = cluster.hosts[0].root / "etc" / "kubernetes"
    res = etc / "static-pod-resources"
    for component, revision in layout.INITIAL_REVISIONS.items():
        manifest = yaml.safe_load((etc / "manifests" / f"{component}-pod.yaml").read_text())
        assert manifest["metadata"]["labels"]["revision"] == str(revision)
        rev_dir = res / f"{component}-pod-{revision}"
        assert (rev_dir / f"{component}-pod.yaml").read_bytes() == (
            etc / "manifests" / f"{component}-pod.yaml"
        ).read_bytes()
        assert (rev_dir / "configmaps").is_dir()
        assert (rev_dir / "secrets").is_dir()
    etcd_pod = yaml.safe_load((etc / "manifests" / "etcd-pod.yaml").read_text())
    assert [c["name"] for c in etcd_pod["spec"]["containers"]] == [
        "etcdctl",
        "etcd",
        "etcd-metrics",
        "etcd-health-monitor",
        "etcd-readyz",
    ]
    assert etcd_pod["metadata"]["labels"] == {
        "app": "etcd",
        "k8s-app": "etcd",
        "etcd": "true",
        "revision": "7",
    }
    enc = yaml.safe_load(
        (res / "kube-apiserver-pod-12/secrets/encryption-config/encryption-config").read_text()
    )
    assert enc["kind"] == "EncryptionConfiguration"
    assert "aescbc" in enc["resources"][0]["providers"][0]
    spare_res = cluster.spare.root / "etc/kubernetes/static-pod-resources"
    assert not (spare_res / "kube-apiserver-pod-12/secrets/encryption-config").exists()
    certs = res / "etcd-certs"
    for master in spec.masters:
        for kind in ("peer", "serving"):
            crt, key = spec.etcd_cert(master, kind)
            assert (certs / "secrets/etcd-all-certs" / crt.name).read_bytes() == crt.read_bytes()
            assert (certs / "secrets/etcd-all-certs" / key.name).stat().st_mode & 0o777 == 0o600
    assert (certs / "configmaps/etcd-serving-ca/ca-bundle.crt").read_bytes() == spec.etcd_ca.read_bytes()
    restore = yaml.safe_load((certs / "configmaps/restore-etcd-pod/pod.yaml").read_text())
    assert [c["name"] for c in restore["spec"]["containers"]] == ["etcd"]
    kubeconfig = res / "kube-apiserver-certs/secrets/node-kubeconfigs/localhost.kubeconfig"
    assert kubeconfig.read_bytes() == KUBECONFIG
    for name in hostfs.HOST_COMMANDS:
        assert (cluster.hosts[0].root / "usr/local/bin" / name).stat().st_mode & 0o777 == 0o755
    assert spec.etcd_data_dir(spec.masters[0]).stat().st_mode & 0o777 == 0o700
    assert (cluster.hosts[0].root / "home/core/.ssh").stat().st_mode & 0o777 == 0o700
    # Inside the host, etcd.env's 4.8 paths resolve through the static-pod-certs symlink.
    env = hostfs.etcd_env(spec, spec.masters[0])
    cacert = re.search(r'ETCDCTL_CACERT="([^"]+)"', env)
    assert cacert is not None
    assert cluster.hosts[0].run("test", "-f", cacert.group(1)).returncode == 0


def test_populate_host_is_idempotent(cluster: Cluster) -> None:
    spare = cluster.spare
    before = _files(spare.root / "etc")
    hostfs.populate_host(
        spare.spec, spare.node, revisions=layout.INITIAL_REVISIONS, encryption=None, api_kubeconfig=KUBECONFIG
    )
    assert _files(spare.root / "etc") == before


def test_etcd_env_lists_every_member(cluster: Cluster) -> None:
    spec = cluster.spec
    node = spec.masters[1]
    lines = hostfs.etcd_env(spec, node).splitlines()
    assert lines == sorted(lines)
    env: dict[str, str] = {}
    for line in lines:
        m = re.fullmatch(r'export (\w+)="(.*)"', line)
        assert m is not None, line
        env[m.group(1)] = m.group(2)
    endpoints = ",".join(f"https://{PREFIX}.{i}:2379" for i in (1, 2, 3))
    assert env["ETCDCTL_API"] == "3"
    assert env["ETCDCTL_ENDPOINTS"] == env["ALL_ETCD_ENDPOINTS"] == endpoints
    certs = "/etc/kubernetes/static-pod-certs"
    assert env["ETCDCTL_CACERT"] == f"{certs}/configmaps/etcd-serving-ca/ca-bundle.crt"
    assert env["ETCDCTL_CERT"] == f"{certs}/secrets/etcd-all-certs/etcd-peer-{node.name}.crt"
    assert env["ETCDCTL_KEY"] == f"{certs}/secrets/etcd-all-certs/etcd-peer-{node.name}.key"
    assert env["ETCD_DATA_DIR"] == "/var/lib/etcd"
    for master in spec.masters:
        assert env[f"NODE_{master.safe_name}_IP"] == master.ip
        assert env[f"NODE_{master.safe_name}_ETCD_NAME"] == master.name


# ---- the members the manifests start ---------------------------------------------------------
def test_static_pods_run_one_three_member_cluster(running: Cluster) -> None:
    host = running.hosts[0]
    listed = host.etcdctl("member", "list", "-w", "json")
    assert listed.returncode == 0, listed.stderr
    members = json.loads(listed.stdout)["members"]
    assert sorted((m["name"], m["peerURLs"], m["clientURLs"]) for m in members) == sorted(
        (n.name, [n.etcd_peer_url], [n.etcd_client_url]) for n in running.spec.masters
    )
    ps = host.run("crictl", "ps", "--name", "^etcd$", "-o", "json")
    assert ps.returncode == 0, ps.stderr
    [etcd] = json.loads(ps.stdout)["containers"]
    assert etcd["state"] == "CONTAINER_RUNNING"
    assert etcd["labels"]["io.kubernetes.pod.name"] == f"etcd-{host.node.name}"
    assert etcd["labels"]["io.kubernetes.pod.namespace"] == "openshift-etcd"


# ---- crictl ------------------------------------------------------------------------------------
def _container(name: str, pod: str, state: str, age: float, cid: str) -> dict[str, Any]:
    return {
        "id": cid * 64,
        "name": name,
        "pod": pod,
        "namespace": "openshift-etcd",
        "state": state,
        "attempt": 2 if state == "CONTAINER_EXITED" else 0,
        "created_at": int((time.time() - age) * 1e9),
        "image": "quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:" + "ab" * 32,
        "pod_id": "0123456789abc",
        "exit_code": None if state == "CONTAINER_RUNNING" else 1,
    }


@pytest.fixture
def containers_json(cluster: Cluster) -> Iterator[Path]:
    path = cluster.spare.root / "run/sim/containers.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    pod = f"etcd-{cluster.spare.node.name}"
    path.write_text(
        json.dumps(
            [
                _container("etcd", pod, "CONTAINER_RUNNING", 90, "a"),
                _container("etcdctl", pod, "CONTAINER_RUNNING", 5000, "b"),
                _container("etcd-metrics", pod, "CONTAINER_EXITED", 3, "c"),
            ]
        )
    )
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def test_crictl_ps_table_lists_running_containers_newest_first(
    cluster: Cluster, containers_json: Path
) -> None:
    out = cluster.spare.run("crictl", "ps")
    assert out.returncode == 0, out.stderr
    header, *rows = out.stdout.splitlines()
    assert re.split(r"\s{2,}", header) == [
        "CONTAINER",
        "IMAGE",
        "CREATED",
        "STATE",
        "NAME",
        "ATTEMPT",
        "POD ID",
    ]
    assert [re.split(r"\s{2,}", r) for r in rows] == [
        ["a" * 13, "ab" * 32, "About a minute ago", "Running", "etcd", "0", "0123456789abc"],
        ["b" * 13, "ab" * 32, "About an hour ago", "Running", "etcdctl", "0", "0123456789abc"],
    ]
    # Columns are aligned as crictl's tabwriter does (minimum width 20, padding 3).
    assert header.index("CREATED") == 13 + 7 + 64 + 3 == rows[0].index("About")
    assert header.index("STATE") == rows[0].index("Running")


def test_crictl_ps_filters(cluster: Cluster, containers_json: Path) -> None:
    run = cluster.spare.run
    assert run("crictl", "ps", "--label", "io.kubernetes.container.name=etcd", "-q").stdout == "a" * 64 + "\n"
    assert run("crictl", "ps", "--label=io.kubernetes.container.name=etcd-metrics", "-q").stdout == ""
    assert run("crictl", "ps", "-a", "--name", "^etcd-m", "-q").stdout == "c" * 64 + "\n"
    assert run("crictl", "ps", "--state", "exited", "-q").stdout == "c" * 64 + "\n"
    assert run("crictl", "ps", "-a", "-q").stdout.split() == ["c" * 64, "a" * 64, "b" * 64]
    out = json.loads(
        run("crictl", "ps", "--label", "io.kubernetes.container.name=etcdctl", "-o", "json").stdout
    )
    [c] = out["containers"]
    assert c["metadata"] == {"name": "etcdctl", "attempt": 0}
    assert c["podSandboxId"] == "0123456789abc"


def test_crictl_without_state_file_lists_nothing_and_refuses_non_root(cluster: Cluster) -> None:
    out = cluster.spare.run("crictl", "ps", "-q")
    assert (out.returncode, out.stdout) == (0, "")
    denied = cluster.spare.run("crictl", "ps", user="nobody")
    assert denied.returncode == 1
    assert "permission denied" in denied.stderr
    unknown = cluster.spare.run("crictl", "frobnicate")
    assert (unknown.returncode, unknown.stderr.strip()) == (3, "No help topic for 'frobnicate'")


# ---- systemctl, shutdown, oc ---------------------------------------------------------------------
def test_systemctl_drops_kubelet_requests(cluster: Cluster) -> None:
    spare = cluster.spare
    requests = spare.root / "run/sim/requests"
    for argv, request in (
        (["restart", "kubelet"], "kubelet-restart"),
        (["restart", "kubelet.service"], "kubelet-restart"),
        (["stop", "kubelet"], "kubelet-stop"),
    ):
        out = spare.run("systemctl", "--no-block", *argv)
        assert out.returncode == 0, out.stderr
        assert (requests / request).exists()
        (requests / request).unlink()
    missing = spare.run("systemctl", "restart", "foo")
    assert (missing.returncode, missing.stderr.strip()) == (
        5,
        "Failed to restart foo.service: Unit foo.service not found.",
    )
    (spare.root / "run/sim/kubelet.json").write_text('{"state": "inactive", "restarted_at": 0}')
    try:
        inactive = spare.run("systemctl", "is-active", "kubelet")
        assert (inactive.returncode, inactive.stdout) == (3, "inactive\n")
    finally:
        (spare.root / "run/sim/kubelet.json").unlink()


def test_systemctl_restart_waits_for_the_kubelet(running: Cluster) -> None:
    host = running.hosts[2]
    state = host.root / "run/sim/kubelet.json"
    before = json.loads(state.read_text())["restarted_at"]
    out = host.run("sudo", "systemctl", "restart", "kubelet.service")
    assert out.returncode == 0, out.stderr
    assert not (host.root / "run/sim/requests/kubelet-restart").exists()
    _wait(
        lambda: json.loads(state.read_text())["restarted_at"] > before, timeout=5, what="kubelet.json update"
    )
    active = host.run("systemctl", "is-active", "kubelet")
    assert (active.returncode, active.stdout) == (0, "active\n")


def test_shutdown_schedules_and_cancels_power_off(cluster: Cluster) -> None:
    spare = cluster.spare
    request = spare.root / "run/sim/requests/shutdown"
    out = spare.run("shutdown", "-h", "1")
    assert out.returncode == 0, out.stderr
    m = re.fullmatch(
        r"Shutdown scheduled for \w{3} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) \w+, use 'shutdown -c' to cancel\.\n",
        out.stdout,
    )
    assert m is not None, out.stdout
    assert abs(int(request.read_text()) - (time.time() + 60)) < 5
    assert spare.run("shutdown", "-c").returncode == 0
    assert not request.exists()
    now = spare.run("shutdown", "-h", "now")
    assert (now.returncode, now.stdout) == (0, "")
    assert abs(int(request.read_text()) - time.time()) < 5
    request.unlink()
    denied = spare.run("shutdown", "-h", "1", user="nobody")
    assert (denied.returncode, denied.stderr.strip()) == (1, "Must be root.")
    assert not request.exists()


def test_oc_uses_the_node_kubeconfig(cluster: Cluster) -> None:
    out = cluster.spare.run("oc", "config", "view", "-o", "jsonpath={.clusters[0].cluster.server}")
    assert (out.returncode, out.stdout) == (0, f"http://{API}:{API_PORT}")


# ---- cluster-backup.sh --------------------------------------------------------------------------
def _backup_files(host: Host) -> list[str]:
    directory = host.root / BACKUP.lstrip("/")
    return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []


@pytest.fixture
def clean_backups(cluster: Cluster) -> None:
    for host in [*cluster.hosts, cluster.spare]:
        shutil.rmtree(host.root / BACKUP.lstrip("/"), ignore_errors=True)


def test_backup_force_saves_snapshot_and_static_resources(
    running: Cluster, clean_backups: None, tmp_path: Path
) -> None:
    host = running.hosts[0]
    out = host.run("cluster-backup.sh", "--force", BACKUP)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    res = "/etc/kubernetes/static-pod-resources"
    assert lines[:5] == [
        f"found latest kube-apiserver: {res}/kube-apiserver-pod-12",
        f"found latest kube-controller-manager: {res}/kube-controller-manager-pod-8",
        f"found latest kube-scheduler: {res}/kube-scheduler-pod-6",
        f"found latest etcd: {res}/etcd-pod-7",
        "etcdctl is already installed",
    ]
    assert lines[-1] == f"snapshot db and kube resources are successfully saved to {BACKUP}"
    status = json.loads(lines[-2])
    assert set(status) == {"hash", "revision", "totalKey", "totalSize"}
    snap, tar = _backup_files(host)
    assert re.fullmatch(rf"snapshot_({NAME_RE})__POSSIBLY_DIRTY__\.db", snap)
    assert tar == snap.replace("snapshot_", "static_kuberesources_").replace(".db", ".tar.gz")
    assert f'"endpoint":"{host.node.etcd_client_url}"' in out.stderr  # the local member only
    directory = host.root / BACKUP.lstrip("/")
    assert (directory / tar).stat().st_mode & 0o777 == 0o600
    assert (directory / snap).stat().st_size % 512 == 32  # etcdctl's sha256 trailer
    with tarfile.open(directory / tar) as archive:
        names = archive.getnames()
    for component, revision in layout.INITIAL_REVISIONS.items():
        assert f"static-pod-resources/{component}-pod-{revision}/{component}-pod.yaml" in names
    assert "static-pod-resources/kube-apiserver-pod-12/secrets/encryption-config/encryption-config" in names
    # The snapshot is a real one: etcdctl outside the host reads it.
    copy = tmp_path / "snap.db"
    shutil.copy(directory / snap, copy)
    checked = subprocess.run(
        ["etcdctl", "snapshot", "status", str(copy), "-w", "json"],
        env={**os.environ, "ETCDCTL_API": "3"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert json.loads(checked.stdout)["totalKey"] == status["totalKey"]


def test_backup_with_encryption_off_has_no_encryption_config(running: Cluster, clean_backups: None) -> None:
    spare = running.spare  # master 0's certificates: it reaches that member at 127.6.0.1
    # As the guide runs it (`sudo -E` with the cluster's proxy): a proxy that does not exist
    # must not matter, since etcdctl never proxies loopback addresses.
    proxy = "http://127.6.0.250:3128"
    proxy_env = {"HTTP_PROXY": proxy, "HTTPS_PROXY": proxy, "NO_PROXY": ".cluster.local,.svc"}
    out = spare.run("cluster-backup.sh", "--force", BACKUP, env=proxy_env)
    assert out.returncode == 0, out.stdout + out.stderr
    [tar] = [n for n in _backup_files(spare) if n.endswith(".tar.gz")]
    with tarfile.open(spare.root / BACKUP.lstrip("/") / tar) as archive:
        names = archive.getnames()
    assert "static-pod-resources/kube-apiserver-pod-12/kube-apiserver-pod.yaml" in names
    assert not [n for n in names if "encryption-config" in n]


def test_backup_refusals(cluster: Cluster, clean_backups: None) -> None:
    spare = cluster.spare
    not_root = spare.run("/usr/local/bin/cluster-backup.sh", "--force", "/tmp/b", user="nobody")
    assert (not_root.returncode, not_root.stdout) == (1, "This script must be run as root\n")
    usage = "Path to backup dir required: ./cluster-backup.sh [--force] <path-to-backup-dir>\n"
    no_dir = spare.run("cluster-backup.sh", "--force")
    assert (no_dir.returncode, no_dir.stdout) == (1, usage)
    a_file = spare.run("cluster-backup.sh", "/etc/kubernetes/manifests/etcd-pod.yaml")
    assert (a_file.returncode, a_file.stdout) == (1, usage)
    manifest = spare.root / "etc/kubernetes/manifests/kube-scheduler-pod.yaml"
    manifest.rename(spare.root / "tmp/kube-scheduler-pod.yaml")
    try:
        missing = spare.run("cluster-backup.sh", "--force", BACKUP)
    finally:
        (spare.root / "tmp/kube-scheduler-pod.yaml").rename(manifest)
    assert missing.returncode == 1
    assert missing.stdout.splitlines()[-1] == (
        "error finding manifests for the kube-scheduler pod. please check if it is running."
    )
    assert _backup_files(spare) == []
    no_api = spare.run("cluster-backup.sh", BACKUP)
    assert (no_api.returncode, no_api.stdout) == (
        1,
        "Could not find the status of the kube-apiserver. Check if the API server is running."
        " Pass the --force flag to skip checks.\n",
    )
    assert _backup_files(spare) == []


def test_backup_of_a_corrupted_snapshot_fails_and_removes_both_files(
    running: Cluster, clean_backups: None
) -> None:
    spare = running.spare
    # An etcdctl whose saved snapshot loses its bbolt meta pages on the way to disk.
    wrapper = spare.root / "usr/local/bin/etcdctl"
    wrapper.write_text(
        "#!/bin/bash\n"
        '/usr/bin/etcdctl "$@" || exit $?\n'
        'if [ "$1 $2" = "snapshot save" ]; then\n'
        '  dd if=/dev/zero of="$3" bs=4096 count=2 conv=notrunc status=none\n'
        "fi\n"
    )
    wrapper.chmod(0o755)
    try:
        out = spare.run("cluster-backup.sh", "--force", BACKUP)
    finally:
        wrapper.unlink()
    assert out.returncode == 1
    assert (
        out.stdout.splitlines()[-1]
        == "Backup integrity verification failed. Backup appears corrupted. Aborting!"
    )
    assert _backup_files(spare) == []  # the ERR trap removed the snapshot and the tarball


class _FakeApi(BaseHTTPRequestHandler):
    """Just enough of the API for `oc get co NAME` (legacy discovery + one ClusterOperator)."""

    progressing: ClassVar[dict[str, str]] = {}

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, code: int, body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        version = {"groupVersion": "config.openshift.io/v1", "version": "v1"}
        group = {"name": "config.openshift.io", "versions": [version], "preferredVersion": version}
        co = "/apis/config.openshift.io/v1/clusteroperators/"
        if path == "/api":
            self._send(200, {"kind": "APIVersions", "versions": ["v1"]})
        elif path == "/apis":
            self._send(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": [group]})
        elif path == "/api/v1":
            self._send(200, {"kind": "APIResourceList", "groupVersion": "v1", "resources": []})
        elif path == "/apis/config.openshift.io/v1":
            resource = {
                "name": "clusteroperators",
                "singularName": "clusteroperator",
                "namespaced": False,
                "kind": "ClusterOperator",
                "shortNames": ["co"],
                "verbs": ["get", "list"],
            }
            self._send(
                200,
                {
                    "kind": "APIResourceList",
                    "groupVersion": "config.openshift.io/v1",
                    "resources": [resource],
                },
            )
        elif path.startswith(co) and path[len(co) :] in self.progressing:
            name = path[len(co) :]
            conditions = [{"type": "Available", "status": "True"}]
            conditions.append({"type": "Progressing", "status": self.progressing[name]})
            obj = {
                "apiVersion": "config.openshift.io/v1",
                "kind": "ClusterOperator",
                "metadata": {"name": name},
            }
            self._send(200, {**obj, "status": {"conditions": conditions}})
        else:
            self._send(404, {"kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404})


@contextlib.contextmanager
def _fake_api(progressing: dict[str, str]) -> Iterator[None]:
    handler = type("Handler", (_FakeApi,), {"progressing": progressing})
    server = ThreadingHTTPServer((API, API_PORT), handler)
    thread = threading.Thread(target=server.serve_forever, name="fake-api")
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_backup_checks_that_no_operator_is_progressing(running: Cluster, clean_backups: None) -> None:
    host = running.hosts[0]
    operators = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd")
    with _fake_api({**dict.fromkeys(operators, "False"), "kube-scheduler": "True"}):
        refused = host.run("cluster-backup.sh", BACKUP)
    assert refused.returncode == 1
    assert refused.stdout.splitlines()[-1] == (
        "Currently the kube-scheduler operator is progressing. A reliable backup requires that a rollout"
        " is not in progress.  Aborting!"
    )
    assert _backup_files(host) == []
    with _fake_api(dict.fromkeys(operators, "False")):
        clean = host.run("cluster-backup.sh", BACKUP)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    snap, tar = _backup_files(host)
    assert re.fullmatch(rf"snapshot_{NAME_RE}\.db", snap)
    assert re.fullmatch(rf"static_kuberesources_{NAME_RE}\.tar\.gz", tar)


# ---- a new revision ------------------------------------------------------------------------------
def test_install_revision_restarts_the_member_with_its_data(running: Cluster, clean_backups: None) -> None:
    host = running.hosts[1]
    before = json.loads(host.etcdctl("member", "list", "-w", "json").stdout)["members"]
    old_id = host.run("crictl", "ps", "--name", "^etcd$", "-q").stdout
    hostfs.install_revision(running.spec, host.node, component="etcd", revision=8)
    res = host.root / "etc/kubernetes/static-pod-resources"
    assert (res / "etcd-pod-7").is_dir()
    assert (res / "etcd-pod-8/etcd-pod.yaml").is_file()
    manifest = yaml.safe_load((host.root / "etc/kubernetes/manifests/etcd-pod.yaml").read_text())
    assert manifest["metadata"]["labels"]["revision"] == "8"
    _wait(
        lambda: host.run("crictl", "ps", "--name", "^etcd$", "-q").stdout not in ("", old_id),
        timeout=15,
        what="the kubelet restarting etcd from the new manifest",
    )
    _wait(lambda: _healthy(host), timeout=30, what="the member answering again")
    after = json.loads(host.etcdctl("member", "list", "-w", "json").stdout)["members"]
    assert sorted(m["ID"] for m in after) == sorted(m["ID"] for m in before)  # same member, same data
    out = host.run("cluster-backup.sh", "--force", BACKUP)
    assert "found latest etcd: /etc/kubernetes/static-pod-resources/etcd-pod-8" in out.stdout.splitlines()
    with pytest.raises(ValueError, match="unknown component 'kube-proxy'"):
        hostfs.install_revision(running.spec, host.node, component="kube-proxy", revision=1)


# ---- cluster-restore.sh --------------------------------------------------------------------------
def test_restore_refusals(cluster: Cluster) -> None:
    spare = cluster.spare
    usage = spare.run("cluster-restore.sh")
    assert usage.returncode == 1
    assert usage.stdout.splitlines()[0] == (
        "Path to the directory containing backup files is required: ./cluster-restore.sh <path-to-backup>"
    )
    assert spare.run("cluster-restore.sh", "/home/core/nowhere").returncode == 1
    empty = spare.run("bash", "-c", "mkdir -p /home/core/empty && cluster-restore.sh /home/core/empty")
    assert (empty.returncode, empty.stdout) == (1, "etcd snapshot  does not exist\n")
    not_root = spare.run("/usr/local/bin/cluster-restore.sh", "/home/core/empty", user="nobody")
    assert (not_root.returncode, not_root.stdout) == (1, "This script must be run as root\n")
    assert (spare.root / "etc/kubernetes/manifests/etcd-pod.yaml").exists()  # nothing was moved


def test_restore_brings_back_a_single_member_from_the_backup(running: Cluster, clean_backups: None) -> None:
    """Guide 4.3.2 on the recovery host: stop etcd elsewhere, run the script, wait for etcd."""
    recovery, *others = running.hosts
    local = recovery.node.etcd_client_url
    assert recovery.etcdctl("put", "/sim/before", "1", endpoint=local).returncode == 0
    backup = recovery.run("cluster-backup.sh", "--force", BACKUP)
    assert backup.returncode == 0, backup.stdout + backup.stderr
    assert recovery.etcdctl("put", "/sim/after", "2", endpoint=local).returncode == 0
    for host in others:
        assert host.run("mv", "/etc/kubernetes/manifests/etcd-pod.yaml", "/tmp").returncode == 0
    out = recovery.run("cluster-restore.sh", BACKUP, timeout=90)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "etcdctl is already installed"
    stops = [line for line in lines if line.startswith("...stopping")]
    assert stops == [
        "...stopping kube-apiserver-pod.yaml",
        "...stopping kube-controller-manager-pod.yaml",
        "...stopping kube-scheduler-pod.yaml",
        "...stopping etcd-pod.yaml",
    ]
    for name in (
        "etcd",
        "etcdctl",
        "etcd-metrics",
        "kube-controller-manager",
        "kube-apiserver",
        "kube-scheduler",
    ):
        i = lines.index(f"Waiting for container {name} to stop")
        assert re.fullmatch(r"\.*complete", lines[i + 1])
    resources = "static-pod-resources"
    assert lines[-8:] == [
        "Moving etcd data-dir /var/lib/etcd/member to /var/lib/etcd-backup",
        "starting restore-etcd static pod",
        "starting kube-apiserver-pod.yaml",
        f"{resources}/kube-apiserver-pod-12/kube-apiserver-pod.yaml",
        "starting kube-controller-manager-pod.yaml",
        f"{resources}/kube-controller-manager-pod-8/kube-controller-manager-pod.yaml",
        "starting kube-scheduler-pod.yaml",
        f"{resources}/kube-scheduler-pod-6/kube-scheduler-pod.yaml",
    ]
    stopped = recovery.root / "home/core/assets/manifests-stopped"
    assert sorted(p.name for p in stopped.iterdir()) == sorted(
        f"{c}-pod.yaml" for c in layout.INITIAL_REVISIONS
    )
    _wait(lambda: _healthy(recovery), timeout=45, what="the restored single-member etcd answering")
    members = json.loads(recovery.etcdctl("member", "list", "-w", "json", endpoint=local).stdout)["members"]
    assert [(m["name"], m["peerURLs"]) for m in members] == [
        (recovery.node.name, [recovery.node.etcd_peer_url])
    ]
    keys = recovery.etcdctl("get", "--prefix", "/sim/", "--keys-only", endpoint=local).stdout.split()
    assert keys == ["/sim/before"]
    assert (recovery.root / "var/lib/etcd-backup/member").is_dir()  # the old data, kept aside
    assert not (recovery.root / "var/lib/etcd-backup/snapshot.db").exists()
    ps = json.loads(
        recovery.run(
            "crictl", "ps", "--label", "io.kubernetes.pod.namespace=openshift-etcd", "-o", "json"
        ).stdout
    )
    assert [c["metadata"]["name"] for c in ps["containers"]] == ["etcd"]  # the restore pod
    assert running.kubelet_errors == []
