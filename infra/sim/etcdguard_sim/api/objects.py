"""Pure rules of the simulated API server about one object: no I/O, no clock of its own.

What a real kube-apiserver's registry strategies do before an object is written, reduced to
what the simulator needs:
- `check_type`: the body is an object of this kind (missing `kind`/`apiVersion` are filled in,
  as the real server defaults them from the URL; a different one is 422), `stringData` of a
  Secret is folded into `data`;
- `validate_name`: RFC 1123 subdomain (label for namespaces), worded as the real validator;
- `prepare_create`: what PrepareForCreate does with `.status` (dropped for kinds with a status
  subresource, except nodes; `Pending` for pods; `Active` and the `kubernetes` finalizer for
  namespaces);
- `prepare_update`: the object to store when a body is written over the current one through
  the main resource (identity and status kept, `generation` bumped when anything but metadata
  and status changed), `/status` (only `.status` changes) or CSR `/approval` (only
  `status.conditions`; Approved together with Denied is 422).
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
import re
from typing import Any

from etcdguard_sim.api import errors as apierrors
from etcdguard_sim.api import resources

__all__ = [
    "check_type",
    "encode",
    "prepare_create",
    "prepare_update",
    "rfc3339",
    "same",
    "validate_name",
]

_SUBDOMAIN_RE = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_LABEL_RE = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_IDENTITY = ("name", "namespace", "uid", "creationTimestamp", "deletionTimestamp",
             "deletionGracePeriodSeconds", "generation")  # fmt: skip


def rfc3339(when: dt.datetime) -> str:
    """Kubernetes timestamps: UTC, whole seconds, `Z`."""
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def encode(obj: dict[str, Any]) -> bytes:
    """The stored form: compact JSON without `metadata.resourceVersion`."""
    stored = copy.deepcopy(obj)
    stored.get("metadata", {}).pop("resourceVersion", None)
    return json.dumps(stored, separators=(",", ":")).encode()


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether writing `a` over `b` would change nothing (the real server then skips the write)."""
    return encode(a) == encode(b)


def _content(obj: dict[str, Any], *, with_status: bool) -> dict[str, Any]:
    drop = {"metadata", "apiVersion", "kind"} | ({"status"} if with_status else set())
    return {k: v for k, v in obj.items() if k not in drop}


def check_type(res: resources.Resource, body: Any, name: str) -> dict[str, Any]:
    """A copy of `body` as an object of `res`, with `kind`, `apiVersion` and `metadata`."""
    if not isinstance(body, dict):
        raise apierrors.bad_request(f"the request body must be a JSON object describing a {res.kind}")
    kind, api_version = body.get("kind"), body.get("apiVersion")
    if kind not in (None, "", res.kind):
        raise apierrors.invalid(
            res, name, field="kind", cause="FieldValueInvalid",
            detail=f'Invalid value: "{kind}": must be {res.kind} for {res.group_resource}',
        )  # fmt: skip
    if api_version not in (None, "", res.group_version):
        raise apierrors.invalid(
            res, name, field="apiVersion", cause="FieldValueInvalid",
            detail=f'Invalid value: "{api_version}": must be {res.group_version}',
        )  # fmt: skip
    rest = {k: v for k, v in copy.deepcopy(body).items() if k not in ("kind", "apiVersion")}
    obj = {"kind": res.kind, "apiVersion": res.group_version, **rest}
    if not isinstance(obj.get("metadata"), dict):
        obj["metadata"] = {}
    if res.plural == "secrets" and isinstance(obj.get("stringData"), dict):
        # As on a real server: stringData is write-only, merged into data.
        data: dict[str, Any] = obj["data"] if isinstance(obj.get("data"), dict) else {}
        for k, v in obj.pop("stringData").items():
            data[k] = base64.b64encode(str(v).encode()).decode()
        obj["data"] = data
    return obj


def validate_name(res: resources.Resource, name: str) -> None:
    if res.plural == "namespaces":
        ok = bool(re.fullmatch(_LABEL_RE, name)) and len(name) <= 63
        what, regex = "a lowercase RFC 1123 label", _LABEL_RE
    else:
        ok = bool(re.fullmatch(_SUBDOMAIN_RE, name)) and len(name) <= 253
        what, regex = "a lowercase RFC 1123 subdomain", _SUBDOMAIN_RE
    if not ok:
        raise apierrors.invalid(
            res, name, field="metadata.name", cause="FieldValueInvalid",
            detail=f'Invalid value: "{name}": {what} must consist of lower case alphanumeric '
            "characters, '-' or '.', and must start and end with an alphanumeric character "
            f"(regex used for validation is '{regex}')",
        )  # fmt: skip


def prepare_create(res: resources.Resource, obj: dict[str, Any]) -> None:
    """What each kind's PrepareForCreate does with `.status` (in place)."""
    if res.plural == "namespaces":
        obj["status"] = {"phase": "Active"}
        obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
    elif res.plural == "pods":
        obj["status"] = {"phase": "Pending"}
    elif res.has_status and res.plural != "nodes":  # nodes may be created with their status
        obj.pop("status", None)


def _stamp(conditions: Any, now: dt.datetime) -> list[Any]:
    """CSR conditions without `lastTransitionTime` get the current time, as on a real server."""
    out = copy.deepcopy(conditions) if isinstance(conditions, list) else []
    for cond in out:
        if isinstance(cond, dict) and not cond.get("lastTransitionTime"):
            cond["lastTransitionTime"] = rfc3339(now)
    return out


def prepare_update(
    res: resources.Resource,
    old: dict[str, Any],
    new: dict[str, Any],
    *,
    subresource: str | None,
    now: dt.datetime,
) -> dict[str, Any]:
    """The object to store when `new` is written over `old` through `subresource`."""
    name = old["metadata"]["name"]
    is_csr = res.plural == "certificatesigningrequests"
    if subresource == "status":
        out = copy.deepcopy(old)
        status = new.get("status")
        if status is None:
            out.pop("status", None)
            return out
        out["status"] = copy.deepcopy(status)
        if is_csr and isinstance(status, dict) and "conditions" in status:
            out["status"]["conditions"] = _stamp(status["conditions"], now)
        return out
    if subresource == "approval":
        out = copy.deepcopy(old)
        conditions = (new.get("status") or {}).get("conditions") or []
        types = [c.get("type") for c in conditions if isinstance(c, dict)]
        if "Approved" in types and "Denied" in types:
            raise apierrors.invalid(
                res, name, field="status.conditions", cause="FieldValueInvalid",
                detail='Invalid value: "Denied": Approved and Denied conditions are mutually exclusive',
            )  # fmt: skip
        out.setdefault("status", {})["conditions"] = _stamp(conditions, now)
        return out
    out = check_type(res, new, name)
    meta, old_meta = out["metadata"], old["metadata"]
    if meta.get("name", name) != name:
        raise apierrors.bad_request(
            f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})"
        )
    if res.namespaced and meta.get("namespace") not in (None, "", old_meta.get("namespace")):
        raise apierrors.bad_request(
            "the namespace of the provided object does not match the namespace sent on the request"
        )
    for field in _IDENTITY:
        if field in old_meta:
            meta[field] = old_meta[field]
        else:
            meta.pop(field, None)
    if res.has_status:
        if "status" in old:
            out["status"] = copy.deepcopy(old["status"])
        else:
            out.pop("status", None)
    if _content(out, with_status=res.has_status) != _content(old, with_status=res.has_status):
        meta["generation"] = int(old_meta.get("generation") or 0) + 1
    return out
