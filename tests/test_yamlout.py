"""The emitter never lets a value change a document's structure: every string comes back identical.

Checked against two independent parsers: PyYAML (YAML 1.1, like Kubernetes' own
sigs.k8s.io/yaml) and ruamel.yaml (YAML 1.2).
"""

from __future__ import annotations

import io
from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from meshgen.render.yamlout import dump

NASTY = [
    ": {{ }} # & * ! % @", "`backtick`", "'single'", '"double"', "yes", "no", "on", "off", "y", "~", "null",
    "0x1F", "1e3", "1_000", "0o17", ".5", "+1", "-", "---", "...", "- a", "? x", "a: b", "a #b", "{{ x }}",
    "{% if %}", "[a]", "{a: 1}", "|", ">", "=", "<<", "2024-01-01", "12:30", "\t", " lead", "trail ", "",
    "multi\nline", "multi\nline\n", "\u2028", "\x85", "\ufeff", "ünïcødé ✓", "%TAG", "!tag", "&anchor", "*alias",
    ".inf", ".NaN", "True", "FALSE", "0", "007", "1.", "@at", "a\\b", "line\r\nbreak",
]
texts = st.one_of(st.sampled_from(NASTY), st.text(max_size=40))
scalars = st.one_of(texts, st.integers(min_value=-(2**53), max_value=2**53), st.booleans(), st.none(),
                    st.floats(allow_nan=False, allow_infinity=False, width=32))
docs = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(texts, children, max_size=4)),
    max_leaves=25,
)

_ruamel = YAML(typ="safe", pure=True)


def _load_both(text: str) -> tuple[Any, Any]:
    return yaml.safe_load(text), _ruamel.load(io.StringIO(text))


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(texts, docs, min_size=1, max_size=5))
def test_round_trip_is_identity(doc: dict[str, Any]) -> None:
    text = dump(doc)
    one, two = _load_both(text)
    assert one == doc, text
    assert two == doc, text


@settings(max_examples=300, deadline=None)
@given(texts)
def test_a_hostile_string_stays_one_string(value: str) -> None:
    doc = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "labels": {"k": value}},
           "data": {value or "k": value}}
    for parsed in _load_both(dump(doc)):
        assert list(parsed) == ["apiVersion", "kind", "metadata", "data"]
        assert parsed["metadata"] == {"name": "x", "labels": {"k": value}}
        assert parsed["data"] == {value or "k": value}


def test_keys_keep_the_order_people_write() -> None:
    text = dump({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"}, "spec": {"b": 1, "a": 2}})
    assert text == "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\nspec:\n  b: 1\n  a: 2\n"


def test_lists_of_mappings_read_like_kubectl_output() -> None:
    text = dump({"http": [{"name": "default", "route": [{"destination": {"host": "a"}, "weight": 90}]}]})
    assert text == (
        "http:\n- name: default\n  route:\n  - destination:\n      host: a\n    weight: 90\n"
    )


def test_multiline_strings_are_literal_blocks() -> None:
    text = dump({"data": {"d.json": "{\n  \"a\": 1\n}\n"}})
    assert text == 'data:\n  d.json: |\n    {\n      "a": 1\n    }\n'
