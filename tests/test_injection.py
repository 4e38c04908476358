"""No blueprint value can change a rendered document's structure (property-based).

Free-text fields (header values, regexes, JWT issuer and audiences, claim values, paths,
gateway credential names are labels and cannot carry text) are filled with strings full of
YAML and template syntax; every rendered file must parse as one document of the expected
kinds, and each string must come back identical where the renderer puts it.
"""

from __future__ import annotations

from typing import Any

import yaml
from helpers import write_repo
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshgen.pipeline import render_repository
from meshgen.render.yamlout import dump

HOSTILE = [": {{ }} # & * ! % @", "{{ config }}", "{% raw %}", "`rm -rf`", "'quoted'", '"dq"', "yes", "~", "0x1F",
           "1e3", "null", "- item", "key: value", "---\nkind: Secret", "a\nb", "ünïcødé ✓", "\t", "@x", "!!python/object"]
text = st.one_of(st.sampled_from(HOSTILE), st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30))


def _walk(doc: Any) -> list[str]:
    if isinstance(doc, dict):
        return [s for k, v in doc.items() for s in [*_walk(k), *_walk(v)]]
    if isinstance(doc, list):
        return [s for v in doc for s in _walk(v)]
    return [doc] if isinstance(doc, str) else []


def _blueprint(header: str, issuer: str, audience: str, claim: str) -> dict[str, Any]:
    return {
        "service": "api",
        "namespace": "payments",
        "versions": {"v1": {"version": "v1"}, "v2": {"version": "v2"}},
        "routes": [
            {"name": "canary", "match": {"headers": {"x-canary": header}}, "to": "v2"},
            {"name": "regex", "match": {"headers": {"x-user": {"regex": ".*"}}, "path": {"exact": "/" + header.replace("\n", "")}}, "to": "v1"},
            {"name": "default", "to": {"v1": 90, "v2": 10}},
        ],
        "jwt": {"issuer": issuer, "audiences": [audience]},
        "access": [{"jwtClaims": {"role": [claim]}}],
    }


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(header=text, issuer=text, audience=text, claim=text)
def test_hostile_strings_come_out_identical_and_structure_is_unchanged(
    tmp_path_factory: Any, header: str, issuer: str, audience: str, claim: str
) -> None:
    root = write_repo(tmp_path_factory.mktemp("repo"), {"payments/api.yaml": dump(_blueprint(header, issuer, audience, claim))},
                      config="environments:\n  prod: {mesh: istio}\n")
    files = render_repository(root).files()
    kinds = {}
    for rel, data in files.items():
        docs = list(yaml.safe_load_all(data))
        assert len(docs) == 1, rel
        doc = docs[0]
        assert list(doc)[:3] == ["apiVersion", "kind", "metadata"], rel
        kinds[doc["kind"]] = doc
    assert set(kinds) == {"VirtualService", "DestinationRule", "RequestAuthentication", "AuthorizationPolicy"}
    vs = kinds["VirtualService"]["spec"]["http"]
    assert vs[0]["match"][0]["headers"]["x-canary"] == {"exact": header}
    jwt_rule = kinds["RequestAuthentication"]["spec"]["jwtRules"][0]
    assert jwt_rule["issuer"] == issuer and jwt_rule["audiences"] == [audience]
    assert kinds["AuthorizationPolicy"]["spec"]["rules"][0]["when"][0]["values"] == [claim]
    # Nothing the user wrote leaks into a place it was not put (e.g. a new key).
    for doc in kinds.values():
        assert set(doc) <= {"apiVersion", "kind", "metadata", "spec"}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(weights=st.integers(min_value=0, max_value=100), timeout_ms=st.integers(min_value=1, max_value=600_000),
       attempts=st.integers(min_value=0, max_value=10))
def test_round_trip_of_numbers_and_durations(tmp_path_factory: Any, weights: int, timeout_ms: int, attempts: int) -> None:
    bp = {"service": "api", "namespace": "payments", "versions": ["v1", "v2"],
          "routes": [{"to": {"v1": weights, "v2": 100 - weights}, "timeout": f"{timeout_ms}ms",
                      "retries": {"attempts": attempts, "on": ["5xx"]}}]}
    root = write_repo(tmp_path_factory.mktemp("repo"), {"payments/api.yaml": dump(bp)},
                      config="environments:\n  prod: {mesh: istio}\n")
    files = render_repository(root).files()
    vs = yaml.safe_load(files["prod/payments/api/virtualservice-api.yaml"])["spec"]["http"][0]
    got = {d["destination"]["subset"]: d.get("weight", 100) for d in vs["route"]}
    assert got == {k: w for k, w in (("v1", weights), ("v2", 100 - weights)) if w} or (weights in (0, 100))
    assert sum(got.values()) == 100
    from meshgen.blueprint.base import parse_duration
    assert abs(parse_duration(vs["timeout"]).seconds - timeout_ms / 1000) < 1e-9
    assert vs["retries"]["attempts"] == attempts
