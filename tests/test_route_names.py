"""Free-text route names (blueprint-v1 `routes[].name`) and `retries: false` under ServiceProfiles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import write_repo
from k8s_schema import validate_manifest

from meshgen.blueprint.base import DNS1123_LABEL
from meshgen.diagnostics import BlueprintError
from meshgen.pipeline import render_repository
from meshgen.names import route_labels

LINKERD = "environments:\n  prod: {mesh: linkerd}\n"
LEGACY = ("environments:\n  prod: {mesh: linkerd}\n"
          "linkerd: {version: '2.14', trafficSplit: smi, routePolicy: serviceprofile}\n")
ISTIO = "environments:\n  prod: {mesh: istio}\n"

NAMED = """\
service: api
namespace: payments
ports: [{name: http, port: 8080}]
versions: [v1, v2]
routes:
  - name: GET /api/users
    match: {path: {prefix: /api/users}, method: GET}
    timeout: 2s
    to: v2
  - name: get-api-users
    match: {path: {prefix: /api/users}, method: POST}
    timeout: 5s
    to: v1
  - name: Everything else
    to: {v1: 90, v2: 10}
"""


def docs(root: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for rel, data in render_repository(root).files().items():
        doc = yaml.safe_load(data)
        validate_manifest(doc)
        out[rel] = doc
    return out


def test_route_labels_are_dns_labels_unique_and_stable() -> None:
    names = ["GET /api/users", "get-api-users", "Get /API/users", "default", "Ünïcode ☃"]
    labels = route_labels(names)
    assert labels["get-api-users"] == "get-api-users"  # a DNS label already: kept as written
    assert labels["default"] == "default"
    assert len(set(labels.values())) == len(names)
    assert all(DNS1123_LABEL.match(label) and len(label) <= 63 for label in labels.values())
    assert labels["GET /api/users"].startswith("get-api-users-")  # collision: a short hash of the text
    assert route_labels(list(reversed(names))) == labels
    assert route_labels(["GET /api/users"]) == {"GET /api/users": "get-api-users"}  # no collision, no hash


def test_istio_keeps_the_name_as_written(tmp_path: Path) -> None:
    out = docs(write_repo(tmp_path / "r", {"p/api.yaml": NAMED}, config=ISTIO))
    vs = out["prod/payments/api/virtualservice-api.yaml"]
    assert [h["name"] for h in vs["spec"]["http"]] == ["GET /api/users", "get-api-users", "Everything else"]


def test_linkerd_httproute_names_derive_a_dns_label(tmp_path: Path) -> None:
    out = docs(write_repo(tmp_path / "r", {"p/api.yaml": NAMED}, config=LINKERD))
    names = sorted(d["metadata"]["name"] for d in out.values() if d["kind"] == "HTTPRoute")
    labels = route_labels(["GET /api/users", "get-api-users", "Everything else"])
    assert names == sorted(f"api-{labels[n]}" for n in ("GET /api/users", "get-api-users", "Everything else"))
    assert "api-get-api-users" in names and "api-everything-else" in names
    assert any(n.startswith("api-get-api-users-") for n in names)


def test_service_profile_keeps_the_text_and_says_never_retry_without_a_warning(tmp_path: Path) -> None:
    bp = NAMED.replace("    timeout: 5s\n", "    timeout: 5s\n    retries: false\n") + "retries: {attempts: 3}\n"
    root = write_repo(tmp_path / "r", {"p/api.yaml": bp.replace("    to: v2\n", "").replace("    to: v1\n", "")},
                      config=LEGACY)
    result = render_repository(root)
    assert not [w for w in result.warnings if "retries" in w.path and "only in part" in w.message
                and w.path.startswith("routes[1]")], result.warnings
    sp = next(yaml.safe_load(d) for rel, d in result.files().items() if "serviceprofile" in rel)
    validate_manifest(sp)
    routes = {r["name"]: r for r in sp["spec"]["routes"]}
    assert list(routes) == ["GET /api/users", "get-api-users", "Everything else"]
    assert routes["get-api-users"]["isRetryable"] is False
    assert routes["GET /api/users"]["isRetryable"] is True


def test_retries_false_alone_under_serviceprofile_gives_no_partial_warning(tmp_path: Path) -> None:
    bp = "service: api\nnamespace: payments\nretries: false\n"
    result = render_repository(write_repo(tmp_path / "r", {"p/api.yaml": bp}, config=LEGACY))
    assert not result.warnings, [str(w) for w in result.warnings]
    sp = next(yaml.safe_load(d) for rel, d in result.files().items() if "serviceprofile" in rel)
    validate_manifest(sp)
    assert sp["spec"]["routes"] == [{"name": "default", "condition": {"pathRegex": ".*"}, "isRetryable": False}]


@pytest.mark.parametrize("name,why", [
    ("", "not empty"), (" x", "leading or trailing spaces"), ("a\tb", "printable"), ("x" * 129, "at most 128"),
    (7, "a route name is text"),
])
def test_bad_route_names_are_refused(tmp_path: Path, name: Any, why: str) -> None:
    bp = f"service: api\nnamespace: payments\nroutes:\n  - name: {yaml.safe_dump(name).splitlines()[0]}\n    match: {{method: GET}}\n"
    root = write_repo(tmp_path / "r", {"p/api.yaml": bp}, config=ISTIO)
    with pytest.raises(BlueprintError) as info:
        render_repository(root)
    (err,) = [str(d) for d in info.value.diagnostics]
    assert err.startswith("blueprints/p/api.yaml:4:5: routes[0].name: ") and why in err, err


def test_route_names_stay_unique_as_written(tmp_path: Path) -> None:
    bp = NAMED.replace("name: get-api-users", "name: GET /api/users")
    with pytest.raises(BlueprintError) as info:
        render_repository(write_repo(tmp_path / "r", {"p/api.yaml": bp}, config=ISTIO))
    assert "route name 'GET /api/users' is used twice" in str(info.value.diagnostics[0])
