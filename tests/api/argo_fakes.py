"""Local stand-ins for Argo CD (REST API) and the Kubernetes API, on real loopback HTTP.

Every Application they serve is first validated against `v1alpha1Application` of Argo CD's own
swagger document (shared/reference/api/argocd-swagger.json), so the payloads are ones a real
Argo CD could send.
"""

from __future__ import annotations

import copy
import json
import ssl
import threading
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import jsonschema

SWAGGER = Path("/work/shared/reference/api/argocd-swagger.json")
if not SWAGGER.exists():  # the reference data lives beside the repository
    SWAGGER = Path(__file__).resolve().parents[3] / "shared" / "reference" / "api" / "argocd-swagger.json"


@lru_cache(maxsize=1)
def _validator() -> jsonschema.protocols.Validator:
    doc = json.loads(SWAGGER.read_text())
    schema = {"definitions": doc["definitions"], "$ref": "#/definitions/v1alpha1Application"}
    cls = jsonschema.validators.validator_for({"$schema": "http://json-schema.org/draft-04/schema#"})
    return cls(schema, format_checker=cls.FORMAT_CHECKER)  # $refs resolve inside `definitions`


def validate_application(app: dict[str, Any]) -> None:
    _validator().validate(app)


def application(name: str, *, revision: str | None = None, revisions: list[str] | None = None,
                sync: str = "Synced", health: str = "Healthy", health_message: str | None = None,
                reconciled_at: str = "2026-01-01T10:05:00Z", finished_at: str | None = "2026-01-01T10:00:00Z",
                phase: str | None = "Succeeded", message: str | None = None, conditions: list[dict[str, str]] | None = None,
                labels: dict[str, str] | None = None, repo_url: str = "https://git.example.com/env.git",
                sources: list[str] | None = None, operation: bool = False, applied: str | None = None) -> dict[str, Any]:
    """An Application as Argo CD serves it (the fields meshgen reads, plus some it ignores)."""
    spec: dict[str, Any] = {"project": "default",
                            "destination": {"server": "https://kubernetes.default.svc", "namespace": "payments"}}
    if sources is not None:
        spec["sources"] = [{"repoURL": url, "path": "staging", "targetRevision": "main"} for url in sources]
    else:
        spec["source"] = {"repoURL": repo_url, "path": "staging/payments/api", "targetRevision": "main"}
    sync_status: dict[str, Any] = {"status": sync}
    if revisions is not None:
        sync_status["revisions"] = revisions
    elif revision is not None:
        sync_status["revision"] = revision
    status: dict[str, Any] = {
        "sync": sync_status,
        "health": {"status": health, **({"message": health_message} if health_message else {})},
        "reconciledAt": reconciled_at,
        "resources": [{"kind": "VirtualService", "name": "api", "namespace": "payments", "status": sync,
                       "version": "v1", "group": "networking.istio.io"}],
        "history": [{"id": 1, "revision": revision or "", "deployedAt": "2026-01-01T09:00:00Z"}],
    }
    if phase is not None:
        op: dict[str, Any] = {"phase": phase, "startedAt": "2026-01-01T09:59:00Z",
                              "operation": {"sync": {"revision": applied or revision or ""}}}
        if finished_at is not None:
            op["finishedAt"] = finished_at
        if message:
            op["message"] = message
        if applied or revision:
            op["syncResult"] = {"revision": applied or revision or ""}
        status["operationState"] = op
    if conditions:
        status["conditions"] = [{**c, "lastTransitionTime": "2026-01-01T10:00:00Z"} for c in conditions]
    app: dict[str, Any] = {
        "metadata": {"name": name, "namespace": "argocd", "labels": labels or {}, "uid": f"uid-{name}",
                     "resourceVersion": "1", "creationTimestamp": "2026-01-01T08:00:00Z"},
        "spec": spec,
        "status": status,
    }
    if operation:
        app["operation"] = {"sync": {"revision": revision or ""}, "initiatedBy": {"username": "admin"}}
    validate_application(app)
    return app


def _label_match(selector: str, labels: dict[str, str]) -> bool:
    # What the fakes support of label selectors: equality terms (the server side of meshgen's selector).
    for term in filter(None, (t.strip() for t in selector.split(","))):
        key, _, value = term.partition("=")
        if labels.get(key.strip()) != value.strip().lstrip("="):
            return False
    return True


