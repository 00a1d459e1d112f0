"""Label and field selectors, as the `labelSelector` and `fieldSelector` query parameters take them.

Label selectors follow apimachinery's grammar: comma-separated requirements (all must hold),
each `key`, `!key`, `key=value`, `key==value`, `key!=value`, `key in (a,b)`, `key notin (a,b)`,
`key > 5`, `key < 5`. `!=` and `notin` also match objects without the label, as on a real server.

Field selectors: comma-separated `path=value`, `path==value`, `path!=value`, with `\\,`, `\\=`
and `\\\\` escapes. Simplified: a real server only accepts the few fields each kind indexes
(`metadata.name`, `metadata.namespace`, `spec.nodeName`, `status.phase`...); here any dotted path
into the object works, a missing field compares as the empty string and booleans as
`true`/`false`, as Go prints them.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "FieldSelector",
    "LabelSelector",
    "SelectorError",
    "parse_field_selector",
    "parse_label_selector",
]


class SelectorError(ValueError):
    """The selector string does not parse; the message says where."""


# ---- label selectors ---------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Requirement:
    key: str
    op: str  # exists, !exists, =, !=, in, notin, gt, lt
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        if self.op in ("!=", "notin"):
            return not present or value not in self.values
        if not present or value is None:
            return False
        try:
            number = int(value)
        except ValueError:
            return False
        bound = int(self.values[0])
        return number > bound if self.op == "gt" else number < bound


@dataclasses.dataclass(frozen=True)
class LabelSelector:
    """A parsed label selector; the empty selector matches everything."""

    requirements: tuple[_Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)


_TOKEN = re.compile(r"\s*(==|!=|=|!|\(|\)|,|>|<|[^\s!=<>(),]+)")
_KEY = re.compile(r"^([a-z0-9A-Z]([-a-z0-9A-Z.]*[a-z0-9A-Z])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_OPERATORS = {"==", "!=", "=", "!", "(", ")", ",", ">", "<"}


def _tokens(text: str) -> list[str]:
    out: list[str] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None:  # pragma: no cover - the pattern matches any non-space character
            raise SelectorError(f"unable to parse requirement: unexpected {text[pos:]!r}")
        out.append(m.group(1))
        pos = m.end()
    return out


class _LabelParser:
    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> str | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, expected: str) -> str:
        tok = self.peek()
        if tok is None:
            raise SelectorError(f"unable to parse requirement: found '', expected: {expected}")
        self.i += 1
        return tok

    def ident(self, what: str) -> str:
        tok = self.take(what)
        if tok in _OPERATORS:
            raise SelectorError(f"unable to parse requirement: found '{tok}', expected: {what}")
        return tok

    def key(self) -> str:
        key = self.ident("identifier")
        if not _KEY.match(key) or len(key.rsplit("/", 1)[-1]) > 63:
            raise SelectorError(
                f'unable to parse requirement: invalid label key "{key}": a qualified name must '
                "consist of alphanumeric characters, '-', '_' or '.', and must start and end "
                "with an alphanumeric character"
            )
        return key

    def value(self) -> str:
        tok = self.peek()
        if tok is None or tok == ",":
            return ""  # `key=` selects the empty value
        value = self.ident("identifier")
        if not _VALUE.match(value) or len(value) > 63:
            raise SelectorError(
                f'unable to parse requirement: invalid label value: "{value}": a valid label '
                "must be an empty string or consist of alphanumeric characters, '-', '_' or "
                "'.', and must start and end with an alphanumeric character"
            )
        return value

    def requirement(self) -> _Requirement:
        if self.peek() == "!":
            self.i += 1
            return _Requirement(self.key(), "!exists")
        key = self.key()
        op = self.peek()
        if op is None or op == ",":
            return _Requirement(key, "exists")
        self.i += 1
        if op in ("=", "=="):
            return _Requirement(key, "=", (self.value(),))
        if op == "!=":
            return _Requirement(key, "!=", (self.value(),))
        if op in ("in", "notin"):
            return _Requirement(key, op, self.value_set())
        if op in (">", "<"):
            bound = self.ident("integer")
            if not re.fullmatch(r"-?\d+", bound):
                raise SelectorError(
                    f"unable to parse requirement: for 'gt', 'lt' operators, the value must be "
                    f"an integer, got '{bound}'"
                )
            return _Requirement(key, "gt" if op == ">" else "lt", (bound,))
        raise SelectorError(
            f"unable to parse requirement: found '{op}', expected: in, notin, =, ==, !=, gt, lt"
        )

    def value_set(self) -> tuple[str, ...]:
        if self.take("'('") != "(":
            raise SelectorError(
                f"unable to parse requirement: found '{self.toks[self.i - 1]}', expected: '('"
            )
        values: list[str] = []
        while True:
            if self.peek() == ")":
                self.i += 1
                break
            values.append(self.value())
            sep = self.take("',' or ')'")
            if sep == ")":
                break
            if sep != ",":
                raise SelectorError(f"unable to parse requirement: found '{sep}', expected: ',' or ')'")
        if not values:
            raise SelectorError(
                "unable to parse requirement: for 'in', 'notin' operators, values set can't be empty"
            )
        return tuple(values)

    def parse(self) -> LabelSelector:
        reqs: list[_Requirement] = []
        while self.peek() is not None:
            reqs.append(self.requirement())
            tok = self.peek()
            if tok is None:
                break
            if tok != ",":
                raise SelectorError(
                    f"unable to parse requirement: found '{tok}', expected: ',' or 'end of string'"
                )
            self.i += 1
            if self.peek() is None:
                raise SelectorError("unable to parse requirement: found '', expected: identifier")
        return LabelSelector(tuple(reqs))


def parse_label_selector(text: str | None) -> LabelSelector:
    """Parse a `labelSelector`; None or blank selects everything. Raises SelectorError."""
    if text is None or not text.strip():
        return LabelSelector()
    return _LabelParser(text).parse()


# ---- field selectors ---------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class FieldSelector:
    """A parsed field selector: (path, op, value) terms that must all hold."""

    terms: tuple[tuple[str, str, str], ...] = ()

    def matches(self, obj: Mapping[str, Any]) -> bool:
        for path, op, value in self.terms:
            actual = _field_value(obj, path)
            if (actual == value) != (op == "="):
                return False
        return True


def _field_value(obj: Mapping[str, Any], path: str) -> str:
    node: Any = obj
    for part in path.split("."):
        if not isinstance(node, Mapping):
            return ""
        node = node.get(part)
    if node is None:
        return ""
    if isinstance(node, bool):
        return "true" if node else "false"
    if isinstance(node, (str, int, float)):
        return str(node)
    return ""


def _split_unescaped(text: str, sep: str) -> list[str]:
    parts: list[str] = []
    cur: list[str] = []
    escaped = False
    for ch in text:
        if escaped:
            cur.append("\\" + ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == sep:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if escaped:
        cur.append("\\")
    parts.append("".join(cur))
    return parts


def _unescape(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in "\\,=":
            out.append(text[i + 1])
            i += 2
            continue
        if text[i] == "\\":
            raise SelectorError(f"invalid field selector value {text!r}: unescaped backslash")
        out.append(text[i])
        i += 1
    return "".join(out)


def _find_operator(term: str) -> tuple[int, str] | None:
    i = 0
    while i < len(term):
        if term[i] == "\\":
            i += 2
            continue
        for op in ("!=", "==", "="):
            if term.startswith(op, i):
                return i, op
        i += 1
    return None


def parse_field_selector(text: str | None) -> FieldSelector:
    """Parse a `fieldSelector`; None or blank selects everything. Raises SelectorError."""
    if text is None or not text.strip():
        return FieldSelector()
    terms: list[tuple[str, str, str]] = []
    for raw in _split_unescaped(text, ","):
        found = _find_operator(raw)
        if found is None or found[0] == 0:
            raise SelectorError(f"invalid selector: '{text}'; can't understand '{raw}'")
        pos, op = found
        path = raw[:pos].strip()
        if not re.fullmatch(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*", path):
            raise SelectorError(f"invalid selector: '{text}'; {path!r} is not a field path")
        terms.append((path, "!=" if op == "!=" else "=", _unescape(raw[pos + len(op) :])))
    return FieldSelector(tuple(terms))
