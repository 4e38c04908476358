"""Reading Argo CD Applications: through Argo CD's REST API or as Kubernetes custom resources.

Both sources answer the same two questions, `list(selector)` and `get(name)`, with plain
Application dicts (the JSON Argo CD and the Kubernetes API serve are the same object).
`Locator` decides which Application belongs to a unit: a name template or a label selector.
"""

from __future__ import annotations

import os
import re
import ssl
import string
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import httpx

from meshgen.blueprint.config import ArgoCDSettings
from meshgen.settings import Settings

_GROUP, _VERSION, _PLURAL = "argoproj.io", "v1alpha1", "applications"
_PLACEHOLDERS = frozenset({"env", "namespace", "service", "team"})


class ArgoCDError(RuntimeError):
    """Argo CD could not be read; the message says what to check."""


def _check_template(template: str, what: str) -> None:
    names = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    unknown = names - _PLACEHOLDERS
    if unknown or "" in names:
        raise ArgoCDError(
            f"argocd.{what} {template!r} uses {sorted(unknown or {'{}'})}; "
            f"the placeholders are {{{'}, {'.join(sorted(_PLACEHOLDERS))}}}"
        )


# ---- label selectors -------------------------------------------------------------------

_TERM = re.compile(
    r"\s*(?:(?P<neg>!)\s*(?P<absent>[^\s,!=()]+)"
    r"|(?P<key>[^\s,!=()]+)\s*(?:(?P<op>==|=|!=)\s*(?P<value>[^\s,()]*)"
    r"|\s+(?P<setop>in|notin)\s*\((?P<set>[^)]*)\))?)\s*(?:,|$)"
)


def parse_selector(selector: str) -> list[tuple[str, str, frozenset[str]]]:
    """Kubernetes label-selector syntax: k=v, k==v, k!=v, k in (a,b), k notin (a,b), k, !k."""
    terms: list[tuple[str, str, frozenset[str]]] = []
    pos, text = 0, selector.strip()
    while pos < len(text):
        m = _TERM.match(text, pos)
        if not m or m.end() == pos:
            raise ArgoCDError(f"label selector {selector!r}: cannot read it at {text[pos:]!r}")
        if m.group("absent"):
            terms.append((m.group("absent"), "!", frozenset()))
        elif m.group("op"):
            terms.append((m.group("key"), "!=" if m.group("op") == "!=" else "=", frozenset([m.group("value")])))
        elif m.group("setop"):
            values = frozenset(v.strip() for v in m.group("set").split(",") if v.strip())
            terms.append((m.group("key"), m.group("setop"), values))
        else:
            terms.append((m.group("key"), "exists", frozenset()))
        pos = m.end()
    return terms


def selector_matches(selector: str, labels: Mapping[str, str]) -> bool:
    for key, op, values in parse_selector(selector):
        value = labels.get(key)
        ok = {
            "=": value is not None and value in values,
            "!=": value is None or value not in values,
            "in": value is not None and value in values,
            "notin": value is None or value not in values,
            "exists": value is not None,
            "!": value is None,
        }[op]
        if not ok:
            return False
    return True


@dataclass(frozen=True)
class Locator:
    """Which Application shows a unit: `nameTemplate`, or `selector` when one is configured."""

    name_template: str = "{service}-{env}"
    selector: str | None = None

    @classmethod
    def from_config(cls, cfg: ArgoCDSettings) -> Locator:
        _check_template(cfg.name_template, "nameTemplate")
        if cfg.selector:
            _check_template(cfg.selector, "selector")
            parse_selector(cfg.selector.replace("{", "").replace("}", ""))  # fail early on bad syntax
        return cls(cfg.name_template, cfg.selector)

    @staticmethod
    def _values(env: str, namespace: str, service: str, team: str | None) -> dict[str, str]:
        return {"env": env, "namespace": namespace, "service": service, "team": team or ""}

    def name_for(self, env: str, namespace: str, service: str, team: str | None = None) -> str:
        return self.name_template.format(**self._values(env, namespace, service, team))

    def selector_for(self, env: str, namespace: str, service: str, team: str | None = None) -> str | None:
        return self.selector.format(**self._values(env, namespace, service, team)) if self.selector else None

    def server_selector(self) -> str | None:
        """The unit-independent terms of the selector: Argo CD filters on those, meshgen on the rest."""
        if not self.selector:
            return None
        static = [t.strip() for t in _split_terms(self.selector) if "{" not in t]
        return ",".join(static) or None


