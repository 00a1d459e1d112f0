"""The pure parts of `pods/exec`: request parameters, container choice, subprotocol choice,
frames and the `Status` objects written before the upgrade and on the error channel.

Wording follows the real kube-apiserver (`pkg/registry/core/pod/strategy.go`) and kubelet
(`remotecommand/httpstream.go`), because `kubectl` and the Python client print these strings.

Subprotocols, in the server's order of preference:

    v5.channel.k8s.io   v4 + channel 255 "close" signal (`[255, 0]` = stdin closed)
    v4.channel.k8s.io   error channel carries a JSON `Status`, exit code in its details
    channel.k8s.io      v1: error channel carries plain text, only on failure
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

__all__ = [
    "CLOSE",
    "ERROR",
    "PROTOCOL_V1",
    "PROTOCOL_V4",
    "PROTOCOL_V5",
    "RESIZE",
    "STDERR",
    "STDIN",
    "STDOUT",
    "ExecParams",
    "RequestError",
    "choose_protocol",
    "exit_status",
    "frame",
    "parse_params",
    "resolve_container",
    "status_failure",
]

STDIN: Final = 0
STDOUT: Final = 1
STDERR: Final = 2
ERROR: Final = 3
RESIZE: Final = 4
CLOSE: Final = 255

PROTOCOL_V5: Final = "v5.channel.k8s.io"
PROTOCOL_V4: Final = "v4.channel.k8s.io"
PROTOCOL_V1: Final = "channel.k8s.io"
_PREFERENCE: Final = (PROTOCOL_V5, PROTOCOL_V4, PROTOCOL_V1)

# strconv.ParseBool, which the real server uses for these query parameters.
_TRUE: Final = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE: Final = frozenset({"0", "f", "F", "FALSE", "false", "False"})


class RequestError(Exception):
    """A request the server answers with a `400 BadRequest` Status before any upgrade."""


@dataclasses.dataclass(frozen=True)
class ExecParams:
    """The query parameters of one `pods/exec` request."""

    command: tuple[str, ...]
    container: str | None
    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool


def _flag(query: Mapping[str, str], name: str) -> bool:
    value = query.get(name)
    if value is None or value in _FALSE:
        return False
    if value in _TRUE:
        return True
    raise RequestError(
        f"the query parameter {name}={value!r} is not a boolean: use true or false (or 1 or 0)"
    )


def parse_params(query: Mapping[str, str], commands: Sequence[str]) -> ExecParams:
    """Check the query as the real server does; `commands` are the repeated `command=` values."""
    params = ExecParams(
        command=tuple(commands),
        container=query.get("container") or None,
        stdin=_flag(query, "stdin"),
        stdout=_flag(query, "stdout"),
        stderr=_flag(query, "stderr"),
        tty=_flag(query, "tty"),
    )
    if not params.command:
        raise RequestError("you must specify at least 1 command")
    if not (params.stdin or params.stdout or params.stderr):
        raise RequestError("you must specify at least 1 of stdin, stdout, stderr")
    return params


def _names(pod: Mapping[str, Any], field: str) -> list[str]:
    return [str(c["name"]) for c in pod.get("spec", {}).get(field) or []]


def resolve_container(pod: Mapping[str, Any], container: str | None) -> str:
    """The container to exec in, defaulted and checked like `ExecLocation` of the real server."""
    name = pod.get("metadata", {}).get("name", "")
    containers = _names(pod, "containers")
    if container is None:
        if len(containers) == 1:
            return containers[0]
        message = (
            f"a container name must be specified for pod {name}, choose one of: [{' '.join(containers)}]"
        )
        init = _names(pod, "initContainers")
        if init:
            message += f" or one of the init containers: [{' '.join(init)}]"
        raise RequestError(message)
    known = containers + _names(pod, "initContainers") + _names(pod, "ephemeralContainers")
    if container not in known:
        raise RequestError(f"container {container} is not valid for pod {name}")
    return container


def choose_protocol(header: str | None) -> str | None:
    """The subprotocol to answer with, by the server's preference (v5, v4, v1).

    No `Sec-WebSocket-Protocol` header at all means the original `channel.k8s.io` without
    naming it (returns None); a header naming only unknown protocols is a `RequestError`.
    """
    if header is None or not header.strip():
        return None
    offered = {p.strip() for p in header.split(",")}
    for protocol in _PREFERENCE:
        if protocol in offered:
            return protocol
    raise RequestError(
        f"none of the requested websocket subprotocols [{header}] is supported: "
        f"this server speaks {', '.join(_PREFERENCE)}"
    )


def frame(channel: int, data: bytes) -> bytes:
    """One websocket message: the channel byte, then the data."""
    return bytes((channel,)) + data


def status_failure(message: str, *, code: int = 400, reason: str = "BadRequest") -> bytes:
    """The JSON body of an HTTP error reply (a full `Status` object)."""
    status = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    return json.dumps(status).encode()


def exit_status(command: Sequence[str], returncode: int, *, protocol: str | None) -> bytes | None:
    """What the error channel carries when the command ended (None: send nothing).

    A process killed by signal N is reported as exit code 128 + N, as a shell would.
    """
    code = 128 - returncode if returncode < 0 else returncode
    message = (
        "command terminated with non-zero exit code: "
        f"error executing command [{' '.join(command)}], exit code {code}"
    )
    if protocol in (PROTOCOL_V5, PROTOCOL_V4):
        if code == 0:
            return b'{"metadata":{},"status":"Success"}'
        status = {
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
        }
        return json.dumps(status, separators=(",", ":")).encode()
    return None if code == 0 else message.encode()
