"""The kubelet of a simulated control-plane host: runs the static pods of
`/etc/kubernetes/manifests` as real processes inside the host's mount namespace.

Each container of a manifest runs its `command` + `args` with its `env` (a container without a
command sleeps, standing in for a component the simulator serves elsewhere). A manifest that
appears starts its pod; one that disappears or changes stops it (SIGTERM, then SIGKILL after
5 s), as the real kubelet does. A container that exits is restarted with a growing back-off
(0.5 s doubling to 10 s: CrashLoopBackOff), its restart count in `attempt`.

What runs is published inside the host as `/run/sim/containers.json` (read by `crictl`) and the
kubelet's own state as `/run/sim/kubelet.json`. Host commands drop requests into
`/run/sim/requests/`: `kubelet-restart` (systemctl), `kubelet-stop`, `kubelet-start`, and
`shutdown` (its content: the unix time to power off).

The supervisor calls `sync()` a few times a second; nothing here blocks for long.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import secrets
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from etcdguard_sim import layout
from etcdguard_sim.hosts import ns as hostns

__all__ = ["Kubelet"]

_BACKOFF_START = 0.5
_BACKOFF_MAX = 10.0
_STOP_GRACE = 5.0
_IMAGE = "quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:"
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclasses.dataclass
class _Container:
    name: str
    pod: str
    namespace: str
    pod_id: str
    argv: list[str]
    env: dict[str, str]
    id: str = ""
    proc: subprocess.Popen[bytes] | None = None
    attempt: int = -1
    created_at: int = 0
    exit_code: int | None = None
    restart_at: float = 0.0
    backoff: float = _BACKOFF_START

    def public(self) -> dict[str, Any]:
        running = self.proc is not None and self.proc.poll() is None
        return {
            "id": self.id,
            "name": self.name,
            "pod": self.pod,
            "namespace": self.namespace,
            "pod_id": self.pod_id,
            "state": "CONTAINER_RUNNING" if running else "CONTAINER_EXITED",
            "attempt": max(self.attempt, 0),
            "created_at": self.created_at,
            "image": _IMAGE + hashlib.sha256(self.name.encode()).hexdigest(),
            "exit_code": None if running else self.exit_code,
            "waiting": (not running) and self.restart_at > time.monotonic(),
        }


@dataclasses.dataclass
class _Pod:
    digest: str
    name: str
    containers: list[_Container]


class Kubelet:
    def __init__(self, spec: layout.SimSpec, node: layout.NodeSpec) -> None:
        self.spec = spec
        self.node = node
        self.root = spec.host_root(node)
        self.pods: dict[str, _Pod] = {}  # manifest file name -> pod
        self.active = True
        self.restarted_at = time.time()
        self._published = ""
        self.log_dir = spec.logs_dir / "hosts" / node.name
        (self.root / "run" / "sim" / "requests").mkdir(parents=True, exist_ok=True)

    # ---- the host's view -----------------------------------------------------------------
    @property
    def _manifests(self) -> Path:
        return self.root / "etc" / "kubernetes" / "manifests"

    def running(self, container: str) -> bool:
        return any(
            c.name == container and c.proc is not None and c.proc.poll() is None
            for p in self.pods.values()
            for c in p.containers
        )

    # ---- reconcile -------------------------------------------------------------------------
    def sync(self, *, holder_pid: int) -> list[str]:
        """One pass; returns the requests it handled that the supervisor must act on."""
        actions = self._requests()
        if not self.active:
            self._publish()
            return actions
        wanted = self._read_manifests()
        for fname in list(self.pods):
            if fname not in wanted or wanted[fname][0] != self.pods[fname].digest:
                self._stop_pod(self.pods.pop(fname))
        for fname, (digest, manifest) in wanted.items():
            if fname not in self.pods:
                self.pods[fname] = self._make_pod(digest, manifest)
        now = time.monotonic()
        for pod in self.pods.values():
            for c in pod.containers:
                if c.proc is not None and c.proc.poll() is not None and c.exit_code is None:
                    c.exit_code = c.proc.returncode
                    c.restart_at = now + c.backoff
                    c.backoff = min(c.backoff * 2, _BACKOFF_MAX)
                if (c.proc is None or c.proc.poll() is not None) and now >= c.restart_at:
                    self._start(c, holder_pid=holder_pid)
        self._publish()
        return actions

    def stop_all(self) -> None:
        for pod in list(self.pods.values()):
            self._stop_pod(pod)
        self.pods.clear()
        self._publish()

    # ---- internals ------------------------------------------------------------------------
    def _requests(self) -> list[str]:
        req_dir = self.root / "run" / "sim" / "requests"
        handled: list[str] = []
        for req in sorted(req_dir.glob("*")) if req_dir.is_dir() else []:
            name = req.name
            if name == "kubelet-restart":
                self.active = True
                self.restarted_at = time.time()
                req.unlink(missing_ok=True)
            elif name == "kubelet-stop":
                self.active = False
                req.unlink(missing_ok=True)
            elif name == "kubelet-start":
                self.active = True
                req.unlink(missing_ok=True)
            elif name == "shutdown":
                try:
                    when = float(req.read_text().strip() or 0)
                except ValueError:
                    when = 0.0
                if time.time() < when:
                    continue  # not yet; `shutdown -c` removes the file
                req.unlink(missing_ok=True)
            else:
                continue
            handled.append(name)
        return handled

    def _read_manifests(self) -> dict[str, tuple[str, dict[str, Any]]]:
        out: dict[str, tuple[str, dict[str, Any]]] = {}
        if not self._manifests.is_dir():
            return out
        for path in sorted(self._manifests.glob("*.yaml")):
            try:
                raw = path.read_bytes()
                doc = yaml.safe_load(raw)
            except (OSError, yaml.YAMLError):
                continue  # a half-written file: the next pass sees the whole one
            if isinstance(doc, dict) and doc.get("kind") == "Pod":
                out[path.name] = (hashlib.sha256(raw).hexdigest(), doc)
        return out

    def _make_pod(self, digest: str, manifest: dict[str, Any]) -> _Pod:
        meta = manifest.get("metadata", {})
        pod_name = f"{meta.get('name', 'static')}-{self.node.name}"
        namespace = meta.get("namespace", "default")
        pod_id = secrets.token_hex(7)[:13]
        containers = []
        for spec_c in manifest.get("spec", {}).get("containers", []):
            argv = list(spec_c.get("command") or []) + list(spec_c.get("args") or [])
            if not argv:
                argv = ["sleep", "infinity"]
            env = {"PATH": _PATH, "HOME": "/root"}
            for item in spec_c.get("env") or []:
                if "value" in item:
                    env[item["name"]] = str(item["value"])
            containers.append(
                _Container(
                    name=spec_c["name"], pod=pod_name, namespace=namespace, pod_id=pod_id, argv=argv, env=env
                )
            )
        return _Pod(digest=digest, name=pod_name, containers=containers)

    def _start(self, c: _Container, *, holder_pid: int) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        argv = hostns.enter_argv(holder_pid, ["env", "-i", *[f"{k}={v}" for k, v in c.env.items()], *c.argv])
        with open(self.log_dir / f"{c.pod}_{c.name}.log", "ab") as log:
            c.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        c.id = secrets.token_hex(32)
        c.attempt += 1
        c.created_at = time.time_ns()
        c.exit_code = None

    def _stop_pod(self, pod: _Pod) -> None:
        procs = [c.proc for c in pod.containers if c.proc is not None and c.proc.poll() is None]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + _STOP_GRACE
        for proc in procs:
            try:
                proc.wait(timeout=max(0.05, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def _publish(self) -> None:
        items = [c.public() for p in self.pods.values() for c in p.containers if c.id]
        state = {"state": "active" if self.active else "inactive", "restarted_at": self.restarted_at}
        blob = json.dumps(items, sort_keys=True) + json.dumps(state)
        if blob == self._published:
            return
        self._published = blob
        sim_dir = self.root / "run" / "sim"
        sim_dir.mkdir(parents=True, exist_ok=True)
        for name, data in (("containers.json", items), ("kubelet.json", state)):
            tmp = sim_dir / f".{name}.tmp"
            tmp.write_text(json.dumps(data, indent=1))
            tmp.replace(sim_dir / name)
