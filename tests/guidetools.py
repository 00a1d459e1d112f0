"""The guide's commands as an admin types them, for tests that drive the simulated cluster.

`oc` is replaced by the real `kubectl` and the rest of each command is left as written; commands
run through bash so the guide's pipes (`| grep -v running`) and quoting
(`"$( date --rfc-3339=ns )"`) are its own. `oc rsh -n openshift-etcd <pod>` followed by a command
is `kubectl exec -n openshift-etcd <pod> -- <command>` (the default container is the first,
`etcdctl`, as for `oc rsh`). `oc debug node/<node>` + `chroot /host` is `ssh` as core with `sudo`.

One deliberate change, as in test_guide_commands: the guide's 4.2.2 command filters on
`EtcMembersAvailable` (a typo of the 4.8 Japanese guide); the condition is `EtcdMembersAvailable`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from etcdguard_sim import layout

from etcdguard.core import csr as csrcheck

T = TypeVar("T")

# 4.2.3 step 1, 4.2.3 step 2 (twice), 4.2.3 step 3b / 4.2.4.1 step 1a, 4.2.2.
MACHINES_NOT_RUNNING = (
    'kubectl get machines -A -o=jsonpath=\'{range .items[*]}{@.status.nodeRef.name}{"\\t"}'
    '{@.status.providerStatus.instanceState}{"\\n"}\' | grep -v running'
)
UNREACHABLE = (
    'kubectl get nodes -o jsonpath=\'{range .items[*]}{"\\n"}{.metadata.name}{"\\t"}'
    '{range .spec.taints[*]}{.key}{" "}\' | grep unreachable'
)
NOT_READY_MASTERS = 'kubectl get nodes -l node-role.kubernetes.io/master | grep "NotReady"'
MASTERS = "kubectl get nodes -l node-role.kubernetes.io/master"
ETCD_PODS = "kubectl get pods -n openshift-etcd | grep -v etcd-quorum-guard | grep etcd"
MEMBERS_AVAILABLE = (
    "kubectl get etcd -o=jsonpath='{range .items[0].status.conditions"
    '[?(@.type=="EtcdMembersAvailable")]}{.message}{"\\n"}\''
)


def run(spec: layout.SimSpec, command: str, *, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """One guide command line through bash, with the cluster's kubeconfig."""
    env = {**os.environ, "KUBECONFIG": str(spec.kubeconfig)}
    return subprocess.run(
        ["bash", "-c", command], env=env, cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def ok(spec: layout.SimSpec, command: str, *, cwd: Path | None = None) -> str:
    """`run` that must succeed; returns stdout."""
    proc = run(spec, command, cwd=cwd)
    assert proc.returncode == 0, f"`{command}` failed ({proc.returncode}): {proc.stderr}"
    return proc.stdout


def lines(out: str) -> list[str]:
    """Non-blank lines without trailing blanks. The guide's jsonpath has no `{end}`, so kubectl
    (like oc) prints one more line holding a lone tab, which `grep -v running` lets through."""
    return [line.rstrip() for line in out.splitlines() if line.strip()]


def rows(out: str) -> list[list[str]]:
    return [line.split() for line in lines(out)]


def members_message(spec: layout.SimSpec) -> str:
    return "\n".join(lines(run(spec, MEMBERS_AVAILABLE).stdout))


def ssh(spec: layout.SimSpec, node: str, command: str) -> subprocess.CompletedProcess[str]:
    argv = ["ssh", "-F", str(spec.state_dir / "ssh_config"), node, command]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def rsh(spec: layout.SimSpec, pod: str, command: str) -> subprocess.CompletedProcess[str]:
    """`oc rsh -n openshift-etcd <pod>` then `command` at its prompt."""
    return run(spec, f"kubectl exec -n openshift-etcd {pod} -- {command}")


def kget(spec: layout.SimSpec, *args: str) -> Any:
    return json.loads(ok(spec, "kubectl get " + " ".join(args) + " -o json"))


def wait_for(
    what: str,
    probe: Callable[[], T | None],
    *,
    timeout: float = 30.0,
    every: float = 0.5,
    since: float | None = None,
) -> tuple[T, float]:
    """Poll `probe` until it returns something truthy; returns it and the seconds it took, counted
    from `since` (a `time.monotonic()` value, e.g. when the fault was injected) or from now."""
    start = time.monotonic()
    origin = start if since is None else since
    while True:
        value = probe()
        if value:
            return value, time.monotonic() - origin
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {value!r})")
        time.sleep(every)


