"""Shared pieces of the blueprint models: the strict base class and value types.

Every model forbids unknown keys, but instead of pydantic's bare "extra inputs are not
permitted" it names the key, the nearest valid one and the full list, and still validates
the rest of the mapping so that one run reports every mistake.
"""

from __future__ import annotations

import difflib
import re
from typing import Annotated, Any, ClassVar, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError, core_schema


def fail(kind: str, message: str) -> PydanticCustomError:
    """A validation error whose message is shown as it is (no context, so braces stay literal)."""
    return PydanticCustomError(kind, message)


class Strict(BaseModel):
    """Base of every blueprint model: frozen, alias-only, unknown keys reported helpfully."""

    model_config = ConfigDict(
        extra="ignore",  # unknown keys are reported by _reject_unknown_keys, with suggestions
        frozen=True,
        populate_by_name=False,
        validate_by_alias=True,
        validate_by_name=False,
        serialize_by_alias=True,
        hide_input_in_errors=True,
        json_schema_extra={"additionalProperties": False},
    )
    _accepted: ClassVar[frozenset[str] | None] = None

    @classmethod
    def accepted_keys(cls) -> frozenset[str]:
        """The YAML keys this model accepts (its field aliases)."""
        keys = cls.__dict__.get("_accepted_cache")
        if keys is None:
            keys = frozenset(f.alias or name for name, f in cls.model_fields.items())
            cls._accepted_cache = keys  # type: ignore[attr-defined]
        return keys

    @classmethod
    def normalize(cls, data: Any) -> Any:
        """Turn a short form (`mtls: strict`) into the long form; subclasses override."""
        return data

    @model_validator(mode="wrap")
    @classmethod
    def _reject_unknown_keys(cls, data: Any, handler: Any) -> Any:
        data = cls.normalize(data)
        if not isinstance(data, dict):
            if isinstance(data, BaseModel):
                return handler(data)
            raise fail("mapping_type", f"expected a mapping with keys {_listing(cls.accepted_keys())}, "
                       f"got {describe_value(data)}")
        accepted = cls.accepted_keys()
        unknown = [k for k in data if k not in accepted]
        if not unknown:
            return handler(data)
        errors: list[InitErrorDetails] = []
        result = None
        try:
            result = handler({k: v for k, v in data.items() if k in accepted})
        except ValidationError as exc:
            errors.extend(_reraise_details(exc))
        for key in unknown:
            errors.append(
                InitErrorDetails(
                    type=fail("unknown_key", unknown_key_message(key, accepted)),
                    loc=(key if isinstance(key, (str, int)) else str(key),),
                    input=data[key],
                )
            )
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        return result


def unknown_key_message(key: Any, accepted: frozenset[str] | set[str]) -> str:
    """`unknown key 'retires', did you mean 'retries'? valid keys: ...`"""
    guess = difflib.get_close_matches(str(key), sorted(accepted), n=1, cutoff=0.6)
    hint = f", did you mean {guess[0]!r}?" if guess else ""
    return f"unknown key {excerpt(key)}{hint} (valid keys: {_listing(accepted)})"


def _listing(keys: frozenset[str] | set[str]) -> str:
    return ", ".join(sorted(keys))


def _reraise_details(exc: ValidationError) -> list[InitErrorDetails]:
    details: list[InitErrorDetails] = []
    for err in exc.errors(include_url=False):
        details.append(
            InitErrorDetails(type=fail(err["type"], err["msg"]), loc=err["loc"], input=err.get("input"))
        )
    return details


EXCERPT_CHARS = 40
"""The most of a user's value an error message shows: enough to find it, too little to leak a
file's content (a symlinked secret, a pasted token) into a log or a job record."""


def excerpt(value: Any) -> str:
    """A user's text for an error message: quoted, escaped (no newline or control character can
    forge a line of output), and cut to EXCERPT_CHARS."""
    text = str(value)
    if len(text) > EXCERPT_CHARS:
        return f"{text[:EXCERPT_CHARS - 3] + '...'!r} ({len(text)} characters)"
    return repr(text)


