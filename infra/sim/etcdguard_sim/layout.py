"""The simulated cluster's shape: its nodes, addresses and files under the state directory.

One `SimSpec` describes one simulated OpenShift cluster. `etcdguard-sim up` writes it to
`DIR/sim.json`; every simulator process (etcd supervisor, API server, later the hosts and
controllers) reads it from there, so they all agree on names, addresses and paths.

Addresses: every simulated cluster gets its own loopback /24 (`127.A.B.0/24`), so two clusters
in two state directories never collide. Control-plane host N (1-3) has `127.A.B.N`; workers
have `127.A.B.1N`; the API server listens on `127.A.B.100:6443`. Node names follow the AWS
pattern of the address they own (`ip-127-1-0-1.ec2.internal`), so the name, the Machine's
addresses and the etcd member's peer URL stay consistent as on a real cluster.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "API_PORT",
    "ETCD_CLIENT_PORT",
    "ETCD_PEER_PORT",
    "INITIAL_REVISIONS",
    "NodeSpec",
    "SimSpec",
    "make_spec",
]

ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380
API_PORT = 6443

# Static-pod revisions every control-plane host starts at (the seeded operator CRs agree).
INITIAL_REVISIONS: dict[str, int] = {
    "etcd": 7,
    "kube-apiserver": 12,
    "kube-controller-manager": 8,
    "kube-scheduler": 6,
}

Role = Literal["master", "worker"]

_ZONES = ("us-east-1a", "us-east-1b", "us-east-1c")


@dataclasses.dataclass(frozen=True)
class NodeSpec:
    """One simulated node (an EC2 instance, a Machine and a Node)."""

    name: str  # ip-127-1-0-1.ec2.internal
    ip: str  # 127.1.0.1
    role: Role
    index: int  # 0-based within its role: master-0, worker-us-east-1a-0...
    zone: str
    machine_name: str  # <infra-id>-master-0
    instance_id: str  # i-0123456789abcdef0 (replaced by the real moto id once EC2 runs)

    @property
    def safe_name(self) -> str:
        """The node name as the etcd scripts use it in variable names (`-` and `.` -> `_`)."""
        return self.name.replace("-", "_").replace(".", "_")

    @property
    def etcd_client_url(self) -> str:
        return f"https://{self.ip}:{ETCD_CLIENT_PORT}"

    @property
    def etcd_peer_url(self) -> str:
        return f"https://{self.ip}:{ETCD_PEER_PORT}"


@dataclasses.dataclass(frozen=True)
class SimSpec:
    """Everything fixed about one simulated cluster. Serialised to `DIR/sim.json`."""

    state_dir: Path
    prefix: str  # "127.1.0": the cluster's loopback /24
    cluster_name: str  # "demo" (a profile would call it so)
    infra_id: str  # "demo-8qw5l": the prefix of Machine names
    cluster_id: str  # uuid, ClusterVersion.spec.clusterID
    ocp_version: str  # "4.8.12"
    etcd_cluster_token: str
    nodes: tuple[NodeSpec, ...]
    encryption: str | None = None  # APIServer spec.encryption.type: None (off), identity, aescbc

    # ---- derived locations -------------------------------------------------------------
    @property
    def api_host(self) -> str:
        return f"{self.prefix}.100"

    @property
    def api_url(self) -> str:
        return f"https://{self.api_host}:{API_PORT}"

    @property
    def masters(self) -> tuple[NodeSpec, ...]:
        return tuple(n for n in self.nodes if n.role == "master")

    @property
    def workers(self) -> tuple[NodeSpec, ...]:
        return tuple(n for n in self.nodes if n.role == "worker")

    @property
    def pki_dir(self) -> Path:
        return self.state_dir / "pki"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    @property
    def moto_endpoint(self) -> str:
        """S3 and EC2 (moto's server), reached over HTTP like any S3-compatible endpoint."""
        return f"http://{self.prefix}.200:5000"

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    def host_root(self, node: NodeSpec) -> Path:
        """The directory that plays `/` on a simulated control-plane host."""
        return self.state_dir / "hosts" / node.name

    def etcd_data_dir(self, node: NodeSpec) -> Path:
        """`/var/lib/etcd` of the host; the member's data is in its `member/` subdirectory."""
        return self.host_root(node) / "var" / "lib" / "etcd"

    def etcd_cert(self, node: NodeSpec, kind: Literal["peer", "serving"]) -> tuple[Path, Path]:
        """(certificate, key) of the node's etcd peer or serving pair."""
        base = self.pki_dir / "etcd"
        return base / f"etcd-{kind}-{node.name}.crt", base / f"etcd-{kind}-{node.name}.key"

    @property
    def etcd_ca(self) -> Path:
        return self.pki_dir / "etcd" / "ca.crt"

    @property
    def api_ca(self) -> Path:
        return self.pki_dir / "api" / "ca.crt"

    def node(self, name: str) -> NodeSpec:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"no node named {name!r} in the simulated cluster {self.cluster_name!r}")

    def etcd_initial_cluster(self) -> str:
        return ",".join(f"{n.name}={n.etcd_peer_url}" for n in self.masters)

    def etcd_endpoints(self) -> list[str]:
        return sorted(n.etcd_client_url for n in self.masters)

    # ---- persistence -------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["state_dir"] = str(self.state_dir)
        data["nodes"] = [dataclasses.asdict(n) for n in self.nodes]
        return data

    def save(self) -> None:
        path = self.state_dir / "sim.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        tmp.replace(path)

    @classmethod
    def load(cls, state_dir: Path) -> SimSpec:
        path = Path(state_dir) / "sim.json"
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(
                f"{path} does not exist: run `etcdguard-sim up --state-dir {state_dir}` first"
            ) from None
        data["state_dir"] = Path(data["state_dir"])
        data["nodes"] = tuple(NodeSpec(**n) for n in data["nodes"])
        return cls(**data)


