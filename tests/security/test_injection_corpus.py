"""Injection strings × free-text fields (property-based), for both ways a string leaves meshgen:

* in rendered YAML: every file stays exactly one document of a kind meshgen writes, and the
  string comes back unchanged where it went in (tests/test_injection.py covers header values,
  JWT issuer/audiences and claims; this adds route names, path matches, rewrites, access paths
  and a Mesh's team);
* in diagnostics: whatever a key, a value or a file name holds, each finding is one line with
  no control character (no forged `file:line:` line, no terminal escape), and a value is shown
  as a short excerpt only.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import DEFAULT_CONFIG
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshgen.blueprint.base import EXCERPT_CHARS
from meshgen.diagnostics import BlueprintError
from meshgen.pipeline import render_repository
from meshgen.render.yamlout import dump

HOSTILE = ["\n/tmp/fake.yaml:1:1: all good", "\r\x1b[2J\x1b[31mred", "{{ config }}", "{% raw %}", "---\nkind: Secret",
           "key: value", "- item", "'q'\"dq\"", "\u2028next", "\x00nul", "a" * 5000, "ünïcødé ✓", "!!python/object",
           "&anchor *alias", "# comment", "%TAG", "`rm -rf /`", "$(id)", "\t"]
text = st.one_of(st.sampled_from(HOSTILE), st.text(min_size=1, max_size=60))

BASE: dict[str, Any] = {
    "service": "api", "namespace": "payments",
    "versions": {"v1": {"version": "v1"}, "v2": {"version": "v2"}},
    "routes": [{"name": "first", "match": {"path": {"prefix": "/a"}}, "to": "v2", "rewrite": "/b"},
               {"name": "default", "to": "v1"}],
    "access": [{"from": ["frontend"], "paths": ["/api/*"]}],
}
KINDS = {"VirtualService", "DestinationRule", "PeerAuthentication", "AuthorizationPolicy", "RequestAuthentication",
         "Telemetry", "Gateway", "ServiceMonitor", "PodMonitor", "ConfigMap", "EnvoyFilter", "Sidecar"}


def _set(path: tuple[str | int, ...], transform: Callable[[str], str] = lambda s: s) -> Callable[[dict, str], Any]:
    def put(doc: dict[str, Any], value: str) -> str:
        node: Any = doc
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = transform(value)
        return transform(value)
    return put


# Free-text fields and where each value goes (paths start with '/': the field's own rule).
FIELDS: dict[str, Callable[[dict, str], Any]] = {
    "routes[0].name": _set(("routes", 0, "name")),
    "routes[0].match.path.prefix": _set(("routes", 0, "match", "path", "prefix"), lambda s: "/" + s),
    "routes[0].match.path.exact": lambda doc, v: doc["routes"][0]["match"].update(path={"exact": "/" + v}) or "/" + v,
    "routes[0].rewrite": _set(("routes", 0, "rewrite"), lambda s: "/" + s),
    "access[0].paths[0]": _set(("access", 0, "paths", 0), lambda s: "/" + s),
}


def _repo(tmp: Path, blueprint: dict[str, Any], name: str = "payments/api.yaml", raw: str | None = None) -> Path:
    (tmp / "meshgen.yaml").write_text(DEFAULT_CONFIG)
    path = tmp / "blueprints" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(raw if raw is not None else dump(blueprint))
    return tmp


def _strings(doc: Any) -> list[str]:
    if isinstance(doc, dict):
        return [s for k, v in doc.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(doc, list):
        return [s for v in doc for s in _strings(v)]
    return [doc] if isinstance(doc, str) else []


def _one_line_each(exc: BlueprintError) -> None:
    for d in exc.diagnostics:
        line = str(d)
        assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\x00" not in line, line
        assert "\u2028" not in line and "\u2029" not in line, line
        assert len(d.message) <= 1000, d.message[:200]


CASE = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                database=None)


@pytest.mark.parametrize("field", sorted(FIELDS))
@given(value=text)
@CASE
def test_free_text_renders_as_data_or_fails_cleanly(tmp_path_factory: pytest.TempPathFactory, field: str,
                                                    value: str) -> None:
    blueprint = copy.deepcopy(BASE)
    written = FIELDS[field](blueprint, value)
    root = _repo(tmp_path_factory.mktemp("inj"), blueprint)
    try:
        result = render_repository(root)
    except BlueprintError as exc:
        _one_line_each(exc)  # refused (e.g. not a valid path): a clean finding
        return
    found: list[str] = []
    for rel, data in result.files().items():
        docs = list(yaml.safe_load_all(data))
        assert len(docs) == 1, rel
        assert docs[0]["kind"] in KINDS, (rel, docs[0].get("kind"))
        found += _strings(docs[0])
    assert any(written in s for s in found), f"{field}: {written!r} not rendered as written"


@given(key=text, value=text)
@CASE
def test_findings_about_hostile_keys_and_values_are_one_line(tmp_path_factory: pytest.TempPathFactory, key: str,
                                                             value: str) -> None:
    blueprint = {**copy.deepcopy(BASE), key: value, "namespace": value, "kind": value if key == "kind" else "Service"}
    blueprint["routes"][0]["match"]["headers"] = {value: "x"}
    root = _repo(tmp_path_factory.mktemp("diag"), blueprint)
    with pytest.raises(BlueprintError) as caught:
        render_repository(root)
    _one_line_each(caught.value)
    for d in caught.value.diagnostics:
        if len(value) > 3 * EXCERPT_CHARS:
            assert value not in d.message, "a long value was echoed whole"


@pytest.mark.parametrize(("name", "shown"), [
    ("x\n/tmp/fake.yaml:1:1: ok.yaml", "x\\n/tmp/fake.yaml:1:1: ok.yaml:2:"), ("x\r.yaml", "x\\r.yaml:2:"),
    ("\x1b[31mred.yaml", "\\x1b[31mred.yaml:2:"), ("x\u2028y.yaml", "x\\u2028y.yaml:2:"),
    ("x\x7f.yaml", "x\\x7f.yaml:2:"), ("tab\there.yaml", "tab\\there.yaml:2:"),
])
def test_file_names_are_escaped_in_findings(tmp_path: Path, name: str, shown: str) -> None:
    root = _repo(tmp_path, {}, name=f"payments/{name}", raw="service: [unclosed\n")
    with pytest.raises(BlueprintError) as caught:
        render_repository(root)
    _one_line_each(caught.value)
    (d,) = caught.value.diagnostics
    assert str(d).startswith("blueprints/payments/" + shown), str(d)


# ---- kind: Ingress (issue 13 verification): free text at the edge, on both meshes ------------------

INGRESS_CONFIG = "environments:\n  staging: {mesh: istio, path: staging}\n  edge-l: {mesh: linkerd, path: edge-l}\n"
INGRESS: dict[str, Any] = {
    "kind": "Ingress", "name": "shop", "namespace": "edge", "hosts": ["shop.example.com"], "gateway": "edge/public",
    "routes": [{"name": "cart", "match": {"path": {"prefix": "/cart"}}, "rewrite": "/", "to": {"service": "cart.shop"}},
               {"name": "default", "to": {"service": "storefront"}}],
}
INGRESS_FIELDS: dict[str, Callable[[dict, str], Any]] = {
    "routes[0].name": _set(("routes", 0, "name")),
    "routes[0].match.path.prefix": _set(("routes", 0, "match", "path", "prefix"), lambda s: "/" + s),
    "routes[0].rewrite": _set(("routes", 0, "rewrite"), lambda s: "/" + s),
}


def _ingress_files(root: Path) -> dict[str, list[Any]]:
    return {rel: list(yaml.safe_load_all(data)) for rel, data in render_repository(root).files().items()}


@pytest.mark.parametrize("field", sorted(INGRESS_FIELDS))
@given(value=text)
@CASE
def test_ingress_free_text_renders_as_data_or_fails_cleanly(tmp_path_factory: pytest.TempPathFactory, field: str,
                                                            value: str) -> None:
    """A hostile route name, path or rewrite on an Ingress adds no file, document or kind (Istio
    VirtualService/Gateway and Gateway API HTTPRoute names included): the same files and kinds as
    a benign value, the value itself rendered as data where it is kept."""
    def repo(doc: dict[str, Any]) -> Path:
        tmp = tmp_path_factory.mktemp("ing")
        (tmp / "meshgen.yaml").write_text(INGRESS_CONFIG)
        (tmp / "blueprints/edge").mkdir(parents=True)
        (tmp / "blueprints/edge/shop.yaml").write_text(dump(doc))
        return tmp

    baseline = _ingress_files(repo(INGRESS))
    blueprint = copy.deepcopy(INGRESS)
    written = INGRESS_FIELDS[field](blueprint, value)
    try:
        files = _ingress_files(repo(blueprint))
    except BlueprintError as exc:
        _one_line_each(exc)
        return
    assert sorted(files) == sorted(baseline)
    for rel, docs in files.items():
        assert [d["kind"] for d in docs] == [d["kind"] for d in baseline[rel]], rel
        assert [d["metadata"]["name"] for d in docs] == [d["metadata"]["name"] for d in baseline[rel]], rel
    if field != "routes[0].name":  # a name may be kept only in a comment-free description field, or not at all
        assert any(written in s for docs in files.values() for d in docs for s in _strings(d)), written
