"""Small Prefect helpers the flows share: the per-cluster concurrency limit, events."""

from __future__ import annotations

import contextlib
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.events import emit_event
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

__all__ = ["cluster_lock_name", "ensure_cluster_lock", "send_event"]


def cluster_lock_name(flow: str, cluster: str) -> str:
    """The global concurrency limit that keeps two `flow` runs of one cluster apart."""
    return f"etcdguard-{flow}-{cluster}"


def ensure_cluster_lock(name: str) -> None:
    """Create the one-slot global concurrency limit `name` if it does not exist yet."""
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
            return
        except ObjectNotFound:
            pass
        with contextlib.suppress(ObjectAlreadyExists):
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))


def send_event(event: str, *, cluster: str, payload: dict[str, Any]) -> None:
    """An `etcdguard.*` event about `cluster` (automations and the post-upgrade trigger use them)."""
    emit_event(
        event=event,
        resource={"prefect.resource.id": f"etcdguard.cluster.{cluster}", "prefect.resource.name": cluster},
        payload=payload,
    )
