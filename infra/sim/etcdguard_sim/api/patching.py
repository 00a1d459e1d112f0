"""The three patch formats of `PATCH` requests, applied to plain JSON values.

- `application/merge-patch+json`: RFC 7386 JSON merge patch (objects merge, `null` deletes,
  everything else, lists included, replaces).
- `application/json-patch+json`: RFC 6902 JSON patch (`add`, `remove`, `replace`, `move`,
  `copy`, `test`; JSON pointers with `~0`/`~1`, `-` for the end of an array).
- `application/strategic-merge-patch+json`: simplified. A merge patch in which some lists are
  merged element by element instead of replaced: the element key is chosen by the list's field
  name wherever it appears (`containers`, `initContainers`, `volumes`, `env`,
  `imagePullSecrets` by `name`; `volumeMounts` by `mountPath`; `ports` by `containerPort`
  (or `port`); `conditions` and `addresses` by `type`; `taints` by `key`; `ownerReferences`
  by `uid`), and `finalizers` is merged as a set. Directives understood: `$patch: replace`,
  `$patch: delete` (on a map or a list element), `$deleteFromPrimitiveList/<field>`;
  `$setElementOrder/<field>` and `$retainKeys` are dropped. A real server reads merge keys and
  strategies from each Go type's struct tags instead.

Errors are `PatchError`s carrying the HTTP status a real server answers: 400 when the patch
document itself cannot be decoded, 422 when it does not apply (a failed `test`, a missing path).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonpatch
import jsonpointer

__all__ = ["PatchError", "apply_patch", "json_patch", "merge_patch", "strategic_merge_patch"]

MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"


class PatchError(ValueError):
    """The patch is malformed (code 400) or does not apply to the object (code 422)."""

    def __init__(self, message: str, *, code: int) -> None:
        super().__init__(message)
        self.code = code


# ---- RFC 7386 ----------------------------------------------------------------------------
def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: the result of merging `patch` into `target` (neither is modified)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result: dict[str, Any] = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# ---- RFC 6902 (the `jsonpatch` library) ---------------------------------------------------
_OPS = frozenset({"add", "remove", "replace", "move", "copy", "test"})


def _check_pointer(path: Any) -> None:
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise PatchError(f"invalid JSON pointer {path!r}: it must be empty or start with '/'", code=400)


def _check_operation(raw: Any) -> None:
    """The shape of one operation, refused with 400 as the kube-apiserver refuses it."""
    if not isinstance(raw, dict) or "op" not in raw or "path" not in raw:
        raise PatchError(
            f"invalid JSON patch operation {json.dumps(raw)[:200]}: it needs 'op' and 'path'", code=400
        )
    op, path = raw["op"], raw["path"]
    if op not in _OPS:
        raise PatchError(f"Unexpected kind: {op!r} is not a JSON patch operation", code=400)
    _check_pointer(path)
    if op in ("add", "replace", "test") and "value" not in raw:
        raise PatchError(f"the {op} operation on {path} has no 'value'", code=400)
    if op in ("move", "copy"):
        if not isinstance(raw.get("from"), str):
            raise PatchError(f"the {op} operation on {path} has no 'from'", code=400)
        _check_pointer(raw["from"])


def json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902: apply `operations` (a list of op objects) to a copy of `target`."""
    if not isinstance(operations, list):
        raise PatchError(
            "a JSON patch must be a JSON array of operations, like "
            '[{"op": "replace", "path": "/spec/x", "value": 1}]',
            code=400,
        )
    for raw in operations:
        _check_operation(raw)
    doc = copy.deepcopy(target)
    for raw in operations:  # one at a time, so that a failure names its operation
        op, path = raw["op"], raw["path"]
        try:
            doc = jsonpatch.JsonPatch([raw]).apply(doc, in_place=True)
        except jsonpatch.JsonPatchTestFailed as exc:
            raise PatchError(f"testing value {path} failed: test failed", code=422) from exc
        except jsonpatch.InvalidJsonPatch as exc:
            raise PatchError(f"invalid JSON patch operation on {path}: {exc}", code=400) from exc
        except (jsonpatch.JsonPatchConflict, jsonpointer.JsonPointerException) as exc:
            raise PatchError(
                f'{op} operation does not apply: doc is missing path: "{path}": {exc}', code=422
            ) from exc
    return doc


# ---- strategic merge (simplified) --------------------------------------------------------
_MERGE_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "ephemeralContainers": ("name",),
    "volumes": ("name",),
    "env": ("name",),
    "imagePullSecrets": ("name",),
    "volumeMounts": ("mountPath",),
    "ports": ("containerPort", "port"),
    "conditions": ("type",),
    "addresses": ("type",),
    "taints": ("key",),
    "ownerReferences": ("uid",),
}
_SET_LISTS = frozenset({"finalizers"})


def _merge_key(field: str, items: list[Any]) -> str | None:
    for key in _MERGE_KEYS.get(field, ()):
        if items and all(isinstance(i, dict) and key in i for i in items):
            return key
    return None


def _merge_list(field: str, current: Any, patch: list[Any]) -> list[Any]:
    if not isinstance(current, list):
        current = []
    if field in _SET_LISTS:
        return list(current) + [v for v in patch if v not in current]
    key = _merge_key(field, patch)
    if key is None or not all(isinstance(i, dict) and key in i for i in current):
        return [_strip(copy.deepcopy(v)) for v in patch if not _is_delete(v)]
    result = [copy.deepcopy(i) for i in current]
    for item in patch:
        pos = next((n for n, c in enumerate(result) if c.get(key) == item[key]), None)
        if _is_delete(item):
            if pos is not None:
                result.pop(pos)
        elif pos is None:
            result.append(_strip(copy.deepcopy(item)))
        else:
            result[pos] = strategic_merge_patch(result[pos], item)
    return result


def _is_delete(value: Any) -> bool:
    return isinstance(value, dict) and value.get("$patch") == "delete"


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if not k.startswith("$")}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """A merge patch that merges known lists by key (see the module docstring)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "replace":
        return _strip(copy.deepcopy(patch))
    result: dict[str, Any] = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys") or key.startswith("$setElementOrder/"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            if isinstance(result.get(field), list) and isinstance(value, list):
                result[field] = [v for v in result[field] if v not in value]
            continue
        if value is None or _is_delete(value):
            result.pop(key, None)
        elif isinstance(value, list):
            result[key] = _merge_list(key, result.get(key), value)
        elif isinstance(value, dict):
            result[key] = strategic_merge_patch(result.get(key), value)
        else:
            result[key] = value
    return result


def apply_patch(content_type: str, target: Any, body: bytes) -> Any:
    """Decode `body` and apply it to `target` according to the patch `content_type`."""
    try:
        patch = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PatchError(f"the patch is not valid JSON: {exc}", code=400) from exc
    if content_type == JSON_PATCH:
        return json_patch(target, patch)
    if not isinstance(patch, dict):
        raise PatchError(
            f"a {content_type} patch must be a JSON object, not a {type(patch).__name__}; "
            "send a list of operations as application/json-patch+json",
            code=400,
        )
    if content_type == MERGE:
        return merge_patch(target, patch)
    if content_type == STRATEGIC:
        return strategic_merge_patch(target, patch)
    raise PatchError(f"unsupported patch type {content_type!r}", code=415)
