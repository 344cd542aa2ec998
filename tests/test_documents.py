"""Parsing policy files and checking them against a JSON Schema (pure)."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from canaryguard.domain.canonical import (
    MAX_DEPTH,
    canonical_json,
    check_json_compatible,
    content_hash,
)
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


def test_a_document_nested_deeper_than_the_limit_is_refused_with_its_path() -> None:
    deep: list[object] = []
    for _ in range(MAX_DEPTH + 1):
        deep = [deep]
    with pytest.raises(InvalidInput, match=f"/a/0/0.*nested deeper than {MAX_DEPTH}"):
        check_json_compatible({"a": deep})


def test_a_document_nested_to_the_limit_is_accepted() -> None:
    deep: list[object] = []
    for _ in range(MAX_DEPTH - 1):
        deep = [deep]
    check_json_compatible({"a": deep})


@pytest.mark.parametrize("document", [{"a": "x\ud800"}, {"k\udfff": 1}])
def test_text_with_a_lone_surrogate_is_refused(document: dict[str, object]) -> None:
    with pytest.raises(InvalidInput, match="lone UTF-16 surrogate"):
        check_json_compatible(document)


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"$ref": "#/nope"}, r"\$ref '#/nope' at / points to nothing"),
        ({"properties": {"a": {"$ref": "#/$defs/b"}}}, r"at /properties/a points to nothing"),
        ({"$ref": "https://example.com/s.json"}, "refers outside itself"),
        ({"$ref": "#"}, "go round in a circle"),
    ],
)
def test_a_schema_whose_references_cannot_be_followed_is_refused(
    schema: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        check_schema(schema)


def test_a_recursive_schema_through_defs_is_accepted() -> None:
    tree = {"type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#"}}}}
    check_schema(tree)
    validate_document({"kids": [{"kids": []}]}, tree, policy="p")


def test_a_property_named_ref_is_not_read_as_a_reference() -> None:
    check_schema({"type": "object", "properties": {"$ref": {"type": "string"}}})


def test_a_stored_schema_that_cannot_be_followed_fails_a_publish_as_bad_input() -> None:
    with pytest.raises(InvalidInput, match="JSON Schema cannot be used"):
        validate_document({"a": 1}, {"$ref": "#/nope"}, policy="p")
