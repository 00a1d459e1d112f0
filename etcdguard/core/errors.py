"""Every error etcdguard raises, and whether a retry can help.

```
EtcdguardError
├── TransientError          retry: API unavailable, timeouts, S3 throttling or 5xx,
│                           SSH connection reset; the same call may succeed later
└── PermanentError          don't retry: the same call fails the same way until a person acts
    ├── ConfigError         a bad profile, parameter or block name
    ├── PreflightRefused    the cluster's state forbids the operation now (upgrading, younger
    │                       than 24 h, operators progressing, no quorum, ...)
    ├── IntegrityError      a checksum, sha256 trailer, manifest or snapshot status mismatch
    ├── NotFoundError       a backup, object, node, machine or host that should exist does not
    ├── VersionMismatch     a backup's z-stream differs from the cluster's
    ├── ApprovalRejected    a person refused (or mistyped) an approval gate
    └── RemoteCommandFailed a command on a host exited non-zero (exit code + truncated output)
```

Clients translate SDK exceptions into these at the facade (`raise TransientError(...) from exc`).
Messages are full sentences naming the concrete values and the next step. Text that comes from a
remote system (command output, response bodies) goes through `truncate_remote` first, which
shortens it and redacts anything that looks like a secret, so secrets never reach a log.
`is_transient` is the basis of the Prefect tasks' `retry_condition_fn`.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "ApprovalRejected",
    "ConfigError",
    "EtcdguardError",
    "IntegrityError",
    "NotFoundError",
    "PermanentError",
    "PreflightRefused",
    "RemoteCommandFailed",
    "TransientError",
    "VersionMismatch",
    "is_transient",
    "redact",
    "truncate_remote",
]

_REDACTED = "[REDACTED]"
_MIN_LIMIT = 80

# Each pattern is linear in the input length: no unbounded repetition precedes a fixed keyword.
_PEM = re.compile(r"-----BEGIN ([A-Z0-9 ]{1,40})-----.*?(?:-----END \1-----|\Z)", re.DOTALL)
_PEM_BASE64 = re.compile(r"LS0tLS1CRUdJTi[A-Za-z0-9+/=]*")  # base64 of "-----BEGIN" (kubeconfig *-data)
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_OPENSHIFT_TOKEN = re.compile(r"\bsha256~[A-Za-z0-9_-]{8,}")
_AUTH_SCHEME = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
_URL_CREDENTIALS = re.compile(r"(?<=://)[^/\s:@]{1,256}:[^/\s@]{1,256}@")
_SECRET_FLAG = re.compile(r"(?i)(--[\w-]{0,40}(?:token|passw(?:or)?d|secret)[\w-]{0,40})\s+(?!-)\S+")
_SECRET_ASSIGNMENT = re.compile(
    r"(?i)((?:token|passw(?:or)?d|passwd|pwd|secret|api[_-]?key|access[_-]?key|private[_-]?key"
    r"|key-data|credentials?)[\w.-]{0,40}[\"']?[ \t]{0,8}[:=][ \t]{0,8})"
    r"(\"[^\"\n]{0,4096}\"|'[^'\n]{0,4096}'|[\"']?[^\s,;&\"'}]+)"
)
_AWS_ACCESS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA|AROA|AIDA|AGPA|ANPA)[A-Z0-9]{16}\b")
_AWS_SECRET_CANDIDATE = re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _aws_secret(match: re.Match[str]) -> str:
    candidate = match.group(0)
    mixed_case = any(c.islower() for c in candidate) and any(c.isupper() for c in candidate)
    return _REDACTED if mixed_case else candidate


def redact(text: str) -> str:
    """Replace what looks like a secret in `text` with `[REDACTED]`, and control characters
    (other than newline and tab) with `?`.

    Redacted: PEM blocks (also a BEGIN line whose END was cut off) and their base64 form in
    kubeconfigs, JWTs and OpenShift `sha256~` tokens, `Bearer`/`Basic` credentials, user:password
    in URLs (proxy settings), values of `token`, `password`, `secret`, `...key` assignments in
    `k=v`, `k: v`, JSON and `--flag value` form, AWS access key ids and 40-character secret keys.
    """
    text = _PEM.sub("[REDACTED PEM BLOCK]", text)
    text = _PEM_BASE64.sub(_REDACTED, text)
    text = _JWT.sub(_REDACTED, text)
    text = _OPENSHIFT_TOKEN.sub(_REDACTED, text)
    text = _AUTH_SCHEME.sub(lambda m: f"{m.group(1)} {_REDACTED}", text)
    text = _URL_CREDENTIALS.sub(f"{_REDACTED}@", text)
    text = _SECRET_FLAG.sub(lambda m: f"{m.group(1)} {_REDACTED}", text)
    text = _SECRET_ASSIGNMENT.sub(lambda m: f"{m.group(1)}{_REDACTED}", text)
    text = _AWS_ACCESS_KEY_ID.sub(_REDACTED, text)
    text = _AWS_SECRET_CANDIDATE.sub(_aws_secret, text)
    return _CONTROL.sub("?", text)


def truncate_remote(text: str | bytes, limit: int = 500) -> str:
    """Make remote text (command output, a response body) safe and short enough to log.

    Bytes are decoded as UTF-8 with replacement. Secrets are redacted first (see `redact`), then
    text longer than `limit` characters keeps its beginning and its end (where errors usually
    are) around a marker saying how much was cut. The result never exceeds `limit` characters.
    """
    if limit < _MIN_LIMIT:
        raise ValueError(
            f"truncate_remote() was given limit={limit}; use at least {_MIN_LIMIT} characters "
            "so that the kept text is still readable."
        )
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    text = redact(text)
    if len(text) <= limit:
        return text
    marker = f"\n...[{len(text) - limit:,} characters cut]...\n"
    while True:  # the cut count is only known once the marker's own length is known
        keep = limit - len(marker)
        cut = len(text) - keep
        new_marker = f"\n...[{cut:,} characters cut]...\n"
        if new_marker == marker:
            break
        marker = new_marker
    head = keep // 2
    tail = keep - head
    return text[:head] + marker + (text[-tail:] if tail else "")


def _rebuild(cls: type[EtcdguardError], args: tuple[Any, ...], state: dict[str, Any]) -> EtcdguardError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class EtcdguardError(Exception):
    """Base of every etcdguard error. `message` is the full-sentence explanation given."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        # Prefect pickles exceptions into task states; keyword-only constructor arguments would
        # break the default `cls(*args)` unpickling, so rebuild without calling __init__.
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))


