"""Errors and warnings about blueprints, in the one format users see everywhere.

    blueprints/payments/api.yaml:12:7: routes[1].retries.attempts: expected a whole number >= 0, got ...

file:line:col, the field path, what is wrong and what would be valid.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache, partial
from typing import Literal, NamedTuple

Severity = Literal["error", "warning"]


class Diagnostic(NamedTuple):
    """One finding. A tuple: a large fleet on a partly expressible mesh can carry tens of
    thousands of warnings, sorted, de-duplicated, cached and sent between processes."""

    file: str
    line: int
    column: int
    path: str
    message: str
    severity: Severity = "error"
    code: str = ""  # e.g. IST0130 for checks that mirror `istioctl analyze`

    def __str__(self) -> str:
        code = f"[{self.code}] " if self.code else ""
        where = f"{self.path}: " if self.path else ""
        label = "" if self.severity == "error" else "warning: "
        # One finding, one line: a file name or value holding a newline must not forge another.
        return escape_line(f"{self.file}:{self.line}:{self.column}: {label}{code}{where}{self.message}")


# C0 and C1 controls, DEL and the Unicode line/paragraph separators: anything a terminal or a
# line-oriented reader (CI annotations, grep) could take as the end of a line or a command.
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))}
_CONTROLS.update({0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t", 0x2028: "\\u2028", 0x2029: "\\u2029"})


def escape_line(text: str) -> str:
    """TEXT with every control character written as an escape (\\n, \\x1b, ...): one line, inert."""
    return text.translate(_CONTROLS)


DiagnosticRow = tuple[str, int, int, str, str, str, str]
"""A Diagnostic as a plain tuple: what crosses process boundaries and sits in the render
cache. Plain tuples pickle and unpickle in C; a NamedTuple costs a Python call each way,
which shows at the tens of thousands of warnings a large fleet can carry."""

_from_row = partial(tuple.__new__, Diagnostic)  # what Diagnostic._make does, minus the Python call


def to_rows(diagnostics: Iterable[Diagnostic]) -> tuple[DiagnosticRow, ...]:
    return tuple(map(tuple, diagnostics))  # type: ignore[arg-type]


def from_rows(rows: Iterable[DiagnosticRow]) -> list[Diagnostic]:
    return list(map(_from_row, rows))


def format_path(path: Iterable[str | int]) -> str:
    """('routes', 1, 'retries') -> 'routes[1].retries'."""
    if type(path) is tuple:
        return _format_tuple(path)
    return _format(path)


@lru_cache(maxsize=4096)
def _format_tuple(path: tuple[str | int, ...]) -> str:
    # Feature paths repeat across a fleet: one warning per feature and service.
    return _format(path)


def _format(path: Iterable[str | int]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


class BlueprintError(Exception):
    """Raised when a run found errors; carries all of them (and any warnings)."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = sorted(set(diagnostics))
        errors = [d for d in self.diagnostics if d.severity == "error"]
        super().__init__(f"{len(errors)} error(s) in blueprints")
