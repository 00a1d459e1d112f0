"""Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`) for a few kinds.

kubectl 1.32 sends typed objects as protobuf (`kubectl create namespace|secret|configmap|
serviceaccount`, `kubectl certificate approve|deny`, which PUTs the whole CSR to `/approval`).
A real API server decodes every built-in kind; this module decodes the kinds those commands
send, with a hand-written table of field numbers from k8s.io/api's `generated.proto`, into the
same JSON shape the server stores. Answers stay JSON (kubectl accepts both).

Wire format: the 4-byte magic `k8s\\0`, then a `runtime.Unknown` message (1 typeMeta
{1 apiVersion, 2 kind}, 2 raw, 3 contentEncoding, 4 contentType) whose `raw` is the object.

Simplified: kinds outside `KINDS` (pods among them: `kubectl run`/`debug`) are refused with
415 and a message naming the way around (`kubectl create -f` with YAML, sent as JSON);
`managedFields` are dropped.
"""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

__all__ = ["KINDS", "MAGIC", "ProtobufError", "decode"]

MAGIC = b"k8s\x00"


class ProtobufError(ValueError):
    """The body is not a Kubernetes protobuf envelope of a kind this module knows."""


# A field: (json name, type, repeated). Types: "string", "bytes", "int", "bool", "time",
# "map" (string -> string), "mapbytes" (string -> base64 bytes), "mapextra"
# (string -> list of strings), or the name of another message in _MESSAGES.
Field = tuple[str, str, bool]

_MESSAGES: dict[str, dict[int, Field]] = {
    "ObjectMeta": {
        1: ("name", "string", False), 2: ("generateName", "string", False),
        3: ("namespace", "string", False), 4: ("selfLink", "string", False),
        5: ("uid", "string", False), 6: ("resourceVersion", "string", False),
        7: ("generation", "int", False), 8: ("creationTimestamp", "time", False),
        9: ("deletionTimestamp", "time", False), 10: ("deletionGracePeriodSeconds", "int", False),
        11: ("labels", "map", False), 12: ("annotations", "map", False),
        13: ("ownerReferences", "OwnerReference", True), 14: ("finalizers", "string", True),
    },
    "OwnerReference": {
        1: ("kind", "string", False), 3: ("name", "string", False), 4: ("uid", "string", False),
        5: ("apiVersion", "string", False), 6: ("controller", "bool", False),
        7: ("blockOwnerDeletion", "bool", False),
    },
    "ObjectReference": {
        1: ("kind", "string", False), 2: ("namespace", "string", False),
        3: ("name", "string", False), 4: ("uid", "string", False),
        5: ("apiVersion", "string", False), 6: ("resourceVersion", "string", False),
        7: ("fieldPath", "string", False),
    },
    "LocalObjectReference": {1: ("name", "string", False)},
    "Namespace": {
        1: ("metadata", "ObjectMeta", False), 2: ("spec", "NamespaceSpec", False),
        3: ("status", "NamespaceStatus", False),
    },
    "NamespaceSpec": {1: ("finalizers", "string", True)},
    "NamespaceStatus": {1: ("phase", "string", False)},
    "Secret": {
        1: ("metadata", "ObjectMeta", False), 2: ("data", "mapbytes", False),
        3: ("type", "string", False), 4: ("stringData", "map", False),
        5: ("immutable", "bool", False),
    },
    "ConfigMap": {
        1: ("metadata", "ObjectMeta", False), 2: ("data", "map", False),
        3: ("binaryData", "mapbytes", False), 4: ("immutable", "bool", False),
    },
    "ServiceAccount": {
        1: ("metadata", "ObjectMeta", False), 2: ("secrets", "ObjectReference", True),
        3: ("imagePullSecrets", "LocalObjectReference", True),
        4: ("automountServiceAccountToken", "bool", False),
    },
    "CertificateSigningRequest": {
        1: ("metadata", "ObjectMeta", False), 2: ("spec", "CSRSpec", False),
        3: ("status", "CSRStatus", False),
    },
    "CSRSpec": {
        1: ("request", "bytes", False), 2: ("username", "string", False),
        3: ("uid", "string", False), 4: ("groups", "string", True),
        5: ("usages", "string", True), 6: ("extra", "mapextra", False),
        7: ("signerName", "string", False), 8: ("expirationSeconds", "int", False),
    },
    "CSRStatus": {1: ("conditions", "CSRCondition", True), 2: ("certificate", "bytes", False)},
    "CSRCondition": {
        1: ("type", "string", False), 2: ("reason", "string", False),
        3: ("message", "string", False), 4: ("lastUpdateTime", "time", False),
        5: ("lastTransitionTime", "time", False), 6: ("status", "string", False),
    },
}  # fmt: skip

