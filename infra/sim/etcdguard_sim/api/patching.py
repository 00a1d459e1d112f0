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


# ---- RFC 6902 ----------------------------------------------------------------------------
def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise PatchError(f"invalid JSON pointer {path!r}: it must be empty or start with '/'", code=400)
    if path == "":
        return []
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _index(container: list[Any], token: str, *, path: str, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return len(container)
    if not token.isdigit() or (token != "0" and token.startswith("0")):
        raise PatchError(f"invalid array index {token!r} in {path}", code=422)
    idx = int(token)
    limit = len(container) if allow_end else len(container) - 1
    if idx > limit:
        raise PatchError(f"array index {idx} out of bounds in {path}: missing value", code=422)
    return idx


def _parent(doc: Any, parts: list[str], *, path: str, op: str) -> Any:
    node = doc
    for token in parts[:-1]:
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, path=path, allow_end=False)]
        else:
            raise PatchError(
                f'{op} operation does not apply: doc is missing path: "{path}": missing value', code=422
            )
    return node


def _get(doc: Any, path: str, *, op: str) -> Any:
    node = doc
    for token in _pointer(path):
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, path=path, allow_end=False)]
        else:
            raise PatchError(
                f'{op} operation does not apply: doc is missing path: "{path}": missing value', code=422
            )
    return node


def _add(doc: Any, path: str, value: Any) -> Any:
    parts = _pointer(path)
    if not parts:
        return value
    parent = _parent(doc, parts, path=path, op="add")
    if isinstance(parent, dict):
        parent[parts[-1]] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, parts[-1], path=path, allow_end=True), value)
    else:
        raise PatchError(
            f'add operation does not apply: doc is missing path: "{path}": missing value', code=422
        )
    return doc


def _remove(doc: Any, path: str, *, op: str = "remove") -> tuple[Any, Any]:
    parts = _pointer(path)
    if not parts:
        raise PatchError(f"{op} operation does not apply: cannot remove the whole document", code=422)
    parent = _parent(doc, parts, path=path, op=op)
    if isinstance(parent, dict):
        if parts[-1] not in parent:
            raise PatchError(f"Unable to remove nonexistent key: {parts[-1]}: missing value", code=422)
        return doc, parent.pop(parts[-1])
    if isinstance(parent, list):
        return doc, parent.pop(_index(parent, parts[-1], path=path, allow_end=False))
    raise PatchError(f'{op} operation does not apply: doc is missing path: "{path}": missing value', code=422)


def json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902: apply `operations` (a list of op objects) to a copy of `target`."""
    if not isinstance(operations, list):
        raise PatchError(
            "a JSON patch must be a JSON array of operations, like "
            '[{"op": "replace", "path": "/spec/x", "value": 1}]',
            code=400,
        )
    doc = copy.deepcopy(target)
    for raw in operations:
        if not isinstance(raw, dict) or "op" not in raw or "path" not in raw:
            raise PatchError(
                f"invalid JSON patch operation {json.dumps(raw)[:200]}: it needs 'op' and 'path'", code=400
            )
        op, path = raw["op"], raw["path"]
        if op in ("add", "replace", "test") and "value" not in raw:
            raise PatchError(f"the {op} operation on {path} has no 'value'", code=400)
        if op == "add":
            doc = _add(doc, path, copy.deepcopy(raw["value"]))
        elif op == "remove":
            doc, _ = _remove(doc, path)
        elif op == "replace":
            _get(doc, path, op="replace")
            if _pointer(path):
                doc, _ = _remove(doc, path, op="replace")
            doc = _add(doc, path, copy.deepcopy(raw["value"]))
        elif op == "test":
            if _get(doc, path, op="test") != raw["value"]:
                raise PatchError(f"testing value {path} failed: test failed", code=422)
        elif op in ("move", "copy"):
            source = raw.get("from")
            if not isinstance(source, str):
                raise PatchError(f"the {op} operation on {path} has no 'from'", code=400)
            if op == "move":
                doc, value = _remove(doc, source, op="move")
            else:
                value = copy.deepcopy(_get(doc, source, op="copy"))
            doc = _add(doc, path, value)
        else:
            raise PatchError(f"Unexpected kind: {op!r} is not a JSON patch operation", code=400)
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