def _split_terms(selector: str) -> list[str]:
    terms, depth, cur = [], 0, ""
    for ch in selector:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            terms.append(cur)
            cur = ""
        else:
            cur += ch
    return [t for t in [*terms, cur] if t.strip()]


# ---- sources ---------------------------------------------------------------------------


class AppSource(Protocol):
    def list(self, selector: str | None = None) -> list[dict[str, Any]]: ...

    def get(self, name: str) -> dict[str, Any] | None: ...

    def close(self) -> None: ...


def _resolve(path: str, root: Path) -> Path:
    p = Path(path)
    return p if p.is_absolute() else root / p


def _token(cfg: ArgoCDSettings, settings: Settings) -> str | None:
    # tokenFile (explicit in meshgen.yaml) wins, then the variable tokenEnv names; the default
    # variable MESHGEN_ARGOCD_TOKEN is read through Settings so MESHGEN_ARGOCD_TOKEN_FILE works too.
    if cfg.token_file:
        return _resolve(cfg.token_file, settings.root).read_text().strip()
    if cfg.token_env == "MESHGEN_ARGOCD_TOKEN":
        return settings.argocd_token.get_secret_value() if settings.argocd_token else None
    return os.environ.get(cfg.token_env) or None


class RestSource:
    """Argo CD's REST API: GET /api/v1/applications[?selector=] and /api/v1/applications/{name}."""

    def __init__(self, url: str, *, token: str | None, ca_file: Path | None = None, timeout: float = 15.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        verify: Any = ssl.create_default_context(cafile=str(ca_file)) if ca_file else True
        self._client = httpx.Client(base_url=url.rstrip("/"), headers=headers, verify=verify, timeout=timeout,
                                    transport=transport)
        self._url = url

    def _get(self, path: str, params: dict[str, str] | None = None) -> httpx.Response:
        try:
            return self._client.get(path, params=params)
        except httpx.HTTPError as exc:
            raise ArgoCDError(f"Argo CD at {self._url} is unreachable ({exc.__class__.__name__}: {exc}); "
                              "check argocd.url and argocd.caFile") from exc

    def _fail(self, resp: httpx.Response) -> ArgoCDError:
        hint = {401: "the token is missing or expired; set MESHGEN_ARGOCD_TOKEN (or argocd.tokenEnv/tokenFile)",
                403: "the token's account lacks `applications, get` permission in Argo CD RBAC"}.get(
            resp.status_code, "see Argo CD's server log")
        return ArgoCDError(f"Argo CD answered {resp.status_code} for {resp.request.url.path}: {hint}")

    def list(self, selector: str | None = None) -> list[dict[str, Any]]:
        resp = self._get("/api/v1/applications", {"selector": selector} if selector else None)
        if resp.status_code != 200:
            raise self._fail(resp)
        items = self._json(resp).get("items") or []
        if not isinstance(items, list) or not all(isinstance(app, dict) for app in items):
            raise self._unexpected(resp)
        return items

    def get(self, name: str) -> dict[str, Any] | None:
        resp = self._get(f"/api/v1/applications/{quote(name, safe='')}")
        if resp.status_code == 404:
            return None
        if resp.status_code == 403 and "permission denied" in resp.text:
            return None  # Argo CD answers 403, not 404, for applications that do not exist
        if resp.status_code != 200:
            raise self._fail(resp)
        return self._json(resp)

    def _json(self, resp: httpx.Response) -> dict[str, Any]:
        """The answer as a JSON object; an Argo CD answer of another shape is an ArgoCDError."""
        try:
            data = resp.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise self._unexpected(resp)
        return data

    def _unexpected(self, resp: httpx.Response) -> ArgoCDError:
        return ArgoCDError(f"Argo CD answered {resp.request.url.path} with something that is not an Application "
                           f"list or object; check argocd.url ({self._url}) points at the Argo CD API server")

    def close(self) -> None:
        self._client.close()


class KubernetesSource:
    """Application custom resources through the Kubernetes API (in-cluster or a kubeconfig)."""

    def __init__(self, namespace: str, *, kubeconfig: Path | None = None, context: str | None = None,
                 timeout: float = 15.0) -> None:
        from kubernetes import client, config  # type: ignore[import-untyped]  # only kubernetes mode pays for it

        try:
            if kubeconfig is not None:
                api_client = config.new_client_from_config(config_file=str(kubeconfig), context=context)
            else:
                cfg = client.Configuration()
                config.load_incluster_config(client_configuration=cfg)
                api_client = client.ApiClient(cfg)
        except (config.ConfigException, OSError) as exc:
            where = f"kubeconfig {kubeconfig}" if kubeconfig else "the in-cluster service account"
            raise ArgoCDError(f"cannot configure the Kubernetes client from {where}: {exc}; "
                              "set argocd.kubeconfig (and argocd.context) or run meshgen in the cluster") from exc
        self._api_client = api_client
        self._api = client.CustomObjectsApi(api_client)
        self._exc = client.ApiException
        self._namespace = namespace
        self._timeout = timeout

    def _fail(self, exc: Exception) -> ArgoCDError:
        status = getattr(exc, "status", None)
        hint = {401: "the credentials in the kubeconfig are not accepted",
                403: f"the account needs get/list on applications.argoproj.io in namespace {self._namespace}"}.get(
            status or 0, "check argocd.namespace and that Argo CD's CRDs are installed")
        return ArgoCDError(f"Kubernetes API error {status or ''} reading Applications: {hint} ({exc})")

    def list(self, selector: str | None = None) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {"_request_timeout": self._timeout}
        if selector:
            kwargs["label_selector"] = selector
        try:
            result = self._api.list_namespaced_custom_object(_GROUP, _VERSION, self._namespace, _PLURAL, **kwargs)
        except self._exc as exc:
            raise self._fail(exc) from exc
        except Exception as exc:  # urllib3 connection errors and the like
            raise ArgoCDError(f"the Kubernetes API is unreachable: {exc}") from exc
        return list(result.get("items") or [])

    def get(self, name: str) -> dict[str, Any] | None:
        try:
            return dict(self._api.get_namespaced_custom_object(
                _GROUP, _VERSION, self._namespace, _PLURAL, name, _request_timeout=self._timeout))
        except self._exc as exc:
            if exc.status == 404:
                return None
            raise self._fail(exc) from exc
        except Exception as exc:
            raise ArgoCDError(f"the Kubernetes API is unreachable: {exc}") from exc

    def close(self) -> None:
        self._api_client.close()


def make_source(cfg: ArgoCDSettings, settings: Settings) -> AppSource:
    """The source meshgen.yaml's `argocd` section describes (paths relative to settings.root)."""
    if cfg.mode == "kubernetes":
        kubeconfig = _resolve(cfg.kubeconfig, settings.root) if cfg.kubeconfig else None
        return KubernetesSource(cfg.namespace, kubeconfig=kubeconfig, context=cfg.context)
    if not cfg.url:
        raise ArgoCDError("argocd.mode is rest but argocd.url is not set; add e.g. url: https://argocd.example.com")
    ca = _resolve(cfg.ca_file, settings.root) if cfg.ca_file else None
    return RestSource(cfg.url, token=_token(cfg, settings), ca_file=ca)