class TransientError(EtcdguardError):
    """Retrying may help: the API was unavailable, a call timed out, S3 throttled or answered
    5xx, an SSH connection was reset."""


class PermanentError(EtcdguardError):
    """Retrying will not help until someone changes something; the message says what."""


class ConfigError(PermanentError):
    """A profile, parameter or block name is wrong or missing."""


class PreflightRefused(PermanentError):
    """The cluster's current state forbids the operation (upgrading, too young, operators
    progressing, no quorum, ...)."""


class IntegrityError(PermanentError):
    """Data is not what it claims to be: checksum, sha256 trailer, manifest or snapshot status."""


class NotFoundError(PermanentError):
    """Something that should exist (backup, object, node, machine, host) does not."""


class VersionMismatch(PermanentError):
    """A backup's OpenShift z-stream differs from the cluster's; the guide forbids the restore."""


class ApprovalRejected(PermanentError):
    """A person rejected an approval gate, or confirmed with the wrong cluster name."""


class RemoteCommandFailed(PermanentError):
    """A command run on a host exited non-zero.

    `output` is the command's output already passed through `truncate_remote`, so it is short
    and redacted; the string form is the message, the exit code and that output.
    """

    def __init__(self, message: str, *, exit_code: int, output: str | bytes = "") -> None:
        safe_output = truncate_remote(output)
        text = f"{message} Exit code {exit_code}."
        if safe_output:
            text += f" Output: {safe_output}"
        super().__init__(text)
        self.message = message
        self.exit_code = exit_code
        self.output = safe_output


def is_transient(exc: BaseException) -> bool:
    """True when a retry may succeed: `exc` is a `TransientError`, or an exception group whose
    every member is transient. Anything else, including SDK exceptions that a client failed to
    translate, is not retried: an unknown failure is treated as permanent."""
    if isinstance(exc, TransientError):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return bool(exc.exceptions) and all(is_transient(inner) for inner in exc.exceptions)
    return False
