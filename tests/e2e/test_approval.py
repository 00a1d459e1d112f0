"""The approval gate through a real Prefect server: a paused run resumed with the form's input
goes on only when the operator approved and typed the cluster's name; otherwise, or when
nobody answers in time, it stops with ApprovalRejected."""

from __future__ import annotations

import pytest
from prefect import flow

from etcdguard.core import errors
from flows._approval import ApprovalRecord, request_approval
from tests.approvals import Operator, approve

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("prefect_server")]


@flow(name="approval-gate-check")
def gated(cluster: str, timeout_s: int = 60) -> ApprovalRecord:
    return request_approval(
        cluster=cluster, action="test-action", summary_markdown="# will destroy nothing", timeout_s=timeout_s
    )


def _run_with(answer: dict[str, object] | None, *, timeout_s: int = 60) -> ApprovalRecord:
    operator = Operator("approval-gate-check", answer)
    operator.start()
    try:
        return gated("demo", timeout_s=timeout_s)
    finally:
        operator.join(timeout=5)
        assert operator.error is None


def test_approved_with_the_cluster_name() -> None:
    record = _run_with(approve("demo"))
    assert record.approved_by == "sre-on-call"
    assert record.reason == "INC-1234 test"


def test_wrong_cluster_name_is_refused() -> None:
    with pytest.raises(errors.ApprovalRejected, match=r"'prod' is not the cluster's name 'demo'"):
        _run_with(approve("demo", confirm_cluster="prod"))


def test_unticked_approve_is_a_refusal() -> None:
    with pytest.raises(errors.ApprovalRejected, match=r"sre-on-call refused test-action"):
        _run_with(approve("demo", approve=False))


def test_nobody_answers_in_time() -> None:
    with pytest.raises(errors.ApprovalRejected, match=r"Nobody approved test-action on demo within 3 s"):
        _run_with(None, timeout_s=3)
