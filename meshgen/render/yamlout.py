"""Rendered objects to YAML text: block style, keys in insertion order, safe quoting.

Manifests are built as data and serialised here, never by filling a text template, so no
blueprint value can change a document's structure. A string is written plain only when
it is made of characters that cannot start a YAML construct and no YAML 1.1 or 1.2
resolver reads it as anything but that string (`yes`, `on`, `~`, `0x1F`, `1e3`, dates);
everything else is double-quoted with JSON escapes, which YAML reads back identically.
The property tests in tests/test_yamlout.py check this against two independent parsers.

Why not a YAML library's dumper: at 10,000 services (~50,000 documents) PyYAML's C
dumper alone costs several seconds; this emitter is ~10x faster (see BENCHMARKS.md).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

_PLAIN = re.compile(r"[A-Za-z0-9_./][A-Za-z0-9_./@=+,()\[\]-]*(?: [A-Za-z0-9_./@=+,()\[\]-]+)*\Z")
# Words YAML 1.1 (Kubernetes' sigs.k8s.io/yaml, PyYAML) or 1.2 read as bool or null.
_RESERVED = frozenset(
    [
        "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO",
        "true", "True", "TRUE", "false", "False", "FALSE",
        "on", "On", "ON", "off", "Off", "OFF", "null", "Null", "NULL",
    ]
)
_NUMBERISH = re.compile(
    r"[-+]?(?:0[xX][0-9a-fA-F_]+|0[oO]?[0-7_]+|0[bB][01_]+|[0-9][0-9_]*(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)?"
    r"|\.[0-9_]+(?:[eE][-+]?[0-9]+)?|\.(?:inf|Inf|INF|nan|NaN|NAN))\Z"
)
_DATEISH = re.compile(r"[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}")
# Characters YAML does not allow raw in a double-quoted scalar, or reads as line breaks.
_UNSAFE_IN_QUOTES = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ufeff\ud800-\udfff\ufffe\uffff]")
_BLOCK_SAFE = re.compile("[^\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\ufeff\ud800-\udfff\ufffe\uffff]*\\Z")


def dump(doc: Any) -> str:
    """One YAML document (no `---`), ending in a newline."""
    out: list[str] = []
    if isinstance(doc, dict) and doc:
        _mapping(doc, 0, out)
    elif isinstance(doc, list) and doc:
        _sequence(doc, 0, out)
    else:
        out.append(scalar(doc) + "\n")
    return "".join(out)


def dump_all(docs: list[Any]) -> str:
    return "---\n".join(dump(d) for d in docs)


def scalar(value: Any) -> str:
    """A value as a one-line YAML scalar."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        text = repr(value)
        return text if ("." in text or "e" in text or "n" in text) else text + ".0"
    if isinstance(value, str):
        return _string(value)
    raise TypeError(f"cannot write {type(value).__name__} as YAML; renderers produce plain data")


_MEMO: dict[str, str] = {}
_MEMO_LIMIT = 200_000  # keys and most values repeat across a fleet; bound the memory anyway


def _string(text: str) -> str:
    cached = _MEMO.get(text)
    if cached is not None:
        return cached
    out = _quote(text)
    if len(_MEMO) < _MEMO_LIMIT:
        _MEMO[text] = out
    return out


def _quote(text: str) -> str:
    if _PLAIN.match(text) and text not in _RESERVED and not _NUMBERISH.match(text) and not _DATEISH.match(text):
        return text
    quoted = json.dumps(text, ensure_ascii=False)
    if _UNSAFE_IN_QUOTES.search(quoted):
        quoted = _UNSAFE_IN_QUOTES.sub(lambda m: f"\\u{ord(m.group()):04x}", quoted)
    return quoted


def _key(key: Any) -> str:
    if type(key) is not str:
        key = str(key)  # Kubernetes maps have string keys (e.g. portLevelMtls "8080")
    return _string(key)


def _is_block_text(value: Any) -> bool:
    return (
        isinstance(value, str)
        and "\n" in value
        and not value.startswith((" ", "\n"))
        and not value.endswith("\n\n")
        and "\r" not in value
        and _BLOCK_SAFE.match(value) is not None
    )


def _block_text(value: str, indent: int) -> str:
    chomp = "" if value.endswith("\n") else "-"
    pad = " " * indent
    body = value.removesuffix("\n")
    lines = "\n".join((pad + line) if line else "" for line in body.split("\n"))
    return f"|{chomp}\n{lines}\n"


def _mapping(doc: dict[Any, Any], indent: int, out: list[str], first_prefix: str | None = None) -> None:
    # The hot loop of every render: exact type checks and the string memo first.
    pad = " " * indent
    prefix = pad if first_prefix is None else first_prefix
    memo = _MEMO
    for key, value in doc.items():
        k = memo.get(key) if type(key) is str else None
        head = f"{prefix}{k if k is not None else _key(key)}:"
        prefix = pad
        kind = type(value)
        if kind is str:
            if "\n" in value and _is_block_text(value):
                out.append(head + " " + _block_text(value, indent + 2))
            else:
                v = memo.get(value)
                out.append(f"{head} {v if v is not None else _string(value)}\n")
        elif kind is dict and value:
            out.append(head + "\n")
            _mapping(value, indent + 2, out)
        elif kind is list and value:
            out.append(head + "\n")
            _sequence(value, indent, out)
        else:
            out.append(f"{head} {_flow_empty(value)}\n")


def _sequence(items: list[Any], indent: int, out: list[str]) -> None:
    pad = " " * indent
    dash = pad + "- "
    for item in items:
        kind = type(item)
        if kind is dict and item:
            _mapping(item, indent + 2, out, first_prefix=dash)
        elif kind is str:
            if "\n" in item and _is_block_text(item):
                out.append(dash + _block_text(item, indent + 2))
            else:
                out.append(f"{dash}{_string(item)}\n")
        elif kind is list and item:
            out.append(pad + "-\n")
            _sequence(item, indent + 2, out)
        elif _is_block_text(item):
            out.append(dash + _block_text(item, indent + 2))
        else:
            out.append(f"{dash}{_flow_empty(item)}\n")


def _flow_empty(value: Any) -> str:
    if type(value) is str:  # the common case first
        return _string(value)
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return scalar(value)
