"""Tasks against the cluster's API objects that more than one recovery flow needs: re-create a
control-plane Machine (guide 4.2.4.1 step 3, 4.3.2.2 step 11) and force an operator's
redeployment and wait for its rollout (4.2.4.1, 4.2.4.2, 4.3.2.2 steps 12-15).

Each write checks the current state first, so a re-run continues instead of repeating it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from datetime import UTC, datetime

from prefect import get_run_logger

from etcdguard.clients.kube import KubeClient
from etcdguard.core import errors, openshift
from etcdguard.core.profile import ClusterProfile
from tasks import _policy as policy
from tasks import _wait, certs

__all__ = ["MachineReplacement", "force_redeployment", "node_ready", "replace_machine", "wait_rollout"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class MachineReplacement:
    """What re-creating one control-plane Machine did."""

    old: str | None
    new: str
    node: str | None
    """The new Machine's node (its nodeRef, or its InternalDNS name before it has one)."""
    csrs_approved: tuple[str, ...]
    seconds: float
    state: str


def node_ready(kube: KubeClient, name: str) -> bool:
    try:
        return openshift.node_ready(kube.get("Node", name))
    except errors.NotFoundError:
        return False


@policy.task("replace-machine", timeout_s=7200)
def replace_machine(
    profile: ClusterProfile,
    *,
    old_name: str | None,
    annotations: Mapping[str, str],
    marker: str,
    csrs_of_new_node_only: bool,
    timeout: float,
    guide_step: str,
    rerun_hint: str,
) -> MachineReplacement:
    """Re-create the control-plane Machine `old_name`: its cleaned copy (`openshift.clean_machine`,
    carrying `annotations`) under the next free name, then the old one deleted; then wait until the
    new one is Running with a Ready node, approving validated CSRs meanwhile (only the new node's
    when `csrs_of_new_node_only`).

    The copy is created BEFORE the old Machine is deleted (the guide deletes first): an interruption
    between the two then loses nothing, and a re-run finds the copy by its `marker` annotation
    instead of needing the deleted Machine's YAML."""
    logger = get_run_logger()
    started = time.monotonic()
    approved: list[str] = []
    wanted = annotations[marker]
    ns = openshift.MACHINE_NAMESPACE
    with KubeClient(profile.api) as kube:
        machines = kube.list_objects("Machine", namespace=ns)
        copy = next(
            (m for m in machines if (m["metadata"].get("annotations") or {}).get(marker) == wanted), None
        )
        old = next((m for m in machines if old_name and m["metadata"]["name"] == old_name), None)
        if copy is None:
            if old is None:
                raise errors.NotFoundError(
                    f"Machine {old_name} is gone and no re-created copy of it exists; create the new control-plane "
                    f"machine by hand (guide {guide_step}), then {rerun_hint}"
                )
            new_name = openshift.next_machine_name(str(old_name), [m["metadata"]["name"] for m in machines])
            kube.create(
                "Machine",
                openshift.clean_machine(old, new_name=new_name, annotations=annotations),
                namespace=ns,
            )
            logger.info("Created Machine %s to replace %s.", new_name, old_name)
        else:
            new_name = str(copy["metadata"]["name"])
            logger.info("Machine %s already replaces %s; waiting for it.", new_name, old_name)
        if old is not None:
            try:
                kube.delete("Machine", str(old_name), namespace=ns)
                logger.info("Deleted Machine %s.", old_name)
            except errors.NotFoundError:
                pass
        new_node: list[str | None] = [None]

        def probe() -> tuple[bool, str]:
            status = kube.get("Machine", new_name, namespace=ns).get("status") or {}
            ref = (status.get("nodeRef") or {}).get("name")
            dns = next(
                (a["address"] for a in status.get("addresses") or [] if a.get("type") == "InternalDNS"), None
            )
            new_node[0] = ref or dns
            if not csrs_of_new_node_only or new_node[0] is not None:
                for line in certs.approve_validated(
                    profile, node=new_node[0] if csrs_of_new_node_only else None
                ):
                    logger.info("Approved CSR %s.", line)
                    approved.append(line)
            phase = status.get("phase") or "no phase yet"
            if phase != "Running" or not ref:
                return False, f"Machine {new_name} is {phase}"
            if not node_ready(kube, str(ref)):
                return False, f"Machine {new_name} is Running, node {ref} is not Ready yet"
            return True, f"Machine {new_name} is Running, node {ref} is Ready"

        state = _wait.poll(f"Machine {new_name} to run", probe, timeout=timeout, rerun_hint=rerun_hint)
    return MachineReplacement(
        old=old_name,
        new=new_name,
        node=new_node[0],
        csrs_approved=tuple(approved),
        seconds=round(time.monotonic() - started, 1),
        state=state,
    )


@policy.task("force-redeployment", timeout_s=300)
def force_redeployment(profile: ClusterProfile, *, kind: str, prefix: str = "recovery") -> int:
    """`oc patch <kind> cluster` with `forceRedeploymentReason: <prefix>-<date --rfc-3339=ns>`;
    returns the latest revision before, which the wait compares with."""
    with KubeClient(profile.api) as kube:
        cr = kube.get(kind, "cluster")
        before = int((cr.get("status") or {}).get("latestAvailableRevision") or 0)
        reason = openshift.redeploy_reason(prefix, datetime.now(UTC))
        kube.patch(kind, "cluster", {"spec": {"forceRedeploymentReason": reason}})
    get_run_logger().info("%s: forceRedeploymentReason %r (revision was %d).", kind, reason, before)
    return before


@policy.task("wait-rollout", timeout_s=7200)
def wait_rollout(profile: ClusterProfile, *, kind: str, after: int, timeout: float, rerun_hint: str) -> str:
    """NodeInstallerProgressing says AllNodesAtLatestRevision for a revision newer than `after`."""

    def probe() -> tuple[bool, str]:
        with KubeClient(profile.api) as kube:
            return openshift.rollout_done(kube.get(kind, "cluster"), after=after)

    return _wait.poll(
        f"{kind} to reach AllNodesAtLatestRevision", probe, timeout=timeout, rerun_hint=rerun_hint
    )
