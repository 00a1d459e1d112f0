"""The cloud provider (EC2), as etcdguard needs it: one small facade over `boto3`.

Three calls, by instance id: describe, start, stop. Instances come back as `Instance` values
(id, state, private address, Name tag), never as SDK dicts.

Errors: throttling, 5xx, timeouts and refused connections -> `TransientError`; an unknown
instance id -> `NotFoundError`; anything else EC2 refuses (an instance in a state that cannot be
started, missing permissions) -> `PermanentError`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from etcdguard.clients._aws import Translator, make_client
from etcdguard.core.profile import CloudSettings

__all__ = ["Cloud", "Instance"]

_TRANSIENT_CODES = frozenset({
    "RequestLimitExceeded", "Throttling", "ThrottlingException", "InternalError", "ServiceUnavailable",
    "Unavailable", "RequestTimeout", "InsufficientInstanceCapacity",
})  # fmt: skip
_NOT_FOUND = frozenset({"InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"})


@dataclasses.dataclass(frozen=True)
class Instance:
    """One EC2 instance as etcdguard reads it."""

    instance_id: str
    state: str
    """pending | running | stopping | stopped | shutting-down | terminated"""
    private_ip: str | None
    name: str | None
    """The `Name` tag (the installer sets the Machine's name)."""


class Cloud:
    """EC2 of one cluster. Use as a context manager."""

    def __init__(self, settings: CloudSettings) -> None:
        self.endpoint = settings.endpoint_url or f"ec2.{settings.region}.amazonaws.com"
        self._ec2 = make_client("ec2", settings, field="cloud.credentials_file", read_timeout=60)
        self._translate = Translator(
            service="EC2",
            endpoint=self.endpoint,
            not_found=_NOT_FOUND,
            transient=_TRANSIENT_CODES,
            not_found_says="EC2 does not know the instance",
        )

    def close(self) -> None:
        self._ec2.close()

    def __enter__(self) -> Cloud:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self, instance_ids: Sequence[str]) -> list[Instance]:
        """The instances named (in EC2's order); `NotFoundError` when one of them is unknown."""
        if not instance_ids:
            return []
        out: list[Instance] = []
        with self._translate(f"Describing instances {', '.join(instance_ids)}"):
            pages = self._ec2.get_paginator("describe_instances").paginate(InstanceIds=list(instance_ids))
            for page in pages:
                for reservation in page.get("Reservations", []):
                    for raw in reservation.get("Instances", []):
                        tags = {t.get("Key"): t.get("Value") for t in raw.get("Tags") or []}
                        out.append(
                            Instance(
                                instance_id=str(raw["InstanceId"]),
                                state=str(raw.get("State", {}).get("Name", "unknown")),
                                private_ip=raw.get("PrivateIpAddress"),
                                name=tags.get("Name"),
                            )
                        )
        return out

    def start(self, instance_ids: Sequence[str]) -> None:
        """StartInstances; running ones are left as they are (EC2 does that itself)."""
        if instance_ids:
            with self._translate(f"Starting instances {', '.join(instance_ids)}"):
                self._ec2.start_instances(InstanceIds=list(instance_ids))

    def stop(self, instance_ids: Sequence[str]) -> None:
        """StopInstances (an ACPI shutdown: the OS stops its services first)."""
        if instance_ids:
            with self._translate(f"Stopping instances {', '.join(instance_ids)}"):
                self._ec2.stop_instances(InstanceIds=list(instance_ids))
