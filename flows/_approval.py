"""The approval gate every destructive flow passes before it changes anything.

The flow run pauses with a form (Prefect renders the `RunInput` as a form in the UI, above the
markdown description of what will be destroyed); the operator must type the cluster's name and
give a reason. No answer within the timeout, a wrong name or a refusal -> `ApprovalRejected`,
and nothing has changed. The approval (who, why, when) goes into the run's report.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pydantic
from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput

from etcdguard.core import errors

__all__ = ["Approval", "ApprovalRecord", "request_approval"]


class Approval(RunInput):
    """What the operator fills in to let a destructive flow go on."""

    confirm_cluster: str = pydantic.Field(description="Type the cluster's name to confirm.")
    reason: str = pydantic.Field(description="Why (ticket, incident); recorded in the run's report.")
    approved_by: str = pydantic.Field(description="Your name or user id; recorded in the run's report.")
    approve: bool = pydantic.Field(default=False, description="Tick to approve; leave unticked to refuse.")


class ApprovalRecord(pydantic.BaseModel):
    approved_by: str
    reason: str
    approved_at: datetime


def request_approval(
    *, cluster: str, action: str, summary_markdown: str, timeout_s: int = 3600
) -> ApprovalRecord:
    """Pause until an operator approves `action` on `cluster` (see the module docstring)."""
    logger = get_run_logger()
    create_markdown_artifact(
        summary_markdown, key=f"approval-{cluster}", description=f"{action}: what will change"
    )
    # Only the description: initial values would make the UI mark every field optional and drop
    # the fields' descriptions.
    form = Approval.with_initial_data(description=summary_markdown)
    logger.warning("Waiting up to %d s for an operator to approve %s on %s.", timeout_s, action, cluster)
    try:
        answer = pause_flow_run(
            wait_for_input=form, timeout=timeout_s, poll_interval=2, key=f"approve-{action}"
        )
    except FlowPauseTimeout as exc:
        raise errors.ApprovalRejected(
            f"Nobody approved {action} on {cluster} within {timeout_s} s; nothing was changed. Run it again when an "
            "operator is ready to approve."
        ) from exc
    if not answer.approve:
        raise errors.ApprovalRejected(
            f"{answer.approved_by or 'The operator'} refused {action} on {cluster}; nothing was changed."
        )
    if answer.confirm_cluster.strip() != cluster:
        raise errors.ApprovalRejected(
            f"The confirmation {answer.confirm_cluster!r} is not the cluster's name {cluster!r}; nothing was changed. "
            "Run the flow again and type the name exactly."
        )
    if len(answer.reason.strip()) < 3 or not answer.approved_by.strip():
        raise errors.ApprovalRejected(
            "An approval needs a reason and the approver's name; nothing was changed."
        )
    record = ApprovalRecord(
        approved_by=answer.approved_by.strip(), reason=answer.reason.strip(), approved_at=datetime.now(UTC)
    )
    logger.info("%s approved %s on %s: %s", record.approved_by, action, cluster, record.reason)
    return record