KINDS: frozenset[str] = frozenset(
    {"Namespace", "Secret", "ConfigMap", "ServiceAccount", "CertificateSigningRequest"}
)


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise ProtobufError("truncated varint in the protobuf body")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ProtobufError("varint longer than 64 bits in the protobuf body")


def _fields(buf: bytes) -> list[tuple[int, int, Any]]:
    """(field number, wire type, value) of every field; value is int or bytes."""
    out: list[tuple[int, int, Any]] = []
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        value: Any
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
            if len(value) != length:
                raise ProtobufError("truncated length-delimited field in the protobuf body")
        elif wire == 1:
            value, pos = int.from_bytes(buf[pos : pos + 8], "little"), pos + 8
        elif wire == 5:
            value, pos = int.from_bytes(buf[pos : pos + 4], "little"), pos + 4
        else:
            raise ProtobufError(f"unsupported protobuf wire type {wire} in field {number}")
        out.append((number, wire, value))
    return out


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _time(raw: bytes) -> str | None:
    if not raw:  # metav1.Time marshals the zero time as an empty message: JSON null
        return None
    seconds = 0
    for number, _wire, value in _fields(raw):
        if number == 1:
            seconds = _signed(value)
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _map_entry(raw: bytes) -> tuple[str, bytes]:
    key, value = "", b""
    for number, _wire, v in _fields(raw):
        if number == 1:
            key = v.decode()
        elif number == 2:
            value = v
    return key, value


def _scalar(kind: str, value: Any) -> Any:
    if kind == "string":
        return value.decode()
    if kind == "bytes":
        return base64.b64encode(value).decode()
    if kind == "int":
        return _signed(value)
    if kind == "bool":
        return bool(value)
    if kind == "time":
        return _time(value)
    return _message(kind, value)


def _message(name: str, raw: bytes) -> dict[str, Any]:
    schema = _MESSAGES[name]
    out: dict[str, Any] = {}
    for number, _wire, value in _fields(raw):
        if number not in schema:
            continue
        field, kind, repeated = schema[number]
        if kind in ("map", "mapbytes", "mapextra"):
            key, item = _map_entry(value)
            target = out.setdefault(field, {})
            if kind == "map":
                target[key] = item.decode()
            elif kind == "mapbytes":
                target[key] = base64.b64encode(item).decode()
            else:
                target[key] = [v.decode() for n, _w, v in _fields(item) if n == 1]
        elif repeated:
            out.setdefault(field, []).append(_scalar(kind, value))
        elif (decoded := _scalar(kind, value)) is not None:
            out[field] = decoded
    return out


def decode(body: bytes) -> dict[str, Any]:
    """The JSON form of a protobuf-encoded object. Raises ProtobufError."""
    if not body.startswith(MAGIC):
        raise ProtobufError("the protobuf body does not start with the Kubernetes magic bytes k8s\\0")
    api_version = kind = ""
    raw = b""
    for number, _wire, value in _fields(body[len(MAGIC) :]):
        if number == 1:
            for n, _w, v in _fields(value):
                if n == 1:
                    api_version = v.decode()
                elif n == 2:
                    kind = v.decode()
        elif number == 2:
            raw = value
        elif number == 3 and value:
            raise ProtobufError(f"protobuf content encoding {value!r} is not supported")
    if kind not in KINDS:
        raise ProtobufError(
            f"the simulated API server decodes protobuf bodies of {', '.join(sorted(KINDS))} only, "
            f"not {kind or 'an unnamed kind'}: send this object as JSON or YAML "
            "(for example `kubectl create -f FILE`)"
        )
    obj = _message(kind, raw)
    return {"kind": kind, "apiVersion": api_version, **obj}
