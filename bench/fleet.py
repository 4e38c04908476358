"""Deterministic fleet of service blueprints for the render benchmark.

One `ServiceSpec` per service is the single source of truth: it is written
both as a blueprint (for meshgen) and as an entry of the Helm baseline's
values file, so the two sides of the benchmark cannot drift apart.

Usage: python bench/fleet.py ROOT --n 1000 [--values ROOT/values.json]
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Every service gets the same shape; only names, namespaces and teams vary.
PORT = 8080
DEFAULT_WEIGHTS = (90, 10)
RETRY_ON = ("5xx", "reset")


@dataclass(frozen=True)
class ServiceSpec:
    index: int
    namespaces: int
    teams: int
    weights: tuple[int, int] = DEFAULT_WEIGHTS

    @property
    def name(self) -> str:
        return f"svc-{self.index:05d}"

    @property
    def namespace_index(self) -> int:
        return self.index % self.namespaces

    @property
    def namespace(self) -> str:
        return namespace_name(self.namespace_index)

    @property
    def team(self) -> str:
        return team_name(self.namespace_index % self.teams)

    def blueprint_yaml(self) -> str:
        v1, v2 = self.weights
        # Hand-written text rather than a YAML dump: stdlib only, and it reads
        # exactly like the blueprint a service owner would write.
        return f"""\
service: {self.name}
namespace: {self.namespace}
team: {self.team}
ports: [{{name: http, port: {PORT}}}]
versions: {{v1: {{version: v1}}, v2: {{version: v2}}}}
routes:
  - name: canary
    match: {{headers: {{x-canary: "true"}}}}
    to: v2
  - name: default
    to: {{v1: {v1}, v2: {v2}}}
    retries: {{attempts: 3, perTryTimeout: 2s, on: [{", ".join(RETRY_ON)}]}}
    timeout: 10s
loadBalancing: {{consistentHash: {{header: x-user-id}}}}
connectionPool: {{maxConnections: 100, maxPendingRequests: 100, maxRequests: 1000}}
circuitBreaker: {{consecutive5xxErrors: 5, interval: 30s, baseEjectionTime: 30s, maxEjectionPercent: 50}}
mtls: strict
access:
  - from: [frontend]
    methods: [GET]
"""

    def helm_values(self) -> dict[str, Any]:
        """The same intent in the shape a hand-written Helm chart would take."""
        v1, v2 = self.weights
        return {
            "name": self.name,
            "namespace": self.namespace,
            "team": self.team,
            "port": PORT,
            "versions": {"v1": {"version": "v1"}, "v2": {"version": "v2"}},
            "routes": [
                {
                    "name": "canary",
                    "match": {"headers": {"x-canary": "true"}},
                    "to": [{"subset": "v2", "weight": 100}],
                },
                {
                    "name": "default",
                    "to": [{"subset": "v1", "weight": v1}, {"subset": "v2", "weight": v2}],
                    "retries": {"attempts": 3, "perTryTimeout": "2s", "on": list(RETRY_ON)},
                    "timeout": "10s",
                },
            ],
            "loadBalancing": {"consistentHash": {"header": "x-user-id"}},
            "connectionPool": {"maxConnections": 100, "maxPendingRequests": 100, "maxRequests": 1000},
            "circuitBreaker": {
                "consecutive5xxErrors": 5,
                "interval": "30s",
                "baseEjectionTime": "30s",
                "maxEjectionPercent": 50,
            },
            "mtls": "STRICT",
            "access": [{"from": ["frontend"], "methods": ["GET"]}],
        }


def namespace_name(i: int) -> str:
    return f"ns-{i:02d}"


def team_name(i: int) -> str:
    return f"team-{i}"


def services(n: int, namespaces: int = 50, teams: int = 10) -> list[ServiceSpec]:
    if n < 1 or namespaces < 1 or teams < 1:
        raise ValueError("n, namespaces and teams must be positive")
    return [ServiceSpec(i, namespaces, teams) for i in range(n)]


def meshgen_yaml(namespaces: int, teams: int) -> str:
    # Team t owns every namespace whose index is t modulo `teams`, matching
    # ServiceSpec.team so each blueprint's team owns its namespace.
    owned: dict[int, list[str]] = {t: [] for t in range(teams)}
    for ns in range(namespaces):
        owned[ns % teams].append(namespace_name(ns))
    team_lines = "".join(
        f"  {team_name(t)}: {{namespaces: [{', '.join(nss)}]}}\n" for t, nss in owned.items() if nss
    )
    return f"""\
environments:
  production: {{mesh: istio, path: production}}
istio:
  version: "1.24"
teams:
{team_lines}"""


def blueprint_path(root: Path, spec: ServiceSpec) -> Path:
    return root / "blueprints" / spec.team / f"{spec.name}.yaml"


def generate(root: Path, n: int, namespaces: int = 50, teams: int = 10) -> None:
    """Write a blueprints repository with `n` services under `root`."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "meshgen.yaml").write_text(meshgen_yaml(namespaces, teams))
    specs = services(n, namespaces, teams)
    for team in {s.team for s in specs}:
        (root / "blueprints" / team).mkdir(parents=True, exist_ok=True)
    for spec in specs:
        blueprint_path(root, spec).write_text(spec.blueprint_yaml())


def values(n: int, namespaces: int = 50, teams: int = 10) -> dict[str, Any]:
    """The Helm baseline's values for the same fleet `generate` writes."""
    return {"services": [s.helm_values() for s in services(n, namespaces, teams)]}


def write_values(path: Path, n: int, namespaces: int = 50, teams: int = 10) -> None:
    # JSON is valid YAML, and far quicker to write than a YAML dump.
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(values(n, namespaces, teams), separators=(",", ":")))


@dataclass(frozen=True)
class Touched:
    path: Path
    service: str
    weights: tuple[int, int]


_WEIGHTS_LINE = re.compile(r"^(    to: \{v1: )\d+(, v2: )\d+(\})$", re.MULTILINE)


def touch_one(root: Path, step: int = 1) -> Touched:
    """Change the default-route split of one blueprint (the first by path).

    Each `step` gives a different split (step 1: 75/25, then 74/26, ...),
    so repeated re-render measurements each see a real change rather than
    a no-op rewrite of the same content.
    """
    if step < 1:
        raise ValueError("step starts at 1")
    path = min((root / "blueprints").glob("*/*.yaml"))
    v2 = 25 + (step - 1) % 50
    weights = (100 - v2, v2)
    text, count = _WEIGHTS_LINE.subn(rf"\g<1>{weights[0]}\g<2>{weights[1]}\g<3>", path.read_text())
    if count != 1:
        raise RuntimeError(f"{path}: expected one weighted route, found {count}")
    path.write_text(text)
    return Touched(path, path.stem, weights)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("root", type=Path, help="directory to write the blueprints repository into")
    parser.add_argument("--n", type=int, default=1000, help="number of services (default 1000)")
    parser.add_argument("--namespaces", type=int, default=50)
    parser.add_argument("--teams", type=int, default=10)
    parser.add_argument("--values", type=Path, help="also write the Helm baseline values file here")
    args = parser.parse_args(argv)
    generate(args.root, args.n, args.namespaces, args.teams)
    if args.values:
        write_values(args.values, args.n, args.namespaces, args.teams)
    print(f"wrote {args.n} blueprints to {args.root}")


if __name__ == "__main__":
    main()
