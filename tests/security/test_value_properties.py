"""Property tests of the value parsers hostile input reaches first: whatever the text, a value in
range or a clean, positioned refusal; never another exception (a traceback) and never a value
the target cannot represent."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic_core import PydanticCustomError

from meshgen.blueprint.base import GO_DURATION_MAX_SECONDS, EXCERPT_CHARS, excerpt, parse_duration
from meshgen.blueprint.yamlsource import MAX_DEPTH, YAMLSourceError, load_document

INT64 = 2**63 - 1
CASE = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                database=None)

numbers = st.integers(min_value=0, max_value=10**40).map(str)
units = st.sampled_from(["h", "m", "s", "ms"])
duration_text = st.one_of(
    st.lists(st.tuples(numbers, units), min_size=1, max_size=4).map(lambda parts: "".join(n + u for n, u in parts)),
    st.text(max_size=30),
)


@given(text=duration_text)
@CASE
def test_a_duration_parses_into_range_or_is_refused_with_the_limit(text: str) -> None:
    try:
        d = parse_duration(text)
    except PydanticCustomError as exc:
        message = exc.message()
        assert "duration" in message or "longer than zero" in message or "2562047h" in message, message
        return
    assert 0 < d.seconds <= GO_DURATION_MAX_SECONDS
    assert str(d) == text.strip()


@given(digits=st.integers(min_value=1, max_value=6000), sign=st.sampled_from(["", "-", "+"]),
       base=st.sampled_from(["", "0x", "0o"]))
@CASE
def test_any_whole_number_is_an_int64_or_a_positioned_error(digits: int, sign: str, base: str) -> None:
    body = {"": "7", "0x": "f", "0o": "7"}[base] * digits
    text = f"a:\n  b: {sign if not base else ''}{base}{body}\n"
    try:
        doc = load_document(text)
    except YAMLSourceError as exc:
        assert (exc.line, exc.column) == (2, 6) and "too large" in exc.message
        assert len(exc.message) < 200
        return
    value = doc.data["a"]["b"]
    assert isinstance(value, int) and -INT64 - 1 <= value <= INT64


@given(depth=st.integers(min_value=1, max_value=999), flow=st.booleans())
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)
def test_nesting_is_read_up_to_the_limit_and_refused_beyond(depth: int, flow: bool) -> None:
    if flow:
        text = "a: " + "[" * depth + "]" * depth + "\n"
    else:  # one-space indentation keeps 999 levels under the 256 KiB file limit
        depth = min(depth, 600)
        text = "".join(" " * i + f"k{i}:\n" for i in range(depth)) + " " * depth + "x: 1\n"
    try:
        load_document(text)
    except YAMLSourceError as exc:
        assert "nest more than" in exc.message or "maximum nesting depth" in exc.message
        assert depth + 1 > MAX_DEPTH  # refused only past the limit
        return
    assert depth + 1 <= MAX_DEPTH


@given(value=st.text(max_size=500))
@CASE
def test_an_excerpt_is_short_escaped_and_one_line(value: str) -> None:
    shown = excerpt(value)
    assert "\n" not in shown and "\r" not in shown
    assert len(shown) <= 4 * EXCERPT_CHARS + 30  # repr escapes may lengthen each kept character
    if len(value) <= EXCERPT_CHARS:
        assert shown == repr(value)


def test_the_limits_are_the_documented_ones() -> None:
    assert parse_duration("2562047h").seconds == 2562047 * 3600
    with pytest.raises(PydanticCustomError, match="the largest duration is 2562047h"):
        parse_duration("2562048h")
    assert load_document(f"a: {INT64}").data == {"a": INT64}
    with pytest.raises(YAMLSourceError, match="too large"):
        load_document(f"a: {INT64 + 1}")
