"""Tasks of the certificate flows (guide 4.3.3 and 3 steps 4 and 6): read what the CSR validator
needs, approve one CSR.

`observe` is a plain read (no side effect, no Prefect task): the flows call it every few
seconds while they wait, and a TransientError from it simply means "the API does not answer
yet". `approve_csr` is the one side effect, guarded by a fresh read of the CSR.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

from prefect import get_run_logger, runtime

from etcdguard.clients.kube import KubeClient
from etcdguard.core import csr, errors, openshift
from etcdguard.core.profile import ClusterProfile
from tasks import _policy as policy

__all__ = ["Observation", "approve_csr", "approve_validated", "observe"]

_CONFLICT_ATTEMPTS = 3


@dataclasses.dataclass(frozen=True)
class Observation:
    """One read of the cluster: CSRs, Machines, Nodes (and ClusterOperators when asked)."""

    csrs: tuple[csr.CsrView, ...]
    requests: dict[str, str]
    """CSR name -> `spec.request` as served (base64), to check nothing changed before approving."""
    machines: tuple[dict[str, Any], ...]
    nodes: tuple[dict[str, Any], ...]
    cluster_operators: tuple[dict[str, Any], ...]

    @property
    def machine_addresses(self) -> list[csr.MachineAddresses]:
        return [csr.MachineAddresses.from_machine(m) for m in self.machines]

    @property
    def node_names(self) -> set[str]:
        return {str(n["metadata"]["name"]) for n in self.nodes}


def observe(profile: ClusterProfile, *, operators: bool = False) -> Observation:
    """Read CSRs, Machines and Nodes (and ClusterOperators). Raises TransientError while the API
    does not answer."""
    with KubeClient(profile.api) as kube:
        objects = kube.list_objects("CertificateSigningRequest")
        machines = kube.list_objects("Machine", namespace=openshift.MACHINE_NAMESPACE)
        nodes = kube.list_objects("Node")
        cos = kube.list_objects("ClusterOperator") if operators else []
    views = tuple(csr.CsrView.from_object(o) for o in objects)
    requests = {str(o["metadata"]["name"]): str((o.get("spec") or {}).get("request") or "") for o in objects}
    return Observation(
        csrs=views,
        requests=requests,
        machines=tuple(machines),
        nodes=tuple(nodes),
        cluster_operators=tuple(cos),
    )


@policy.task("approve-csr", timeout_s=300)
def approve_csr(profile: ClusterProfile, *, verdict: csr.CsrVerdict, request: str) -> str:
    """`_approve` as a task of its own (the certificate flows approve CSRs one by one)."""
    return _approve(profile, verdict=verdict, request=request)


def approve_validated(profile: ClusterProfile, *, node: str | None = None) -> list[str]:
    """Approve every pending kubelet CSR that `etcdguard.core.csr` validates against the Machines
    (only those of `node` when given); the others stay pending and are logged with the reasons.
    A plain function: the tasks that wait for nodes call it on every round, inside their own
    retries and timeout. Returns `<csr> (<kind>, <node>)` for each CSR approved now."""
    logger = get_run_logger()
    seen = observe(profile)
    plan = csr.plan_approvals(seen.csrs, machines=seen.machine_addresses, nodes_existing=seen.node_names)
    for verdict in plan.refuse:
        if node is None or verdict.node_name == node:
            logger.warning("Not approving CSR %s: %s", verdict.name, " ".join(verdict.reasons))
    approved = []
    for verdict in plan.approve:
        if node is not None and verdict.node_name != node:
            continue
        if _approve(profile, verdict=verdict, request=seen.requests[verdict.name]) == "approved":
            approved.append(f"{verdict.name} ({verdict.kind}, {verdict.node_name})")
    return approved


def _approve(profile: ClusterProfile, *, verdict: csr.CsrVerdict, request: str) -> str:
    """`oc adm certificate approve <name>`, for a CSR the validator accepted: re-read it, refuse if
    it is now denied or its request changed, do nothing if it is already approved, else append the
    Approved condition and PUT `/approval` (re-read and retried on a 409 conflict).

    Returns "approved" or "already approved".
    """
    logger = get_run_logger()
    name = verdict.name
    with KubeClient(profile.api) as kube:
        for attempt in range(1, _CONFLICT_ATTEMPTS + 1):
            obj = kube.get("CertificateSigningRequest", name)
            view = csr.CsrView.from_object(obj)
            if view.denied:
                raise errors.PermanentError(
                    f"CSR {name} was denied meanwhile; a denied CSR is never approved."
                )
            if str((obj.get("spec") or {}).get("request") or "") != request:
                raise errors.PermanentError(
                    f"CSR {name}'s request changed since it was validated; it is left pending for the next round."
                )
            if view.approved:
                return "already approved"
            status = dict(obj.get("status") or {})
            run = runtime.flow_run.id
            status["conditions"] = [
                *(status.get("conditions") or []),
                {
                    "type": "Approved",
                    "status": "True",
                    "reason": "EtcdguardApprove",
                    "message": (
                        f"Approved by etcdguard (flow run {run}) after checking its subject, usages and SANs "
                        f"against the Machine of node {verdict.node_name}."
                    ),
                    "lastUpdateTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                },
            ]
            try:
                kube.replace(
                    "CertificateSigningRequest", name, {**obj, "status": status}, subresource="approval"
                )
            except errors.PermanentError as exc:
                if " 409 " in str(exc) and attempt < _CONFLICT_ATTEMPTS:
                    continue  # someone updated it meanwhile: read again and decide again
                raise
            logger.info("Approved %s CSR %s of node %s.", verdict.kind, name, verdict.node_name)
            return "approved"
    raise errors.PermanentError(
        f"CSR {name} kept changing while it was approved; the next round tries again."
    )