class _Fake:
    def __init__(self) -> None:
        self.apps: dict[str, dict[str, Any]] = {}
        self.requests: list[str] = []
        self.fail_with: int | None = None
        self._lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    def put(self, app: dict[str, Any]) -> None:
        validate_application(app)
        with self._lock:
            self.apps[app["metadata"]["name"]] = copy.deepcopy(app)

    def remove(self, name: str) -> None:
        with self._lock:
            self.apps.pop(name, None)

    def clear(self) -> None:
        with self._lock:
            self.apps.clear()
            self.requests.clear()
            self.fail_with = None

    def listing(self, selector: str | None) -> list[dict[str, Any]]:
        with self._lock:
            apps = [copy.deepcopy(a) for _, a in sorted(self.apps.items())]
        return [a for a in apps if not selector or _label_match(selector, a["metadata"].get("labels") or {})]

    def one(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            app = self.apps.get(name)
            return copy.deepcopy(app) if app else None

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.server_address[1]
        scheme = "https" if isinstance(self.server.socket, ssl.SSLSocket) else "http"
        return f"{scheme}://127.0.0.1:{port}"

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def _serve(fake: _Fake, handler: type[BaseHTTPRequestHandler], tls: ssl.SSLContext | None) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    fake.server = server
    threading.Thread(target=server.serve_forever, daemon=True).start()


def _send(h: BaseHTTPRequestHandler, status: int, body: Any) -> None:
    data = json.dumps(body).encode()
    h.send_response(status)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(data)))
    h.end_headers()
    h.wfile.write(data)


class ArgoCDServer(_Fake):
    """GET /api/v1/applications[?selector=] and /api/v1/applications/{name}, bearer token required."""

    def __init__(self, token: str, tls: ssl.SSLContext | None = None) -> None:
        super().__init__()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                url = urlparse(self.path)
                fake.requests.append(self.path)
                if self.headers.get("Authorization") != f"Bearer {token}":
                    return _send(self, 401, {"error": "invalid session", "code": 16, "message": "invalid session"})
                if fake.fail_with:
                    return _send(self, fake.fail_with, {"error": "boom", "code": 13, "message": "boom"})
                if url.path == "/api/v1/applications":
                    selector = parse_qs(url.query).get("selector", [None])[0]
                    return _send(self, 200, {"metadata": {"resourceVersion": "1"}, "items": fake.listing(selector)})
                if url.path.startswith("/api/v1/applications/"):
                    app = fake.one(unquote(url.path.rsplit("/", 1)[1]))
                    if app is None:  # what Argo CD answers for an application that does not exist
                        return _send(self, 403, {"error": "permission denied", "code": 7,
                                                 "message": "permission denied"})
                    return _send(self, 200, app)
                return _send(self, 404, {"error": "Not Found", "code": 5, "message": "Not Found"})

        _serve(self, Handler, tls)


class KubernetesServer(_Fake):
    """The Application custom-resource paths of the Kubernetes API."""

    def __init__(self, token: str, namespace: str = "argocd") -> None:
        super().__init__()
        fake = self
        base = f"/apis/argoproj.io/v1alpha1/namespaces/{namespace}/applications"

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                url = urlparse(self.path)
                fake.requests.append(self.path)
                if self.headers.get("Authorization") != f"Bearer {token}":
                    return _send(self, 401, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                             "reason": "Unauthorized", "code": 401})
                if url.path == base:
                    selector = parse_qs(url.query).get("labelSelector", [None])[0]
                    items = [{"apiVersion": "argoproj.io/v1alpha1", "kind": "Application", **a}
                             for a in fake.listing(selector)]
                    return _send(self, 200, {"apiVersion": "argoproj.io/v1alpha1", "kind": "ApplicationList",
                                             "metadata": {"resourceVersion": "7"}, "items": items})
                if url.path.startswith(base + "/"):
                    name = unquote(url.path[len(base) + 1:])
                    app = fake.one(name)
                    if app is None:
                        return _send(self, 404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                                 "reason": "NotFound", "code": 404,
                                                 "message": f'applications.argoproj.io "{name}" not found'})
                    return _send(self, 200, {"apiVersion": "argoproj.io/v1alpha1", "kind": "Application", **app})
                return _send(self, 404, {"kind": "Status", "code": 404, "reason": "NotFound"})

        _serve(self, Handler, None)

    def kubeconfig(self, path: Path, token: str) -> Path:
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "local", "cluster": {"server": self.url}}],
            "users": [{"name": "meshgen", "user": {"token": token}}],
            "contexts": [{"name": "test", "context": {"cluster": "local", "user": "meshgen", "namespace": "argocd"}}],
        }))
        return path
