"""What the two AWS facades (`objectstore` for S3, `cloud` for EC2) share: building a boto3 client
from the profile's settings, and translating botocore's errors into etcdguard's.

Private to `etcdguard.clients`: the rest of the product talks to `ObjectStore` and `Cloud`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import botocore.exceptions

from etcdguard.core import errors
from etcdguard.core.profile import CloudSettings, StorageSettings

__all__ = ["Translator", "aws_credentials", "make_client", "read_credentials_file"]


def read_credentials_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines (comments and blanks ignored) -> dict. The values are secrets: never log them."""
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, _, value = line.partition("=")
        values[name.strip()] = value.strip().strip("'\"")
    return values


def aws_credentials(path: Path, *, field: str) -> dict[str, str]:
    """boto3 client keyword arguments from a credentials file; `ConfigError` naming `field` when
    the keys are missing."""
    creds = read_credentials_file(path)
    missing = [n for n in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if not creds.get(n)]
    if missing:
        raise errors.ConfigError(
            f"{field} {path} lacks {', '.join(missing)}; add them as KEY=VALUE lines, or remove "
            f"{field.rsplit('.', 1)[-1]} to use the default AWS chain."
        )
    kwargs = {
        "aws_access_key_id": creds["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": creds["AWS_SECRET_ACCESS_KEY"],
    }
    if creds.get("AWS_SESSION_TOKEN"):
        kwargs["aws_session_token"] = creds["AWS_SESSION_TOKEN"]
    return kwargs


def make_client(service: str, settings: StorageSettings | CloudSettings, *, field: str, **config: Any) -> Any:
    """A boto3 client of `service` for the settings' region, endpoint and credentials file (`field`
    names that file in errors; without one, the default AWS chain). botocore retries 3 times
    (standard mode) and connects within 10 s; `config` adds to or overrides that botocore Config."""
    kwargs: dict[str, Any] = {"region_name": settings.region}
    if settings.endpoint_url:
        kwargs["endpoint_url"] = settings.endpoint_url
    if settings.credentials_file is not None:
        kwargs.update(aws_credentials(settings.credentials_file, field=field))
    defaults: dict[str, Any] = {"retries": {"max_attempts": 3, "mode": "standard"}, "connect_timeout": 10}
    kwargs["config"] = botocore.config.Config(**(defaults | config))
    return boto3.session.Session().client(service, **kwargs)


class Translator:
    """botocore errors -> etcdguard errors, for one service at one endpoint.

    A ClientError whose code is in `not_found` (or, with `not_found_status`, whose HTTP status is
    404) -> `NotFoundError` "<what>: <not_found_says> (<code>: <message>)."; a code in `transient`,
    a 5xx or a 429 -> `TransientError` "<service> answered <status>"; any other ClientError ->
    `PermanentError` "<service> refused". BotoCoreError and OSError (timeouts, refused connections)
    -> `TransientError` "<service> at <endpoint> could not be reached". etcdguard's own errors pass.
    """

    def __init__(
        self,
        *,
        service: str,
        endpoint: str,
        not_found: frozenset[str],
        transient: frozenset[str],
        not_found_says: str = "not found",
        not_found_status: bool = False,
    ) -> None:
        self.service = service
        self.endpoint = endpoint
        self.not_found = not_found
        self.transient = transient
        self.not_found_says = not_found_says
        self.not_found_status = not_found_status

    @contextmanager
    def __call__(self, what: str) -> Iterator[None]:
        try:
            yield
        except errors.EtcdguardError:
            raise
        except botocore.exceptions.ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            detail = errors.truncate_remote(f"{code}: {error.get('Message', '')}", limit=300)
            if code in self.not_found or (self.not_found_status and status == 404):
                raise errors.NotFoundError(f"{what}: {self.not_found_says} ({detail}).") from exc
            if code in self.transient or status >= 500 or status == 429:
                raise errors.TransientError(
                    f"{what}: {self.service} answered {status} ({detail}); retrying may help."
                ) from exc
            raise errors.PermanentError(f"{what}: {self.service} refused ({detail}).") from exc
        except (botocore.exceptions.BotoCoreError, OSError) as exc:
            raise errors.TransientError(
                f"{what}: {self.service} at {self.endpoint} could not be reached ({type(exc).__name__}: "
                f"{errors.truncate_remote(str(exc), limit=200)})."
            ) from exc
