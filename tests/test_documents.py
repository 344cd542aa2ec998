"""Parsing policy files and checking them against a JSON Schema (pure)."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from canaryguard.domain.canonical import canonical_json, content_hash
from canaryguard.domain.documents import (
    check_schema,
    format_for_filename,
    parse_document,
    validate_document,
)
from canaryguard.domain.errors import InvalidInput, SchemaViolation

EXAMPLES = resources.files("canaryguard") / "examples"


def test_same_meaning_has_the_same_hash_across_formats() -> None:
    as_json = parse_document('{"b": 1, "a": [true, null]}', "json")
    as_yaml = parse_document("a: [true, null]\nb: 1\n", "yaml")
    as_toml = parse_document("b = 1\na = [true]\n", "toml")
    assert content_hash(as_json) == content_hash(as_yaml)
    assert content_hash(as_toml) != content_hash(as_json)  # TOML has no null: different content


def test_canonical_json_sorts_keys_and_drops_spaces() -> None:
    assert canonical_json({"b": 1, "a": {"d": 2, "c": "é"}}) == '{"a":{"c":"é","d":2},"b":1}'


def test_invalid_json_names_the_line() -> None:
    with pytest.raises(InvalidInput, match=r"p\.json: invalid JSON at line 2"):
        parse_document('{\n"a": }', "json", source="p.json")


def test_invalid_yaml_names_the_line() -> None:
    with pytest.raises(InvalidInput, match=r"invalid YAML at line 2"):
        parse_document("a: 1\nb: : c\nd: 2\n", "yaml", source="p.yaml")


def test_invalid_toml_is_refused() -> None:
    with pytest.raises(InvalidInput, match="invalid TOML"):
        parse_document("a = = 1", "toml")


def test_top_level_list_is_refused() -> None:
    with pytest.raises(InvalidInput, match="must be an object at the top, not a list"):
        parse_document("[1, 2]", "json")


def test_empty_yaml_is_refused() -> None:
    with pytest.raises(InvalidInput, match="not empty"):
        parse_document("", "yaml")


def test_yaml_date_is_refused_with_its_path() -> None:
    with pytest.raises(InvalidInput, match="/rollout/when: a date value has no JSON form"):
        parse_document("rollout:\n  when: 2026-01-01\n", "yaml")


def test_unknown_suffix_is_refused() -> None:
    with pytest.raises(InvalidInput, match="unknown file type"):
        format_for_filename("policy.ini")


def test_schema_violation_names_path_and_rule() -> None:
    schema = json.loads((EXAMPLES / "security-policy.schema.json").read_text())
    document = json.loads((EXAMPLES / "security-invalid.json").read_text())
    with pytest.raises(SchemaViolation) as caught:
        validate_document(document, schema, policy="sec")
    problems = dict(caught.value.problems)
    assert problems["/security/rate_limiting/requests_per_minute"].startswith("minimum:")
    assert problems["/security/tls/min_version"].startswith("enum:")
    assert problems["/authentication/methods"].startswith("minItems:")


def test_example_policies_satisfy_the_example_schema() -> None:
    schema = json.loads((EXAMPLES / "security-policy.schema.json").read_text())
    for name in ("security-v1.yaml", "security-v2.toml"):
        text = (EXAMPLES / name).read_text()
        validate_document(parse_document(text, format_for_filename(name)), schema, policy="sec")


def test_invalid_schema_is_refused() -> None:
    with pytest.raises(InvalidInput, match="JSON Schema itself is invalid"):
        check_schema({"type": "no-such-type"})


def test_non_object_schema_is_refused() -> None:
    with pytest.raises(InvalidInput, match="must be an object"):
        check_schema(["type"])
