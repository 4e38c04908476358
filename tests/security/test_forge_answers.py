"""10. A forge that redirects to another origin: a forge error (exit 3, job failed), and the
request is never sent there. Real HTTP servers on loopback, a real sync into a local repository."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sync_support import REDIS_DB_URL, blueprint, redis_namespace

from meshgen.forges.base import ForgeError
from meshgen.gitops.sync import sync_repository
from meshgen.settings import Settings


class _Server:
    """A loopback HTTP server counting the requests that reach it (handlers bump `hits`)."""

    def __init__(self, answer: type[BaseHTTPRequestHandler]) -> None:
        self.hits = 0

        class Handler(answer):  # type: ignore[valid-type,misc]
            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.outer = self  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _Elsewhere(BaseHTTPRequestHandler):
    """Another origin: answers anything with a body no GitHub client expects."""

    def _any(self) -> None:
        self.server.outer.hits += 1  # type: ignore[attr-defined]
        body = b'[{"head": 1, "number": "x"}]'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PATCH = _any


@pytest.fixture
def elsewhere() -> Iterator[_Server]:
    server = _Server(_Elsewhere)
    yield server
    server.stop()


@pytest.fixture
def redirector(elsewhere: _Server) -> Iterator[_Server]:
    target = elsewhere.url

    class Redirect(BaseHTTPRequestHandler):
        def _any(self) -> None:
            self.server.outer.hits += 1  # type: ignore[attr-defined]
            self.send_response(307)
            self.send_header("Location", target + self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST = do_PATCH = _any

    server = _Server(Redirect)
    yield server
    server.stop()


def _root(tmp_path: Path, forge_url: str) -> Path:
    root = tmp_path / "bp"
    (root / "blueprints").mkdir(parents=True)
    (root / "blueprints/cart.yaml").write_text(blueprint("cart"))
    (root / "meshgen.yaml").write_text(
        "environments:\n  production: {mesh: istio}\n"
        f"envRepo: {{url: {tmp_path / 'env.git'}, forge: {{kind: github, baseUrl: '{forge_url}', owner: acme, "
        "repo: env}}\n")
    return root


def test_a_redirect_to_another_origin_fails_the_job_as_a_forge_error(
        tmp_path: Path, redirector: _Server, elsewhere: _Server, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _root(tmp_path, redirector.url)
    monkeypatch.setenv("MESHGEN_FORGE_TOKEN", "ghp_not-for-elsewhere")
    with redis_namespace("forge-redirect") as ns:
        settings = Settings(root=root, redis_url=REDIS_DB_URL, redis_prefix=ns.prefix)
        with pytest.raises(ForgeError, match="redirected the request to another origin"):
            sync_repository(root, settings, records=ns.records, trigger="test")
        (job,) = ns.records.recent_jobs()
        assert job.state == "failed" and job.finished_at is not None
        assert any("redirected the request to another origin" in e for e in job.errors), job.errors
    assert redirector.hits >= 1 and elsewhere.hits == 0  # refused before anything was sent there

    env = {**os.environ, "MESHGEN_FORGE_TOKEN": "ghp_not-for-elsewhere", "MESHGEN_REDIS_URL": "redis://127.0.0.1:1/0"}
    run = subprocess.run([sys.executable, "-m", "meshgen", "sync", str(root), "--no-records"], capture_output=True,
                         text=True, env=env, timeout=120)
    assert run.returncode == 3, run.stderr
    assert "Traceback" not in run.stderr and "another origin" in run.stderr
    assert "ghp_not-for-elsewhere" not in run.stderr
    assert elsewhere.hits == 0


class _ArgoAnswers(BaseHTTPRequestHandler):
    """An "Argo CD" whose answers are not Applications, and one path that redirects elsewhere."""

    answers: dict[str, bytes] = {
        "/api/v1/applications": b"[1, 2, 3]",
        "/api/v1/applications/list-shaped": b'["not", "an", "application"]',
        "/api/v1/applications/not-json": b"<html>login</html>",
    }

    def do_GET(self) -> None:
        self.server.outer.hits += 1  # type: ignore[attr-defined]
        path = self.path.split("?")[0]
        if path.endswith("/redirect"):
            self.send_response(307)
            self.send_header("Location", "http://127.0.0.1:9/api/v1/applications/x")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = self.answers.get(path, b"{}")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_argocd_answers_of_another_shape_are_argocd_errors() -> None:
    from meshgen.argocd.source import ArgoCDError, RestSource

    server = _Server(_ArgoAnswers)
    source = RestSource(server.url, token="argo-token")
    try:
        with pytest.raises(ArgoCDError, match="not an Application list or object"):
            source.list()
        for name in ("list-shaped", "not-json"):
            with pytest.raises(ArgoCDError, match="not an Application list or object"):
                source.get(name)
        with pytest.raises(ArgoCDError, match="307"):
            source.get("redirect")  # not followed: answered as the error it is
    finally:
        source.close()
        server.stop()