def describe_value(value: Any) -> str:
    """A short, safe description of a user value for error messages."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {excerpt(value)}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


# --- value types -------------------------------------------------------------------------

DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")


def _dns_label(value: Any) -> str:
    if not isinstance(value, str):
        raise fail("dns_label", f"expected a DNS-1123 label (e.g. api-service), got {describe_value(value)}")
    if len(value) > 63 or not DNS1123_LABEL.match(value):
        raise fail(
            "dns_label",
            f"{excerpt(value)} is not a DNS-1123 label: use at most 63 lowercase letters, digits and '-', "
            "starting and ending with a letter or digit (e.g. api-service)",
        )
    return value


DNSLabel = Annotated[str, BeforeValidator(_dns_label)]
"""A Kubernetes name that is also safe as a single path segment (no `/`, no `..`)."""

_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.\d+)?\Z")


def _version(value: Any) -> str:
    if isinstance(value, float):
        # `version: 1.24` unquoted reads as a number; 1.2 vs 1.20 is ambiguous, so insist.
        raise fail("version", f"write the version as a quoted string, e.g. \"{value}\" (1.2 and 1.20 differ)")
    if not isinstance(value, str) or not _VERSION.match(value):
        raise fail("version", f"expected a version such as \"1.24\", got {describe_value(value)}")
    return value


Version = Annotated[str, BeforeValidator(_version)]
"""A mesh release as meshgen.yaml writes it: "1.24", "2.18" (quoted; a number would lose its zeros)."""


def version_tuple(text: str) -> tuple[int, int]:
    m = _VERSION.match(text)
    assert m is not None  # validated on load
    return int(m.group(1)), int(m.group(2))


DURATION_PATTERN = r"^(\d+h)?(\d+m)?(\d+(\.\d+)?s)?(\d+ms)?$"
_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+)ms)?\Z")


class Duration(str):
    """A duration as users write it (`500ms`, `3s`, `10m`, `1h`, `1m30s`), kept as text.

    `.seconds` gives the value; renderers format it the way their mesh wants.
    """

    seconds: float

    def __new__(cls, text: str, seconds: float) -> Self:
        obj = super().__new__(cls, text)
        obj.seconds = seconds
        return obj

    def __reduce__(self) -> tuple[Any, ...]:
        return (Duration, (str(self), self.seconds))

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            parse_duration,
            json_schema_input_schema=core_schema.str_schema(pattern=DURATION_PATTERN),
            serialization=core_schema.plain_serializer_function_ser_schema(str),
        )


GO_DURATION_MAX_SECONDS = (2**63 - 1) / 1e9
"""The longest Go time.Duration (int64 nanoseconds, about 292 years). Every blueprint duration is
read by Go: Istio parses its CRD durations with time.ParseDuration (and validates them with CEL
`duration()`), Linkerd's controllers and Prometheus too. A longer value would be refused by the
cluster or wrap around, so meshgen refuses it here."""

GO_DURATION_MAX_TEXT = "2562047h"
"""The largest whole-hour duration under GO_DURATION_MAX_SECONDS, as users write it."""

_MAX_DURATION_DIGITS = 12  # per number in a duration; longer is past every limit anyway


def parse_duration(value: Any) -> Duration:
    """A blueprint duration (`500ms`, `3s`, `10m`, `1h`, `1m30s`): the one parser meshgen has.

    Refuses zero and anything longer than GO_DURATION_MAX_SECONDS, naming the largest value that
    works."""
    if isinstance(value, Duration):
        return value
    if isinstance(value, bool) or not isinstance(value, str):
        extra = f" (write {value}s for seconds)" if isinstance(value, (int, float)) and not isinstance(value, bool) else ""
        raise fail(
            "duration",
            f"expected a duration string such as 500ms, 3s, 10m or 1h, got {describe_value(value)}{extra}",
        )
    text = value.strip()
    m = _DURATION.match(text)
    if not text or m is None or not any(m.groups()):
        raise fail(
            "duration",
            f"{excerpt(value)} is not a duration; write a number with a unit: ms, s, m or h (e.g. 500ms, 3s, 10m, 1h)",
        )
    too_long = f"{excerpt(text)} is longer than the mesh can represent; the largest duration is {GO_DURATION_MAX_TEXT}"
    h, mi, s, ms = m.groups()
    if any(len(part.split(".")[0]) > _MAX_DURATION_DIGITS for part in (h, mi, s, ms) if part):
        raise fail("duration", f"{too_long} (about 292 years, Go's time.Duration)")
    seconds = int(h or 0) * 3600 + int(mi or 0) * 60 + float(s or 0) + int(ms or 0) / 1000
    if seconds <= 0:
        raise fail("duration", f"{excerpt(text)} must be longer than zero")
    if seconds > GO_DURATION_MAX_SECONDS:
        raise fail("duration", f"{too_long} (about 292 years, Go's time.Duration)")
    return Duration(text, seconds)


DurationStr = Duration


def format_duration(seconds: float) -> str:
    """Canonical duration text: whole hours, minutes or seconds where exact, else ms."""
    ms = round(seconds * 1000)
    if ms % 3_600_000 == 0:
        return f"{ms // 3_600_000}h"
    if ms % 60_000 == 0:
        return f"{ms // 60_000}m"
    if ms % 1000 == 0:
        return f"{ms // 1000}s"
    return f"{ms}ms"


def _percent(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise fail("percent", f"expected a percentage, a number from 0 to 100, got {describe_value(value)}")
    if not 0 <= value <= 100:
        raise fail("percent", f"{value} is not a percentage; use a number from 0 to 100")
    return value


Percent = Annotated[float, BeforeValidator(_percent)]


def positive_int(name: str = "value", minimum: int = 1) -> Any:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail("int", f"expected a whole number >= {minimum}, got {describe_value(value)}")
        if value < minimum:
            raise fail("int", f"{value} is too small; use a whole number >= {minimum}")
        return value

    return BeforeValidator(check)


def one_or_many(value: Any) -> Any:
    """`GET` and `[GET, POST]` mean the same: a list."""
    return [value] if isinstance(value, (str, int)) and not isinstance(value, bool) else value
