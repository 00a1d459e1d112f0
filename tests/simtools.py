"""Helpers for tests that drive the simulated cluster from outside, the way an admin would:
the real `kubectl` with the cluster's kubeconfig and the real `etcdctl` with a node's certs."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence

from etcdguard_sim import layout


def kubectl(spec: layout.SimSpec, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(spec.kubeconfig)}
    proc = subprocess.run(
        ["kubectl", *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc


def etcdctl(
    spec: layout.SimSpec,
    *args: str,
    node: layout.NodeSpec | None = None,
    endpoints: Sequence[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    node = node or spec.masters[0]
    crt, key = spec.etcd_cert(node, "peer")
    env = {
        **os.environ,
        "ETCDCTL_API": "3",
        "ETCDCTL_CACERT": str(spec.etcd_ca),
        "ETCDCTL_CERT": str(crt),
        "ETCDCTL_KEY": str(key),
        "ETCDCTL_ENDPOINTS": ",".join(endpoints or [node.etcd_client_url]),
    }
    return subprocess.run(
        ["etcdctl", *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )
