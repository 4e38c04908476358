"""Errors and warnings about blueprints, in the one format users see everywhere.

    blueprints/payments/api.yaml:12:7: routes[1].retries.attempts: expected a whole number >= 0, got ...

file:line:col, the field path, what is wrong and what would be valid.
"""

from __future__ import annotations

from collections.abc import Iterable
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
        return f"{self.file}:{self.line}:{self.column}: {label}{code}{where}{self.message}"


def format_path(path: Iterable[str | int]) -> str:
    """('routes', 1, 'retries') -> 'routes[1].retries'."""
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
