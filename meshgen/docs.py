"""Documentation generated from the code: the table of process settings (`MESHGEN_*`).

    python -m meshgen.docs            rewrite the table in README.md in place
    python -m meshgen.docs --check    exit 1 when README.md is out of date (what the test checks)
    python -m meshgen.docs --print    print the table

The table sits in README.md between the lines `<!-- settings-table -->` and
`<!-- /settings-table -->`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from meshgen.settings import _SECRET_FIELDS, Settings, webhook_kinds

BEGIN = "<!-- settings-table -->"
END = "<!-- /settings-table -->"
README = Path(__file__).resolve().parents[1] / "README.md"
UPDATE_COMMAND = "python -m meshgen.docs"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _default(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, SecretStr):
        return "(secret)"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    text = str(value)
    return f"`{text}`" if text else '`""`'


def settings_table_markdown() -> str:
    """One row per Settings field: name, environment variable(s), default, description."""
    prefix = Settings.model_config.get("env_prefix", "")
    rows = ["| setting | environment variable | default | meaning |", "|---|---|---|---|"]
    for name, info in Settings.model_fields.items():
        if name == "webhook_secrets":  # one row per registered forge with webhooks
            rows.extend(_webhook_secret_rows(prefix))
            continue
        env = f"`{prefix}{name.upper()}`"
        if name in _SECRET_FIELDS:
            env += f" or `{prefix}{name.upper()}_FILE`"
        default = info.get_default(call_default_factory=True)
        rows.append(f"| `{name}` | {env} | {_cell(_default(default))} | {_cell(info.description or '')} |")
    return "\n".join(rows) + "\n"


def _webhook_secret_rows(prefix: str) -> list[str]:
    from meshgen.forges.registry import FORGES

    rows = []
    for kind in webhook_kinds():
        hook = FORGES[kind].webhook
        name = f"webhook_secret_{kind}"
        env = f"`{prefix}{name.upper()}` or `{prefix}{name.upper()}_FILE`"
        rows.append(f"| `{name}` | {env} | — | {_cell(hook.secret_help if hook else '')} |")
    return rows


def replace_section(text: str, table: str) -> str:
    """TEXT with the part between the markers replaced by TABLE. ValueError without the markers."""
    start = text.find(BEGIN)
    end = text.find(END, start + len(BEGIN)) if start >= 0 else -1
    if start < 0 or end < 0:
        raise ValueError(f"README.md has no {BEGIN} ... {END} section")
    return text[: start + len(BEGIN)] + "\n" + table + text[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m meshgen.docs", description=__doc__.splitlines()[0])
    parser.add_argument("--readme", type=Path, default=README)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 if the README section is out of date")
    mode.add_argument("--print", action="store_true", help="print the table")
    args = parser.parse_args(argv)
    table = settings_table_markdown()
    if args.print:
        sys.stdout.write(table)
        return 0
    text = args.readme.read_text()
    try:
        updated = replace_section(text, table)
    except ValueError as exc:
        print(f"meshgen.docs: {exc}", file=sys.stderr)
        return 1
    if updated == text:
        return 0
    if args.check:
        print(f"meshgen.docs: the settings table in {args.readme} is out of date; run: {UPDATE_COMMAND}",
              file=sys.stderr)
        return 1
    args.readme.write_text(updated)
    print(f"meshgen.docs: updated the settings table in {args.readme}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