def verdicts(spec: layout.SimSpec) -> list[csrcheck.CsrVerdict]:
    """etcdguard's validator on every pending CSR, as an admin would check `oc describe csr`."""
    machines = [csrcheck.MachineAddresses.from_machine(m) for m in kget(spec, "machines", "-A")["items"]]
    nodes = {n["metadata"]["name"] for n in kget(spec, "nodes")["items"]}
    out = []
    for obj in kget(spec, "csr")["items"]:
        view = csrcheck.CsrView.from_object(obj)
        if view.pending:
            out.append(csrcheck.validate_csr(view, machines=machines, nodes_existing=nodes))
    return out


def approve_valid(spec: layout.SimSpec, *, node: str | None = None) -> list[csrcheck.CsrVerdict]:
    """Approve every pending CSR (of `node`, if given) that the validator accepts, with
    `kubectl certificate approve` (the guide's `oc adm certificate approve`); returns them.
    Refused ones are left pending, as an admin would leave them: e.g. a new node's serving CSR
    until its Machine shows the node in `nodeRef`. Callers check that none is left at the end."""
    approved = []
    for verdict in verdicts(spec):
        if (node is not None and verdict.node_name != node) or not verdict.approve:
            continue
        ok(spec, f"kubectl certificate approve {verdict.name}")
        approved.append(verdict)
    return approved


class Timings:
    """Seconds per step, printed at the end of a module (run pytest with -s to see them)."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.items: list[tuple[str, float]] = []

    def add(self, what: str, seconds: float) -> None:
        self.items.append((what, seconds))

    def report(self) -> str:
        width = max((len(w) for w, _ in self.items), default=0)
        body = "\n".join(f"  {w.ljust(width)}  {s:6.1f} s" for w, s in self.items)
        return f"{self.title}\n{body}"


# ---- 4.1 and 4.3.2.2 (backup, restore) ---------------------------------------------------------------
# 4.3.2.2 steps 13-15. The 4.8 Japanese guide misquotes the kubeapiserver, kubecontrollermanager and
# kubescheduler patches (`"recovery-"$( date --rfc-3339=ns )"' }'` leaves the JSON unterminated) and
# puts a blank in `[? (@.type==...` and `{ "\n"}`: every resource gets the etcd form as written
# in 4.2.4 (and in the English guide).
FORCE_REDEPLOYMENT = (
    """kubectl patch {resource} cluster -p='{{"spec": {{"forceRedeploymentReason": """
    """"recovery-'"$( date --rfc-3339=ns )"'"}}}}' --type=merge"""
)
NODE_INSTALLER_PROGRESSING = (
    "kubectl get {resource} -o=jsonpath='{{range .items[0].status.conditions"
    '[?(@.type=="NodeInstallerProgressing")]}}{{.reason}}{{"\\n"}}{{.message}}{{"\\n"}}\''
)


def ssh_long(
    spec: layout.SimSpec, node: str, command: str, *, timeout: float
) -> subprocess.CompletedProcess[str]:
    """`ssh` for a command that may take longer than a minute (e.g. cluster-restore.sh)."""
    argv = ["ssh", "-F", str(spec.state_dir / "ssh_config"), node, command]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def scp(spec: layout.SimSpec, *args: str) -> subprocess.CompletedProcess[str]:
    """`scp -F DIR/ssh_config ARGS...` from the admin's machine (hosts named by node name)."""
    argv = ["scp", "-F", str(spec.state_dir / "ssh_config"), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def node_installer(spec: layout.SimSpec, resource: str) -> list[str]:
    """4.3.2.2 steps 14-15: the reason and message of `<resource>`'s NodeInstallerProgressing."""
    return lines(run(spec, NODE_INSTALLER_PROGRESSING.format(resource=resource)).stdout)


def approve_pending(spec: layout.SimSpec) -> list[csrcheck.CsrVerdict]:
    """Step 9: `oc get csr`; `oc describe csr` of each pending one, reviewed with the validator;
    `oc adm certificate approve` of the valid ones. Nothing while the API does not answer."""
    listed = run(spec, "kubectl get csr")
    if listed.returncode != 0:
        return []
    pending = [r[0] for r in rows(listed.stdout) if r[-1] == "Pending"]
    for name in pending:
        described = run(spec, f"kubectl describe csr {name}")
        assert described.returncode != 0 or re.search(r"^Status:\s+Pending", described.stdout, re.MULTILINE)
    if not pending:
        return []
    try:
        return approve_valid(spec)
    except AssertionError:  # the API went away between the calls: the next round approves them
        return []


def member_rows(spec: layout.SimSpec, pod: str) -> list[list[str]]:
    """`etcdctl member list -w table` in the pod: ID, STATUS, NAME, PEER ADDRS, CLIENT ADDRS, LEARNER."""
    members = rsh(spec, pod, "etcdctl member list -w table")
    assert members.returncode == 0, members.stderr
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in members.stdout.splitlines()]
    return [c for c in cells if len(c) == 6 and re.fullmatch("[0-9a-f]+", c[0])]
