"""Test helper: play the operator who answers a paused flow run's approval form, through the
Prefect API (as the UI does), from a background thread while the flow runs in the test."""

from __future__ import annotations

import threading
import time
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateName
from prefect.flow_runs import resume_flow_run


class Operator(threading.Thread):
    """Waits for a Paused run of `flow_name`, then resumes it with `answer` (None: never answers)."""

    def __init__(self, flow_name: str, answer: dict[str, Any] | None, *, timeout: float = 300) -> None:
        super().__init__(daemon=True)
        self.flow_name = flow_name
        self.answer = answer
        self.timeout = timeout
        self.resumed: str | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            deadline = time.monotonic() + self.timeout
            with get_client(sync_client=True) as client:
                while time.monotonic() < deadline:
                    runs = client.read_flow_runs(
                        flow_run_filter=FlowRunFilter(
                            state=FlowRunFilterState(name=FlowRunFilterStateName(any_=["Paused"]))
                        )
                    )
                    for run in runs:
                        if run.name and self.answer is not None:
                            flow = client.read_flow(run.flow_id)
                            if flow.name == self.flow_name:
                                resume_flow_run(run.id, run_input=self.answer)
                                self.resumed = str(run.id)
                                return
                    time.sleep(1)
        except BaseException as exc:  # reported to the test through .error
            self.error = exc


def approve(cluster: str, **overrides: Any) -> dict[str, Any]:
    return {
        "confirm_cluster": cluster,
        "reason": "INC-1234 test",
        "approved_by": "sre-on-call",
        "approve": True,
        **overrides,
    }
