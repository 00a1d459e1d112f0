"""What every controller gets: the cluster's spec (re-read each pass: nodes come and go), an API
client, and read access to the hosts' published state."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from typing import Any

from etcdguard_sim import layout
from etcdguard_sim.api import client as apiclient

__all__ = ["Context"]


@dataclasses.dataclass
class Context:
    spec: layout.SimSpec
    api: apiclient.ApiClient
    memory: dict[str, Any] = dataclasses.field(default_factory=dict)  # per-controller state

    # ---- hosts ---------------------------------------------------------------------------
    def powered(self, node: layout.NodeSpec) -> bool:
        try:
            return (self.spec.run_dir / "power" / node.name).read_text().strip() != "off"
        except OSError:
            return True

    def set_power(self, node: layout.NodeSpec, *, on: bool) -> None:
        power_dir = self.spec.run_dir / "power"
        power_dir.mkdir(parents=True, exist_ok=True)
        (power_dir / node.name).write_text("on\n" if on else "off\n")

    def containers(self, node: layout.NodeSpec) -> list[dict[str, Any]]:
        """What the host's kubelet runs (empty when the host is off or has no kubelet)."""
        if node.role != "master" or not self.powered(node):
            return []
        try:
            data = json.loads((self.spec.host_root(node) / "run" / "sim" / "containers.json").read_text())
        except (OSError, ValueError):
            return []
        return data if isinstance(data, list) else []

    def kubelet_state(self, node: layout.NodeSpec) -> dict[str, Any]:
        try:
            data = json.loads((self.spec.host_root(node) / "run" / "sim" / "kubelet.json").read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    # ---- etcd -----------------------------------------------------------------------------
    def etcdctl(
        self, *args: str, endpoints: list[str] | None = None, timeout: float = 10.0
    ) -> subprocess.CompletedProcess[str]:
        """The real etcdctl with the API server's etcd client certificate."""
        env = {
            **os.environ,
            "ETCDCTL_API": "3",
            "ETCDCTL_CACERT": str(self.spec.etcd_ca),
            "ETCDCTL_CERT": str(self.spec.pki_dir / "etcd" / "apiserver-etcd-client.crt"),
            "ETCDCTL_KEY": str(self.spec.pki_dir / "etcd" / "apiserver-etcd-client.key"),
            "ETCDCTL_ENDPOINTS": ",".join(endpoints or self.spec.etcd_endpoints()),
            "ETCDCTL_DIAL_TIMEOUT": "2s",
            "ETCDCTL_COMMAND_TIMEOUT": "4s",
        }
        return subprocess.run(
            ["etcdctl", *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
