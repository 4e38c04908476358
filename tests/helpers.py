"""Small builders shared by tests: write a blueprints repository into a temp folder."""

from __future__ import annotations

import socket
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import yaml

DEFAULT_CONFIG = """\
environments:
  staging: {mesh: istio, path: staging}
  production: {mesh: istio, path: production}
teams:
  payments: {namespaces: [payments]}
  catalog: {namespaces: [catalog]}
"""


def write_repo(root: Path, blueprints: dict[str, str], config: str = DEFAULT_CONFIG) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "meshgen.yaml").write_text(textwrap.dedent(config))
    for rel, text in blueprints.items():
        path = root / "blueprints" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def read_docs(folder: Path) -> dict[str, dict]:
    return {p.relative_to(folder).as_posix(): yaml.safe_load(p.read_text()) for p in sorted(folder.rglob("*.yaml"))}


def free_port() -> int:
    """A TCP port nothing listens on at the moment (for a server a test starts)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], object], timeout: float, what: str, interval: float = 0.05,
             ignore: tuple[type[BaseException], ...] = ()) -> object:
    """Poll `check` until it returns something truthy; `ignore` lists errors that mean "not yet"."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except ignore:
            last = None
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")
