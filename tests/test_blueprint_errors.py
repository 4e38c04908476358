"""The mistakes users make, and the exact errors they get: file:line:col: path: what, what's valid."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import write_repo

from meshgen.diagnostics import BlueprintError
from meshgen.pipeline import render_repository

GOOD = """\
service: api-service
namespace: payments
versions: {v1: {version: v1}, v2: {version: v2}}
routes:
  - name: default
    to: {v1: 90, v2: 10}
"""


def errors_of(tmp_path: Path, blueprints: dict[str, str], **kw: str) -> list[str]:
    root = write_repo(tmp_path / "repo", blueprints, **kw)
    with pytest.raises(BlueprintError) as info:
        render_repository(root)
    return [str(d) for d in info.value.diagnostics if d.severity == "error"]


def test_a_misspelt_key_names_line_column_path_and_the_nearest_key(tmp_path: Path) -> None:
    errs = errors_of(tmp_path, {"payments/api.yaml": GOOD + "    retires: {attempts: 3}\n"})
    assert errs == [
        "blueprints/payments/api.yaml:7:5: routes[0].retires: unknown key 'retires', did you mean 'retries'? "
        "(valid keys: fault, match, name, retries, rewrite, timeout, to)"
    ]


def test_every_error_of_a_run_is_reported_not_just_the_first(tmp_path: Path) -> None:
    errs = errors_of(tmp_path, {
        "payments/a.yaml": GOOD.replace("90", "95") + "timeout: 5\nmtls: strct\n",
        "payments/b.yaml": "service: b\nnamespace: payments\nloadBalancing: fastest\n",
    })
    assert errs == [
        "blueprints/payments/a.yaml:6:5: routes[0].to: weights must sum to 100, these sum to 105 (95 + 10)",
        "blueprints/payments/a.yaml:7:1: timeout: expected a duration string such as 500ms, 3s, 10m or 1h, "
        "got the number 5 (write 5s for seconds)",
        "blueprints/payments/a.yaml:8:1: mtls: 'strct' is not an mTLS mode; use strict, permissive or disable",
        "blueprints/payments/b.yaml:3:1: loadBalancing: 'fastest' is not a load-balancing mode; use round-robin, "
        "least-request, random or {consistentHash: {header: x-user-id}}",
    ]


def test_a_route_to_an_unknown_version(tmp_path: Path) -> None:
    errs = errors_of(tmp_path, {"payments/api.yaml": GOOD + "  - name: canary\n    match: {headers: {x-canary: 'true'}}\n    to: v3\n"})
    assert any(e.startswith("blueprints/payments/api.yaml:9:5: [IST0101] routes[1].to: version 'v3' is not declared in "
                            "`versions` (v1, v2)") for e in errs), errs


@pytest.mark.parametrize("name", ["../x", "a/b", "API", "-x", "x" * 64, "x.y"])
def test_names_that_could_become_paths_are_refused(tmp_path: Path, name: str) -> None:
    errs = errors_of(tmp_path, {"payments/api.yaml": f"service: {name!r}\nnamespace: payments\n"})
    assert len(errs) == 1 and ":1:1: service: " in errs[0] and "is not a DNS-1123 label" in errs[0], errs


def test_two_blueprints_claiming_one_service(tmp_path: Path) -> None:
    errs = errors_of(tmp_path, {"payments/a.yaml": GOOD, "catalog/b.yaml": GOOD.replace("payments", "payments")})
    assert len(errs) == 4  # each file, each environment
    assert "service payments/api-service in environment production is also claimed by blueprints/payments/a.yaml" in errs[0]


def test_a_team_writing_into_a_namespace_it_does_not_own(tmp_path: Path) -> None:
    errs = errors_of(tmp_path, {"catalog/api.yaml": GOOD + "team: catalog\n"})
    assert errs == ["blueprints/catalog/api.yaml:2:1: namespace: team 'catalog' does not own namespace 'payments' "
                    "(it belongs to payments); catalog owns: catalog"]


def test_a_namespace_no_team_owns(tmp_path: Path) -> None:
    errs = errors_of(tmp_path, {"x/api.yaml": "service: a\nnamespace: orphan\n"})
    assert errs == ["blueprints/x/api.yaml:2:1: namespace: namespace 'orphan' belongs to no team in meshgen.yaml; "
                    "add it to a team's namespaces, or set `team:` to a team that owns it"]


def test_an_alias_bomb_is_refused_not_expanded(tmp_path: Path) -> None:
    bomb = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefg", "bcdefgh")
    )
    errs = errors_of(tmp_path, {"payments/bomb.yaml": bomb})
    assert len(errs) == 1 and "expands to more than 20000 values (an alias bomb?)" in errs[0]


def test_a_file_over_the_size_limit_is_refused(tmp_path: Path) -> None:
    errs = errors_of(tmp_path, {"payments/big.yaml": GOOD + "#" + "x" * 300_000 + "\n"})
    assert len(errs) == 1 and "over the 262144-byte limit" in errs[0]


def test_one_document_per_file(tmp_path: Path) -> None:
    errs = errors_of(tmp_path, {"payments/two.yaml": GOOD + "---\n" + GOOD})
    assert errs == ["blueprints/payments/two.yaml:7:1: a blueprint file holds one document; found more than one "
                    "(remove the `---` separator or split the file)"]


def test_yaml_syntax_errors_point_at_the_problem(tmp_path: Path) -> None:
    errs = errors_of(tmp_path, {"payments/x.yaml": "service: a\nnamespace: [payments\n"})
    assert len(errs) == 1 and errs[0].startswith("blueprints/payments/x.yaml:3:1: invalid YAML")


def test_duplicate_keys_are_errors(tmp_path: Path) -> None:
    errs = errors_of(tmp_path, {"payments/x.yaml": GOOD + "service: b\n"})
    assert errs == ["blueprints/payments/x.yaml:7:1: duplicate key 'service' (first defined at line 1, column 1); keep one of them"]


def test_overlay_errors_point_into_the_overlay(tmp_path: Path) -> None:
    errs = errors_of(tmp_path, {"payments/x.yaml": GOOD + "environments:\n  staging:\n    routs: []\n  qa: {}\n"})
    assert errs == [
        "blueprints/payments/x.yaml:9:5: environments.staging.routs: unknown key 'routs', did you mean 'routes'? "
        "(valid keys: access, canary, circuitBreaker, connectionPool, egress, environments, ingress, jwt, kind, loadBalancing, "
        "mesh, mtls, namespace, observability, ports, rateLimit, retries, routes, service, serviceAccount, team, "
        "telemetry, timeout, versions, workload)",
        "blueprints/payments/x.yaml:10:3: environments.qa: environment 'qa' is not in meshgen.yaml "
        "(environments: staging, production)",
    ]


def test_an_unknown_kind_suggests_the_nearest(tmp_path: Path) -> None:
    errs = errors_of(tmp_path, {"payments/x.yaml": "kind: Namespce\nnamespace: payments\n"})
    assert errs == ["blueprints/payments/x.yaml:1:1: kind: unknown kind 'Namespce', did you mean 'Namespace'? "
                    "(valid kinds: Service, Namespace, Mesh, Ingress)"]


def test_jwt_claims_without_jwt(tmp_path: Path) -> None:
    errs = errors_of(tmp_path, {"payments/x.yaml": GOOD + "access:\n  - jwtClaims: {role: admin}\n"})
    assert errs == ["blueprints/payments/x.yaml:8:5: access[0].jwtClaims: jwtClaims need request authentication: "
                    "add `jwt:` (issuer and jwksUri) to this blueprint"]


def test_meshgen_yaml_errors(tmp_path: Path) -> None:
    errs = errors_of(tmp_path, {}, config="environments:\n  prod: {mesh: istoi}\nunsuported: warn\n")
    assert errs == [
        "meshgen.yaml:2:10: environments.prod.mesh: the string 'istoi' is not allowed; input should be 'istio' or 'linkerd'",
        "meshgen.yaml:3:1: unsuported: unknown key 'unsuported', did you mean 'unsupported'? (valid keys: "
        "argocd, clusterDomain, envRepo, environments, istio, linkerd, prometheus, teams, trustDomain, unsupported)",
    ]


def test_what_the_mesh_cannot_express_fails_naming_field_mesh_and_why(tmp_path: Path) -> None:
    errs = errors_of(tmp_path, {
        "payments/_ns.yaml": "kind: Namespace\nnamespace: payments\nmtls: {mode: strict, ports: {8080: disable}}\n",
        "payments/api.yaml": GOOD + "    rewrite: /v2/\nmesh: linkerd\n",
    })
    assert errs[0].startswith("blueprints/payments/_ns.yaml:3:22: mtls.ports: istio 1.24 cannot express this: "
                              "Istio's portLevelMtls needs a workload selector")
    assert errs[0].endswith("(meshgen.yaml `unsupported: warn` renders without it)")
    assert errs[1].startswith("blueprints/payments/api.yaml:7:5: routes[0].rewrite: linkerd 2.18 httproute+annotations "
                              "cannot express this: ")
    assert len(errs) == 2  # the same finding in both environments is reported once


def test_with_unsupported_warn_the_render_goes_on_without_it(tmp_path: Path) -> None:
    config = "environments:\n  prod: {mesh: linkerd}\nunsupported: warn\n"
    root = write_repo(tmp_path / "repo", {"payments/api.yaml": GOOD + "    rewrite: /v2/\n"}, config=config)
    result = render_repository(root)
    assert [str(w) for w in result.warnings] == [
        "blueprints/payments/api.yaml:7:5: warning: routes[0].rewrite: linkerd 2.18 httproute+annotations cannot "
        "express this: " + result.warnings[0].message.split("cannot express this: ")[1]
    ]
    assert result.warnings[0].message.endswith("; rendered without it")
    (unit,) = result.units
    assert unit.warnings and "routes[0].rewrite" in unit.warnings[0]  # travels to the pull request
    assert not any(b"URLRewrite" in data or b"rewrite" in data.lower() for data in unit.files.values())


def test_match_values_that_yaml_reads_as_numbers_or_booleans_must_be_quoted(tmp_path: Path) -> None:
    errs = errors_of(tmp_path, {"payments/x.yaml": GOOD + "  - match: {headers: {x-canary: true, x-build: 1e3}}\n    to: v2\n"})
    assert errs == [
        "blueprints/payments/x.yaml:7:23: routes[1].match.headers.x-canary: the boolean true is not text; match "
        'values are strings: put it in quotes (e.g. "true", "1e3")',
        "blueprints/payments/x.yaml:7:39: routes[1].match.headers.x-build: the number 1000.0 is not text; match "
        'values are strings: put it in quotes (e.g. "true", "1e3")',
    ]


def test_type_errors_use_the_words_of_a_yaml_file(tmp_path: Path) -> None:
    errs = errors_of(tmp_path, {"payments/x.yaml": "service: a\nnamespace: payments\nroutes: {name: x}\nports: http\n"
                                                   "jwt: {issuer: 5}\n"})
    assert errs == [
        "blueprints/payments/x.yaml:3:1: routes: expected a list (one `- item` per entry), got a mapping",
        "blueprints/payments/x.yaml:4:1: ports: expected a list (one `- item` per entry), got the string 'http'",
        "blueprints/payments/x.yaml:5:7: jwt.issuer: expected text, got the number 5",
    ]


def test_changed_mesh_settings_take_effect_in_the_same_process(tmp_path: Path) -> None:
    # A worker renders many configs in one process: capabilities must follow each one.
    bp = {"payments/x.yaml": GOOD + "rateLimit: {requests: 10, per: 1s}\n"}
    modern = "environments:\n  prod: {mesh: linkerd}\nlinkerd: {version: \"2.18\"}\n"
    old = "environments:\n  prod: {mesh: linkerd}\nlinkerd: {version: \"2.16\"}\n"
    for run in range(3):
        assert render_repository(write_repo(tmp_path / f"new{run}", bp, config=modern)).units
        errs = errors_of(tmp_path / f"old{run}", bp, config=old)
        assert any("rateLimit" in e and "cannot express this" in e for e in errs), errs
