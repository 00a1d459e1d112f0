"""`recover-expired-certs`: guide 4.3.3 as a flow.

The control plane recovers from expired certificates by itself, but the kubelets' new
certificates wait for a person: every few seconds, list the pending CSRs, validate each against
the cluster's Machines (`etcdguard.core.csr`: node-bootstrapper client CSRs and kubelet-serving CSRs,
subject, usages and SANs), approve the valid ones, and keep the others pending with the reason;
until every node is Ready or the timeout. A denied CSR, or one whose subject or SANs do not
match a Machine, is never approved. `CsrLedger` is shared with graceful-restart (guide 3 steps 4
and 6).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Literal

import pydantic
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from etcdguard.core import csr, errors, lifecycle, profile
from tasks.certs import Observation, approve_csr, observe

__all__ = ["CertsOutcome", "CsrLedger", "recover_expired_certs"]


class CertsOutcome(pydantic.BaseModel):
    """What a run did: the CSRs approved, those left pending and why, the nodes still not Ready."""

    status: Literal["recovered", "timed-out"]
    cluster: str
    approved: list[str]
    rejected: dict[str, list[str]]
    """Pending CSRs etcdguard refused to approve -> the validator's reasons."""
    denied: list[str]
    not_ready: dict[str, str]
    elapsed_s: float
    message: str


@dataclasses.dataclass
class CsrLedger:
    """Approvals across rounds: what was approved, what the last round refused and why."""

    approved: dict[str, csr.CsrVerdict] = dataclasses.field(default_factory=dict)
    refused: dict[str, csr.CsrVerdict] = dataclasses.field(default_factory=dict)
    denied: set[str] = dataclasses.field(default_factory=set)
    _logged: set[tuple[str, tuple[str, ...]]] = dataclasses.field(default_factory=set)

    def round(self, cluster_profile: profile.ClusterProfile, seen: Observation) -> int:
        """Validate every pending CSR of `seen`, approve the valid ones; returns how many were
        approved now (0: nothing left to approve)."""
        logger = get_run_logger()
        plan = csr.plan_approvals(seen.csrs, machines=seen.machine_addresses, nodes_existing=seen.node_names)
        self.denied |= {c.name for c in seen.csrs if c.denied}
        self.refused = {v.name: v for v in plan.refuse}
        for verdict in plan.refuse:
            key = (verdict.name, verdict.reasons)
            if key not in self._logged:
                self._logged.add(key)
                logger.warning("Not approving CSR %s: %s", verdict.name, " ".join(verdict.reasons))
        count = 0
        for verdict in plan.approve:
            try:
                approve_csr(cluster_profile, verdict=verdict, request=seen.requests.get(verdict.name, ""))
            except errors.EtcdguardError as exc:  # denied or changed meanwhile, or the API went away
                logger.warning("%s The next round decides again.", exc)
                continue
            self.approved[verdict.name] = verdict
            count += 1
        return count

    def markdown(self) -> str:
        lines = ["| CSR | kind | node | decision |", "|---|---|---|---|"]
        for name, v in sorted(self.approved.items()):
            lines.append(f"| `{name}` | {v.kind} | {v.node_name or '?'} | approved |")
        for name, v in sorted(self.refused.items()):
            reasons = "<br>".join(r.replace("|", "\\|") for r in v.reasons)
            lines.append(f"| `{name}` | {v.kind} | {v.node_name or '?'} | **left pending**: {reasons} |")
        for name in sorted(self.denied):
            lines.append(f"| `{name}` | | | Denied: never approved |")
        if len(lines) == 2:
            return "No pending kubelet CSR was seen.\n"
        return "\n".join(lines) + "\n"


def _report(cluster: str, outcome: CertsOutcome, ledger: CsrLedger) -> str:
    not_ready = "".join(f"- `{n}`: {why}\n" for n, why in sorted(outcome.not_ready.items()))
    return (
        f"# recover-expired-certs on `{cluster}` (guide 4.3.3)\n\n**{outcome.message}**\n\n"
        f"{len(outcome.approved)} CSR(s) approved, {len(outcome.rejected)} left pending, "
        f"in {outcome.elapsed_s:.0f} s.\n\n{ledger.markdown()}\n"
        + (f"## Nodes not Ready\n\n{not_ready}" if not_ready else "Every node is Ready.\n")
    )


@flow(name="recover-expired-certs")
def recover_expired_certs(cluster: str, timeout_s: int = 900, poll_s: float = 3.0) -> CertsOutcome:
    """Approve the kubelets' valid pending CSRs until every node is Ready (guide 4.3.3).

    Args:
        cluster: the profile name.
        timeout_s: give up (and fail, naming the nodes not Ready and the CSRs left pending) after this.
        poll_s: seconds between rounds.
    """
    logger = get_run_logger()
    cluster_profile = profile.load_profile(cluster)
    started = time.monotonic()
    ledger = CsrLedger()
    not_ready: dict[str, str] = {"(cluster)": "the API was not read yet"}
    while True:
        try:
            seen = observe(cluster_profile)
        except errors.TransientError as exc:
            not_ready = {"(cluster)": f"the API does not answer: {exc}"}
            logger.warning("%s", exc)
        else:
            approved_now = ledger.round(cluster_profile, seen)
            health = lifecycle.assess_health(seen.nodes, [])
            not_ready = health.not_ready
            if approved_now == 0 and not not_ready:
                status: Literal["recovered", "timed-out"] = "recovered"
                message = f"Every node of {cluster} is Ready."
                break
            if not_ready:
                logger.info("Waiting for %s.", ", ".join(sorted(not_ready)))
        if time.monotonic() - started > timeout_s:
            status = "timed-out"
            message = (
                f"After {timeout_s} s, {len(not_ready)} node(s) of {cluster} are still not Ready: "
                + "; ".join(f"{n}: {why}" for n, why in sorted(not_ready.items()))
            )
            break
        time.sleep(poll_s)
    outcome = CertsOutcome(
        status=status,
        cluster=cluster,
        approved=sorted(ledger.approved),
        rejected={name: list(v.reasons) for name, v in sorted(ledger.refused.items())},
        denied=sorted(ledger.denied),
        not_ready=not_ready,
        elapsed_s=round(time.monotonic() - started, 1),
        message=message,
    )
    create_markdown_artifact(
        _report(cluster, outcome, ledger),
        key=f"recover-expired-certs-{cluster}",
        description=f"CSRs approved and refused on {cluster}",
    )
    if status != "recovered":
        pending = ", ".join(outcome.rejected) or "none"
        raise errors.PermanentError(
            f"{message}. CSRs left pending: {pending}. Check the nodes' kubelets "
            "(`oc describe node`) and approve or deny the CSRs left pending by hand after checking them."
        )
    logger.info(
        "%s Approved %d CSR(s); left pending: %s.",
        message,
        len(outcome.approved),
        ", ".join(outcome.rejected) or "none",
    )
    return outcome
