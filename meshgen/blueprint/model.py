"""The blueprint model: every field of blueprint format v1 (../shared/spec/blueprint-v1.md).

Short forms are normalised into one long form while validating, so renderers only ever
see one shape: `to: v2` becomes one Backend of weight 100, `retries: false` becomes a
disabled RetryPolicy, `mtls: strict` becomes MTLS(mode="strict").
"""

from __future__ import annotations

import itertools
import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, ValidationInfo, field_validator, model_validator

from meshgen.blueprint.base import (
    DNSLabel,
    Duration,
    DurationStr,
    Percent,
    Strict,
    describe_value,
    fail,
    one_or_many,
    positive_int,
    unknown_key_message,
)

# A registered mesh (meshgen.render.registry). The registry sits above this module (meshgen.yaml's
# settings come from it), so loading checks the name and the JSON schema lists the names.
MeshName = str
Protocol = Literal["http", "http2", "grpc", "tcp", "tls"]
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
NON_IDEMPOTENT_METHODS = frozenset({"POST", "PATCH", "CONNECT"})
RETRY_CONDITIONS = (
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
)

_LABEL_KEY = re.compile(r"([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?\Z")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?\Z")
_HOSTNAME = re.compile(r"(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
_HEADER_NAME = re.compile(r"[a-z0-9][-a-z0-9_.]*\Z")


def _labels(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise fail("labels", f"expected a mapping of pod labels such as {{app: api-service}}, got {describe_value(value)}")
    out: dict[str, str] = {}
    for k, v in value.items():
        if not isinstance(k, str) or not _LABEL_KEY.match(k):
            raise fail("labels", f"{k!r} is not a valid Kubernetes label key (e.g. app, version, example.com/tier)")
        if isinstance(v, bool) or v is None or not isinstance(v, (str, int, float)):
            raise fail("labels", f"label {k!r}: expected a string value, got {describe_value(v)}")
        text = str(v)
        if not _LABEL_VALUE.match(text) or len(text) > 63:
            raise fail("labels", f"label {k!r}: {text!r} is not a valid label value (at most 63 letters, digits, '-', '_', '.')")
        out[k] = text
    return out


Labels = Annotated[dict[str, str], BeforeValidator(_labels)]


def _hostname(value: Any) -> str:
    if not isinstance(value, str) or len(value) > 253 or not _HOSTNAME.match(value):
        raise fail("hostname", f"expected a lowercase DNS name such as api.example.com, got {describe_value(value)}")
    return value


Hostname = Annotated[str, BeforeValidator(_hostname)]


def _ingress_host(value: Any) -> str:
    # Gateway API's Hostname and Istio's Gateway hosts are names matched against the Host header /
    # SNI: an IP address is not allowed there (it would match nothing, or be refused by the API server).
    host = _hostname(value)
    if all(label.isdigit() for label in host.split(".")):
        raise fail("hostname", f"{host!r} is an IP address; an ingress host is a DNS name such as api.example.com "
                   "(clients reaching the gateway by address need a name for it)")
    return host


IngressHost = Annotated[str, BeforeValidator(_ingress_host)]


def _port_number(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise fail("port", f"expected a port number from 1 to 65535, got {describe_value(value)}")
    return value


PortNumber = Annotated[int, BeforeValidator(_port_number)]


# --- ports, versions ---------------------------------------------------------------------


class Port(Strict):
    name: DNSLabel
    port: PortNumber
    protocol: Protocol = "http"
    target_port: PortNumber | None = Field(default=None, alias="targetPort")

    @field_validator("name")
    @classmethod
    def _short_name(cls, v: str) -> str:
        if len(v) > 15:
            raise fail("port_name", f"port name {v!r} is longer than 15 characters (a Kubernetes limit)")
        return v


DEFAULT_PORTS = (Port.model_validate({"name": "http", "port": 80}),)


# --- matching ------------------------------------------------------------------------------


class StringMatch(Strict):
    """Exactly one of exact, prefix or regex. A bare string means exact."""

    exact: str | None = None
    prefix: str | None = None
    regex: str | None = None

    @classmethod
    def normalize(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"exact": data}
        if isinstance(data, (bool, int, float)):
            # YAML reads `1e3`, `007` or `true` as numbers and booleans; turning them back
            # into text would match "1000.0", "7" or "True". Only the user knows the text.
            raise fail("string_match", f"{describe_value(data)} is not text; match values are strings: "
                       "put it in quotes (e.g. \"true\", \"1e3\")")
        if isinstance(data, dict):
            for key in ("exact", "prefix", "regex"):
                if isinstance(data.get(key), (bool, int, float)):
                    raise fail("string_match", f"{key}: {describe_value(data[key])} is not text; put it in quotes")
        return data

    @model_validator(mode="after")
    def _exactly_one(self) -> StringMatch:
        set_ = [k for k in ("exact", "prefix", "regex") if getattr(self, k) is not None]
        if len(set_) != 1:
            raise fail("string_match", "give exactly one of exact, prefix or regex" + (f" (got {', '.join(set_)})" if set_ else ""))
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise fail("regex", f"{self.regex!r} is not a valid regular expression: {exc}") from None
        return self

    @property
    def kind(self) -> Literal["exact", "prefix", "regex"]:
        return "exact" if self.exact is not None else "prefix" if self.prefix is not None else "regex"

    @property
    def value(self) -> str:
        return self.exact if self.exact is not None else self.prefix if self.prefix is not None else self.regex or ""


def _path_match(value: Any) -> Any:
    if isinstance(value, str) and not value.startswith("/"):
        raise fail("path", f"a path starts with '/', got {value!r}")
    return value


def _methods(value: Any) -> Any:
    value = one_or_many(value)
    if isinstance(value, list):
        for m in value:
            if not isinstance(m, str) or m.upper() not in HTTP_METHODS:
                raise fail("method", f"{m!r} is not an HTTP method; use one of {', '.join(HTTP_METHODS)}")
            if m != m.upper():
                raise fail("method", f"HTTP methods are upper case: write {m.upper()!r}")
        if not value:
            raise fail("method", "give at least one method, or leave the key out for any method")
    return value


Methods = Annotated[list[str], BeforeValidator(_methods)]


def _headers(value: Any) -> Any:
    if isinstance(value, dict):
        for name in value:
            if not isinstance(name, str) or not _HEADER_NAME.match(name):
                lower = f" (write {name.lower()!r})" if isinstance(name, str) and _HEADER_NAME.match(name.lower()) else ""
                raise fail("header", f"header name {name!r} must be lower case letters, digits and '-'{lower}")
    return value


class Match(Strict):
    headers: Annotated[dict[str, StringMatch], BeforeValidator(_headers)] = Field(default_factory=dict)
    path: Annotated[StringMatch, BeforeValidator(_path_match)] | None = None
    method: Methods | None = None

    @model_validator(mode="after")
    def _paths_are_absolute(self) -> Match:
        if self.path is not None and self.path.kind != "regex" and not self.path.value.startswith("/"):
            raise fail("path", f"a path starts with '/', got {self.path.value!r}")
        if not self.headers and self.path is None and not self.method:
            raise fail("match", "an empty match holds for every request; give headers, path or method, or leave `match` out")
        return self


# --- destinations ------------------------------------------------------------------------


class Backend(Strict):
    """One weighted destination: a version of this service, or another service."""

    version: DNSLabel | None = None
    service: Hostname | None = None
    port: PortNumber | None = None
    weight: Annotated[int, positive_int(minimum=0)] = 100

    @model_validator(mode="after")
    def _names_something(self) -> Backend:
        if self.version is None and self.service is None:
            raise fail("backend", "a destination names a `version` of this service or another `service`")
        if self.weight > 100:
            raise fail("weight", f"weight {self.weight} is over 100; weights are percentages that sum to 100")
        return self


def _to(value: Any) -> Any:
    """Normalise every short form of `to` into a list of backends."""
    if isinstance(value, str):
        return [{"version": value, "weight": 100}]
    if isinstance(value, dict):
        if not value:
            raise fail("to", "`to` is empty; name a version, a {version: weight} split, or {service: name}")
        if "service" in value or set(value) <= {"version", "port"}:
            return [{**value, "weight": value.get("weight", 100)}]
        backends = []
        for version, weight in value.items():
            if isinstance(weight, dict):
                raise fail("to", f"in a split write `{version}: <weight>`, a number from 0 to 100")
            backends.append({"version": version, "weight": weight})
        return backends
    if isinstance(value, list):
        if not value:
            raise fail("to", "`to` is an empty list; give at least one destination")
        return value
    raise fail(
        "to",
        f"`to` takes a version (v2), a split ({{v1: 90, v2: 10}}), a service ({{service: name}}) "
        f"or a list of {{version|service, weight}}; got {describe_value(value)}",
    )


def _check_weights(backends: list[Backend]) -> list[Backend]:
    total = sum(b.weight for b in backends)
    if total != 100:
        shown = " + ".join(str(b.weight) for b in backends)
        raise fail("weights", f"weights must sum to 100, these sum to {total} ({shown})")
    keys = [(b.service, b.version, b.port) for b in backends]
    if len(set(keys)) != len(keys):
        raise fail("to", "the same destination is listed twice; merge their weights")
    return backends


To = Annotated[list[Backend], BeforeValidator(_to)]


# --- resilience ---------------------------------------------------------------------------


class RetryBudget(Strict):
    ratio: Annotated[float, Field(gt=0, le=1)]
    min_per_second: Annotated[int, positive_int(minimum=0)] = Field(default=10, alias="minPerSecond")
    ttl: DurationStr | None = None


def _retry_conditions(value: Any) -> Any:
    value = one_or_many(value)
    if isinstance(value, list):
        for c in value:
            if isinstance(c, int) and not isinstance(c, bool) and 100 <= c <= 599:
                continue
            if c not in RETRY_CONDITIONS:
                raise fail(
                    "retry_on",
                    f"{c!r} is not a retry condition; use an HTTP status (e.g. 503) or one of {', '.join(RETRY_CONDITIONS)}",
                )
    return value


class RetryPolicy(Strict):
    """`retries`. `retries: false` gives `enabled=False`: never retry."""

    enabled: bool = True
    attempts: Annotated[int, positive_int(minimum=0)] = 2
    per_try_timeout: DurationStr | None = Field(default=None, alias="perTryTimeout")
    on: Annotated[list[str | int], BeforeValidator(_retry_conditions)] | None = None
    budget: RetryBudget | None = None

    @classmethod
    def normalize(cls, data: Any) -> Any:
        if data is False:
            return {"enabled": False, "attempts": 0}
        if data is True:
            raise fail("retries", "`retries: true` is not a policy; give {attempts: 3, ...}, or `false` for never")
        return data


class FaultDelay(Strict):
    percent: Percent
    duration: DurationStr


class FaultAbort(Strict):
    percent: Percent
    status: Annotated[int, Field(ge=200, le=599)]


class Fault(Strict):
    delay: FaultDelay | None = None
    abort: FaultAbort | None = None


_ROUTE_NAME_MAX = 128


def _route_name(value: Any) -> str:
    # Free text as Linkerd users write ServiceProfile routes ("GET /api/users"); object names that
    # need a DNS label derive one (meshgen.names.route_labels).
    if not isinstance(value, str):
        raise fail("route_name", f"a route name is text such as canary or 'GET /api/users', got {describe_value(value)}")
    if not value.strip() or value != value.strip():
        raise fail("route_name", f"{value!r}: a route name is text without leading or trailing spaces, and not empty")
    if len(value) > _ROUTE_NAME_MAX:
        raise fail("route_name", f"a route name is at most {_ROUTE_NAME_MAX} characters, this one has {len(value)}")
    if any(not ch.isprintable() for ch in value):
        raise fail("route_name", f"{value!r}: a route name is one line of printable text (no tabs or control characters)")
    return value


RouteName = Annotated[str, BeforeValidator(_route_name)]


class Route(Strict):
    name: RouteName | None = None
    match: Match | None = None
    to: To | None = None
    rewrite: str | None = None
    timeout: DurationStr | None = None
    retries: RetryPolicy | None = None
    fault: Fault | None = None

    @field_validator("to")
    @classmethod
    def _weights(cls, v: list[Backend] | None) -> list[Backend] | None:
        return _check_weights(v) if v is not None else v

    @field_validator("rewrite")
    @classmethod
    def _rewrite_is_path(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("/"):
            raise fail("rewrite", f"`rewrite` replaces the matched path prefix and starts with '/', got {v!r}")
        return v


# --- traffic policy ---------------------------------------------------------------------


class ConsistentHash(Strict):
    header: str | None = None
    cookie: str | None = None
    source_ip: bool | None = Field(default=None, alias="sourceIp")
    query_parameter: str | None = Field(default=None, alias="queryParameter")

    @model_validator(mode="after")
    def _one_key(self) -> ConsistentHash:
        set_ = [k for k in ("header", "cookie", "source_ip", "query_parameter") if getattr(self, k) not in (None, False)]
        if len(set_) != 1:
            raise fail("consistent_hash", "hash on exactly one of header, cookie, sourceIp or queryParameter")
        return self


class LoadBalancing(Strict):
    algorithm: Literal["round-robin", "least-request", "random", "consistent-hash"]
    consistent_hash: ConsistentHash | None = Field(default=None, alias="consistentHash")

    @classmethod
    def normalize(cls, data: Any) -> Any:
        if isinstance(data, str):
            if data not in ("round-robin", "least-request", "random"):
                raise fail(
                    "load_balancing",
                    f"{data!r} is not a load-balancing mode; use round-robin, least-request, random "
                    "or {consistentHash: {header: x-user-id}}",
                )
            return {"algorithm": data}
        if isinstance(data, dict) and "algorithm" not in data:
            if "consistentHash" not in data:
                raise fail("load_balancing", unknown_key_message(next(iter(data), ""), {"consistentHash"}))
            return {**data, "algorithm": "consistent-hash"}
        return data


class ConnectionPool(Strict):
    max_connections: Annotated[int, positive_int()] | None = Field(default=None, alias="maxConnections")
    max_pending_requests: Annotated[int, positive_int()] | None = Field(default=None, alias="maxPendingRequests")
    max_requests: Annotated[int, positive_int()] | None = Field(default=None, alias="maxRequests")
    max_requests_per_connection: Annotated[int, positive_int()] | None = Field(default=None, alias="maxRequestsPerConnection")
    h2_upgrade: bool | None = Field(default=None, alias="h2Upgrade")
    connect_timeout: DurationStr | None = Field(default=None, alias="connectTimeout")


class CircuitBreaker(Strict):
    consecutive_5xx_errors: Annotated[int, positive_int(minimum=0)] | None = Field(default=None, alias="consecutive5xxErrors")
    consecutive_gateway_errors: Annotated[int, positive_int(minimum=0)] | None = Field(default=None, alias="consecutiveGatewayErrors")
    interval: DurationStr | None = None
    base_ejection_time: DurationStr | None = Field(default=None, alias="baseEjectionTime")
    max_ejection_percent: Annotated[int, Field(ge=0, le=100)] | None = Field(default=None, alias="maxEjectionPercent")
    min_health_percent: Annotated[int, Field(ge=0, le=100)] | None = Field(default=None, alias="minHealthPercent")
    consecutive_local_origin_failures: Annotated[int, positive_int(minimum=0)] | None = Field(
        default=None, alias="consecutiveLocalOriginFailures"
    )


MTLSMode = Literal["strict", "permissive", "disable"]


class MTLS(Strict):
    mode: MTLSMode = "strict"
    ports: dict[PortNumber, MTLSMode] = Field(default_factory=dict)

    @classmethod
    def normalize(cls, data: Any) -> Any:
        if isinstance(data, str):
            if data not in ("strict", "permissive", "disable"):
                raise fail("mtls", f"{data!r} is not an mTLS mode; use strict, permissive or disable")
            return {"mode": data}
        return data


# --- security -----------------------------------------------------------------------------

_PRINCIPAL = re.compile(r"[^/\s]+/ns/[^/\s]+/sa/[^/\s]+\Z")


def _principals(value: Any) -> Any:
    value = one_or_many(value)
    if isinstance(value, list):
        for p in value:
            if not isinstance(p, str):
                raise fail("from", f"expected service accounts, got {describe_value(p)}")
            parts = p.split("/")
            ok = (len(parts) == 1 and _is_label(p)) or (len(parts) == 2 and all(_is_label(x) or x == "*" for x in parts) and parts[0] != "*") or _PRINCIPAL.match(p)
            if not ok:
                raise fail(
                    "from",
                    f"{p!r} is not a service account; write `sa` (same namespace), `ns/sa`, "
                    "or a full principal `cluster.local/ns/<ns>/sa/<sa>`",
                )
        if not value:
            raise fail("from", "`from: []` allows nobody; leave the rule out instead")
    return value


def _is_label(text: str) -> bool:
    from meshgen.blueprint.base import DNS1123_LABEL

    return bool(DNS1123_LABEL.match(text)) and len(text) <= 63


def _claims(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: one_or_many(v) for k, v in value.items()}
    return value


def _paths(value: Any) -> Any:
    value = one_or_many(value)
    if isinstance(value, list):
        for p in value:
            if not isinstance(p, str) or not p.startswith(("/", "*")):
                raise fail("paths", f"{p!r} is not a path; paths start with '/' and may end in '*' (e.g. /api/v1/*)")
    return value


class AccessRule(Strict):
    from_: Annotated[list[str], BeforeValidator(_principals)] | None = Field(default=None, alias="from")
    methods: Methods | None = None
    paths: Annotated[list[str], BeforeValidator(_paths)] | None = None
    jwt_claims: Annotated[dict[str, list[str]], BeforeValidator(_claims)] | None = Field(default=None, alias="jwtClaims")

    @model_validator(mode="after")
    def _not_empty(self) -> AccessRule:
        if not (self.from_ or self.methods or self.paths or self.jwt_claims):
            raise fail("access", "an empty rule allows everyone; give from, methods, paths or jwtClaims")
        return self


def _access(value: Any) -> Any:
    if value == "deny-all":
        return []
    if isinstance(value, str):
        raise fail("access", f"`access` is a list of rules, `[]` or `deny-all`; got {value!r}")
    return value


class JWT(Strict):
    issuer: str
    jwks_uri: str | None = Field(default=None, alias="jwksUri")
    audiences: Annotated[list[str], BeforeValidator(one_or_many)] | None = None
    forward_original_token: bool | None = Field(default=None, alias="forwardOriginalToken")

    @field_validator("jwks_uri")
    @classmethod
    def _https(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"https?://[^\s/]+", v):
            raise fail("jwks_uri", f"`jwksUri` is an http(s) URL, got {v!r}")
        return v


class RateLimit(Strict):
    requests: Annotated[int, positive_int()]
    per: DurationStr

    @field_validator("per")
    @classmethod
    def _refill_floor(cls, v: Duration) -> Duration:
        if v.seconds < 0.05:
            raise fail("rate_limit", f"`per: {v}` is too short; token buckets refill at most every 50ms (e.g. per: 1s)")
        return v


# --- edge ----------------------------------------------------------------------------------


class IngressTLS(Strict):
    credential_name: DNSLabel = Field(alias="credentialName")
    mode: Literal["simple", "mutual"] = "simple"


def _gateway_ref(value: Any) -> Any:
    if isinstance(value, str):
        parts = value.split("/")
        if len(parts) > 2 or not all(_is_label(p) for p in parts):
            raise fail("gateway", f"{value!r} is not a gateway name; write `name` or `namespace/name`")
    return value


class Ingress(Strict):
    hosts: Annotated[list[IngressHost], Field(min_length=1), BeforeValidator(one_or_many)]
    gateway: Annotated[str, BeforeValidator(_gateway_ref)] | None = None
    tls: IngressTLS | None = None


class Egress(Strict):
    host: Hostname
    port: PortNumber = 443
    protocol: Literal["http", "https", "tls", "tcp", "http2", "grpc"] = "tls"


# --- telemetry -----------------------------------------------------------------------------


class Tracing(Strict):
    provider: str | None = None
    sampling_percent: Percent | None = Field(default=None, alias="samplingPercent")


class AccessLogs(Strict):
    enabled: bool = True
    provider: str | None = None

    @classmethod
    def normalize(cls, data: Any) -> Any:
        return {"enabled": data} if isinstance(data, bool) else data


class Metrics(Strict):
    provider: str | None = None
    enabled: bool = True

    @classmethod
    def normalize(cls, data: Any) -> Any:
        return {"enabled": data} if isinstance(data, bool) else data


class Telemetry(Strict):
    tracing: Tracing | None = None
    access_logs: AccessLogs | None = Field(default=None, alias="accessLogs")
    metrics: Metrics | None = None


class Monitor(Strict):
    port: str | None = None
    interval: DurationStr | None = None
    path: str | None = None

    @classmethod
    def normalize(cls, data: Any) -> Any:
        return {} if data is True else data


class Observability(Strict):
    service_monitor: Monitor | None = Field(default=None, alias="serviceMonitor")
    pod_monitor: Monitor | None = Field(default=None, alias="podMonitor")
    dashboard: bool = False


# --- the three kinds -------------------------------------------------------------------------

_CUSTOM_GATE_NAME = re.compile(r"[A-Za-z][-A-Za-z0-9_]{0,62}\Z")
MAX_GATE_QUERY = 4096


class CustomGate(Strict):
    """A PromQL gate of a canary: its value must lie within [min, max]."""

    name: str
    query: str
    min: float | None = None
    max: float | None = None

    @field_validator("name", mode="before")
    @classmethod
    def _gate_name(cls, v: Any) -> Any:
        if not isinstance(v, str) or not _CUSTOM_GATE_NAME.match(v):
            raise fail("gate_name", f"expected a gate name of letters, digits, '-' and '_' starting with a letter "
                       f"(e.g. queue-depth), got {describe_value(v)}")
        return v

    @field_validator("query", mode="before")
    @classmethod
    def _gate_query(cls, v: Any) -> Any:
        if not isinstance(v, str) or not v.strip():
            raise fail("gate_query", f"expected a PromQL query that gives one number, got {describe_value(v)}")
        if len(v) > MAX_GATE_QUERY:
            raise fail("gate_query", f"the query is {len(v)} characters; at most {MAX_GATE_QUERY} are accepted")
        return v

    @field_validator("min", "max", mode="before")
    @classmethod
    def _bound(cls, v: Any) -> Any:
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise fail("gate_bound", f"expected a number, got {describe_value(v)}")
        return v

    @model_validator(mode="after")
    def _some_bound(self) -> CustomGate:
        if self.min is None and self.max is None:
            raise fail("gate", f"gate {self.name!r} needs `max:` (the value must stay at or below it), `min:`, or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise fail("gate", f"gate {self.name!r}: min {self.min} is above max {self.max}; no value could pass")
        return self


class CanaryGates(Strict):
    success_rate: Percent | None = Field(default=None, alias="successRate")
    latency_p99: DurationStr | None = Field(default=None, alias="latencyP99")
    custom: tuple[CustomGate, ...] = ()

    @model_validator(mode="after")
    def _some_gate(self) -> CanaryGates:
        if self.success_rate is None and self.latency_p99 is None and not self.custom:
            raise fail("gates", "a canary needs at least one gate (successRate, latencyP99 or custom): "
                       "a step only passes on a measurement")
        names = [g.name for g in self.custom]
        dupes = sorted({n for n in names if names.count(n) > 1} | ({"successRate", "latencyP99"} & set(names)))
        if dupes:
            raise fail("gates", f"gate name {dupes[0]!r} is used twice; gate names must be unique")
        return self


def _steps(value: Any) -> Any:
    if not isinstance(value, list) or not value:
        raise fail("steps", f"expected a list of weights of the new version ending at 100, e.g. [5, 25, 50, 100], "
                   f"got {describe_value(value)}")
    for step in value:
        if isinstance(step, bool) or not isinstance(step, int) or not 1 <= step <= 100:
            raise fail("steps", f"each step is a whole percentage from 1 to 100, got {describe_value(step)}")
    if any(b <= a for a, b in itertools.pairwise(value)):
        raise fail("steps", f"steps must increase: {value}")
    if value[-1] != 100:
        raise fail("steps", f"the last step must be 100 (the new version serves everything), got {value[-1]}; "
                   f"e.g. {[*value, 100]}")
    return tuple(value)


class Canary(Strict):
    """Walks the default route from `stable` to `to`, one pull request per step (spec: canary)."""

    stable: DNSLabel
    to: DNSLabel
    steps: Annotated[tuple[int, ...], BeforeValidator(_steps)]
    interval: DurationStr = Duration("5m", 300.0)
    gates: CanaryGates
    min_requests: Annotated[int, positive_int(minimum=1)] = Field(default=20, alias="minRequests")
    failure_limit: Annotated[int, positive_int(minimum=0)] = Field(default=1, alias="failureLimit")
    approval: Literal["auto", "manual"] = "auto"
    rollback: Literal["auto", "manual"] = "auto"

    @model_validator(mode="after")
    def _two_versions(self) -> Canary:
        if self.stable == self.to:
            raise fail("canary", f"stable and to are both {self.stable!r}; `to` names the version being rolled out")
        return self


OVERLAY_FORBIDDEN = frozenset({"kind", "service", "namespace", "environments"})
RESERVED_SERVICE_NAMES = frozenset({"default", "deny-all"})


class ServiceBlueprint(Strict):
    kind: Literal["Service"] = "Service"
    service: DNSLabel
    namespace: DNSLabel
    team: DNSLabel | None = None
    mesh: MeshName | None = None
    ports: Annotated[tuple[Port, ...], Field(min_length=1)] = DEFAULT_PORTS
    workload: Labels | None = None
    service_account: DNSLabel | None = Field(default=None, alias="serviceAccount")
    versions: dict[DNSLabel, Labels] = Field(default_factory=dict)
    routes: tuple[Route, ...] = ()
    timeout: DurationStr | None = None
    retries: RetryPolicy | None = None
    load_balancing: LoadBalancing | None = Field(default=None, alias="loadBalancing")
    connection_pool: ConnectionPool | None = Field(default=None, alias="connectionPool")
    circuit_breaker: CircuitBreaker | None = Field(default=None, alias="circuitBreaker")
    mtls: MTLS | None = None
    access: Annotated[tuple[AccessRule, ...], BeforeValidator(_access)] | None = None
    jwt: JWT | None = None
    rate_limit: RateLimit | None = Field(default=None, alias="rateLimit")
    ingress: Ingress | None = None
    egress: tuple[Egress, ...] = ()
    telemetry: Telemetry | None = None
    observability: Observability | None = None
    canary: Canary | None = None
    environments: dict[str, dict[str, Any] | None] | None = None

    @field_validator("service")
    @classmethod
    def _not_reserved(cls, v: str) -> str:
        if v in RESERVED_SERVICE_NAMES:
            raise fail("service", f"{v!r} is reserved for namespace-wide resources (PeerAuthentication `default`, "
                       "AuthorizationPolicy `deny-all`); choose another service name")
        return v

    @field_validator("versions", mode="before")
    @classmethod
    def _version_short_form(cls, v: Any) -> Any:
        # `versions: [v1, v2]` and `v1: {}` both mean pods labelled version=<name>.
        if isinstance(v, list):
            return {name: {"version": name} for name in v}
        if isinstance(v, dict):
            return {k: ({"version": k} if val in (None, {}) else val) for k, val in v.items()}
        return v

    @field_validator("environments", mode="before")
    @classmethod
    def _overlay_keys(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            return v
        for env, overlay in v.items():
            if overlay is None:
                continue
            if not isinstance(overlay, dict):
                raise fail("overlay", f"environment {env!r}: an overlay is a mapping of top-level keys, got {describe_value(overlay)}")
            for key in overlay:
                if key in OVERLAY_FORBIDDEN:
                    raise fail("overlay", f"environment {env!r}: {key!r} cannot change per environment; "
                               "use a separate blueprint for a different service or namespace")
        # Other keys are validated as a whole blueprint per environment (meshgen.blueprint.loading).
        return v

    @model_validator(mode="after")
    def _cross_field(self) -> ServiceBlueprint:
        names = [p.name for p in self.ports]
        if len(set(names)) != len(names):
            raise fail("ports", "two ports share a name; port names must be unique")
        numbers = [p.port for p in self.ports]
        if len(set(numbers)) != len(numbers):
            raise fail("ports", "two ports share a number; port numbers must be unique")
        route_names = [r.name for r in self.routes if r.name]
        dupes = sorted({n for n in route_names if route_names.count(n) > 1})
        if dupes:
            raise fail("routes", f"route name {dupes[0]!r} is used twice; route names must be unique")
        return self

    # Convenience accessors with the spec's defaults applied.
    @property
    def workload_labels(self) -> dict[str, str]:
        return dict(self.workload) if self.workload else {"app": self.service}


class NamespaceBlueprint(Strict):
    kind: Literal["Namespace"]
    namespace: DNSLabel
    team: DNSLabel | None = None
    mtls: MTLS | None = None
    access: Literal["deny-all"] | None = None


class MeshObservability(Strict):
    service_monitor: Monitor | None = Field(default=None, alias="serviceMonitor")
    pod_monitor: Monitor | None = Field(default=None, alias="podMonitor")
    dashboard: bool = False


class MeshBlueprint(Strict):
    kind: Literal["Mesh"]
    team: DNSLabel | None = None  # required when meshgen.yaml lists teams: one with `mesh: true`
    telemetry: Telemetry | None = None
    mtls: MTLS | None = None
    observability: MeshObservability | None = None


class IngressRoute(Route):
    """A route of kind: Ingress: the syntax of a Service route, but every `to` names a service."""

    @field_validator("to")
    @classmethod
    def _names_services(cls, v: list[Backend] | None) -> list[Backend] | None:
        for b in v or ():
            if b.service is None:
                raise fail("ingress_route", "an Ingress has no versions of its own; name a service: "
                           f"to: {{service: <name>{', version: ' + b.version if b.version else ''}}}")
        return v

    @model_validator(mode="after")
    def _has_destination(self) -> IngressRoute:
        if self.to is None:
            # No implicit default route at the edge: a route without a destination has nowhere to go.
            raise fail("ingress_route", "at the edge every route names its service(s): add "
                       "to: {service: <name>} (a request no route matches is answered 404)")
        return self


class IngressBlueprint(Strict):
    """kind: Ingress: edge routes for some hosts to any services, bound to the gateway only."""

    kind: Literal["Ingress"]
    name: DNSLabel
    namespace: DNSLabel
    team: DNSLabel | None = None
    mesh: MeshName | None = None
    hosts: Annotated[list[IngressHost], Field(min_length=1), BeforeValidator(one_or_many)]
    gateway: Annotated[str, BeforeValidator(_gateway_ref)] | None = None
    tls: IngressTLS | None = None
    routes: tuple[IngressRoute, ...]

    @field_validator("routes")
    @classmethod
    def _unique_names(cls, routes: tuple[IngressRoute, ...]) -> tuple[IngressRoute, ...]:
        if not routes:
            raise fail("routes", "an Ingress needs at least one route, e.g. - {match: {path: {prefix: /}}, to: {service: web}}")
        names = [r.name for r in routes if r.name]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise fail("routes", f"route name {dupes[0]!r} is used twice; route names must be unique")
        return routes

    @field_validator("tls")
    @classmethod
    def _tls_needs_rendered_gateway(cls, v: IngressTLS | None, info: ValidationInfo) -> IngressTLS | None:
        if v is not None and info.data.get("gateway") is not None:
            raise fail("tls", "`tls` configures the gateway meshgen renders; with `gateway:` set TLS on that "
                       "gateway instead, or leave `gateway` out")
        return v

    @property
    def service(self) -> str:
        """The name of its unit (folder, Argo CD Application): the Ingress name."""
        return self.name


Blueprint = ServiceBlueprint | NamespaceBlueprint | MeshBlueprint | IngressBlueprint
KINDS: dict[str, type[Strict]] = {
    "Service": ServiceBlueprint,
    "Namespace": NamespaceBlueprint,
    "Mesh": MeshBlueprint,
    "Ingress": IngressBlueprint,
}
