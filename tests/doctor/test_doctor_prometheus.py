"""`meshgen doctor`'s Prometheus lines against a real Prometheus (Debian's package, started by
tests/promsupport.py): one line per environment, the environment's own `prometheus` or the
top-level one, the bearer token from tokenEnv or tokenFile sent (checked by a loopback proxy that
requires it, as an OAuth/kube-rbac proxy in front of Prometheus does) and never printed."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from promsupport import PrometheusServer
from click.testing import CliRunner
from helpers import free_port

from meshgen.cli import main

TOKEN = "mgtok_doctor_prom_7c1a9e3b5d2f4a6c8e0b1d3f5a7c9e2b"
WRONG = "mgtok_doctor_prom_wrong_0000000000000000000000000"


class TokenProxy:
    """Forwards GETs to Prometheus when they carry `Authorization: Bearer TOKEN`; 401 otherwise."""

    def __init__(self, upstream: str) -> None:
        seen: list[str | None] = []
        self.seen = seen

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                auth = self.headers.get("Authorization")
                seen.append(auth)
                if auth != f"Bearer {TOKEN}":
                    status, body, kind = 401, b"Unauthorized\n", "text/plain"
                else:
                    answer = httpx.get(upstream + self.path, timeout=10)
                    status, body, kind = answer.status_code, answer.content, answer.headers["content-type"]
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(prom: PrometheusServer) -> Iterator[TokenProxy]:
    made = TokenProxy(prom.url)
    yield made
    made.stop()


def _doctor(root: Path, config: dict[str, Any], tmp_path: Path, **env: str | None) -> tuple[int, list[str]]:
    (root / "meshgen.yaml").write_text(json.dumps(config))
    result = CliRunner().invoke(main, ["doctor", str(root)], env={
        "MESHGEN_REDIS_URL": "redis://127.0.0.1:6379/13", "MESHGEN_STATE_DIR": str(tmp_path / "state"),
        "MESHGEN_BLUEPRINTS_URL": None, "MESHGEN_FORGE_TOKEN": None, **env})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert TOKEN not in result.output and WRONG not in result.output
    return result.exit_code, [line for line in result.output.splitlines() if line[2:].startswith("Prometheus")]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "root"
    folder.mkdir()
    return folder


def _config(**envs: Any) -> dict[str, Any]:
    return {"environments": envs, "envRepo": {"url": "env.git", "forge": {"kind": "local"}}}


def test_one_line_per_environment(root: Path, tmp_path: Path, prom: PrometheusServer,
                                  proxy: TokenProxy) -> None:
    (root / "prom-token").write_text(TOKEN + "\n")
    config = {**_config(staging={}, production={"prometheus": {"url": proxy.url, "tokenFile": "prom-token"}},
                        edge={"prometheus": {"url": proxy.url, "tokenEnv": "PROM_TOKEN"}}),
              "prometheus": {"url": prom.url}}
    code, lines = _doctor(root, config, tmp_path, PROM_TOKEN=TOKEN)
    assert len(lines) == 3, lines
    staging, production, edge = lines
    assert staging.startswith(f"✔ Prometheus (staging): {prom.url}: Prometheus ")
    assert "queries accepted (prometheus, no token)" in staging
    assert production.startswith(f"✔ Prometheus (production): {proxy.url}: Prometheus ")
    assert "(environments.production.prometheus, bearer token from prom-token)" in production
    assert edge.startswith("✔ Prometheus (edge):") and "bearer token from $PROM_TOKEN" in edge
    assert set(proxy.seen) == {f"Bearer {TOKEN}"}  # buildinfo and the query, for both environments
    assert len(proxy.seen) == 4 and code == 0


def test_token_problems_are_named_never_printed(root: Path, tmp_path: Path, proxy: TokenProxy) -> None:
    (root / "wrong-token").write_text(WRONG)
    config = _config(staging={"prometheus": {"url": proxy.url, "tokenFile": "wrong-token"}},
                     production={"prometheus": {"url": proxy.url, "tokenEnv": "PROM_TOKEN"}},
                     edge={"prometheus": {"url": proxy.url, "tokenFile": "missing-token"}},
                     lab={"prometheus": {"url": proxy.url}},
                     dev={})
    code, lines = _doctor(root, config, tmp_path, PROM_TOKEN=None)
    assert code == 1
    staging, production, edge, lab, dev = lines
    assert staging.startswith("✘ Prometheus (staging):") and "HTTP 401" in staging and "with the configured token" in staging
    assert production == ("✘ Prometheus (production): environments.production.prometheus: prometheus.tokenEnv names "
                          "PROM_TOKEN, which is not set or empty; export the token there or remove tokenEnv")
    assert edge.startswith("✘ Prometheus (edge): environments.edge.prometheus: prometheus.tokenFile ")
    assert "cannot be read (No such file or directory)" in edge
    assert lab.startswith("✘ Prometheus (lab):") and "without a token" in lab
    assert dev.startswith("– Prometheus (dev): neither environments.dev.prometheus nor a top-level prometheus")
    assert f"Bearer {WRONG}" in proxy.seen


def test_unreachable_and_not_configured(root: Path, tmp_path: Path) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    code, lines = _doctor(root, {**_config(staging={}), "prometheus": {"url": down}}, tmp_path)
    assert code == 1 and lines[0].startswith(f"✘ Prometheus (staging): {down} is unreachable")
    code, lines = _doctor(root, _config(staging={}, production={}), tmp_path)
    assert lines == ["– Prometheus: meshgen.yaml has no prometheus.url"]