def _node_name(ip: str) -> str:
    return "ip-" + ip.replace(".", "-") + ".ec2.internal"


def make_spec(
    *,
    state_dir: Path,
    prefix: str,
    cluster_name: str = "demo",
    ocp_version: str = "4.8.12",
    masters: int = 3,
    workers: int = 3,
    encryption: str | None = None,
) -> SimSpec:
    """A new cluster's spec. Random parts (infra id suffix, cluster id) are drawn here once."""
    if masters < 1 or masters > 9:
        raise ValueError(f"masters must be between 1 and 9, got {masters}")
    if workers < 0 or workers > 9:
        raise ValueError(f"workers must be between 0 and 9, got {workers}")
    suffix = uuid.uuid4().hex[:5]
    infra_id = f"{cluster_name}-{suffix}"
    nodes: list[NodeSpec] = []
    for i in range(masters):
        ip = f"{prefix}.{i + 1}"
        nodes.append(
            NodeSpec(
                name=_node_name(ip),
                ip=ip,
                role="master",
                index=i,
                zone=_ZONES[i % len(_ZONES)],
                machine_name=f"{infra_id}-master-{i}",
                instance_id="i-" + uuid.uuid4().hex[:17],
            )
        )
    for i in range(workers):
        ip = f"{prefix}.{i + 11}"
        zone = _ZONES[i % len(_ZONES)]
        nodes.append(
            NodeSpec(
                name=_node_name(ip),
                ip=ip,
                role="worker",
                index=i,
                zone=zone,
                machine_name=f"{infra_id}-worker-{zone}-{uuid.uuid4().hex[:5]}",
                instance_id="i-" + uuid.uuid4().hex[:17],
            )
        )
    return SimSpec(
        state_dir=Path(state_dir).resolve(),
        prefix=prefix,
        cluster_name=cluster_name,
        infra_id=infra_id,
        cluster_id=str(uuid.uuid4()),
        ocp_version=ocp_version,
        etcd_cluster_token=f"openshift-etcd-{uuid.uuid4()}",
        nodes=tuple(nodes),
        encryption=encryption,
    )
