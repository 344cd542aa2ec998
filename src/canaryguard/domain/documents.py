"""Policy documents: parsing JSON, YAML or TOML text and checking it against a JSON Schema."""

from __future__ import annotations

import json
import tomllib
from typing import Any, Literal

import jsonschema
import referencing.exceptions
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from canaryguard.domain.canonical import JsonObject, check_json_compatible
from canaryguard.domain.errors import InvalidInput, SchemaViolation

__all__ = [
    "DocumentFormat",
    "check_schema",
    "format_for_filename",
    "parse_document",
    "validate_document",
]

DocumentFormat = Literal["json", "yaml", "toml"]

_SUFFIXES: dict[str, DocumentFormat] = {
    ".json": "json",
    ".yaml": "yaml",
    ".yml": "yaml",
    ".toml": "toml",
}
MAX_PROBLEMS_IN_MESSAGE = 5


def format_for_filename(filename: str) -> DocumentFormat:
    """The document format a file name implies, or an error naming the accepted suffixes."""
    lowered = filename.lower()
    for suffix, fmt in _SUFFIXES.items():
        if lowered.endswith(suffix):
            return fmt
    accepted = ", ".join(sorted(_SUFFIXES))
    raise InvalidInput(f"{filename}: unknown file type; use one of {accepted}")


def parse_document(text: str, fmt: DocumentFormat, *, source: str = "<document>") -> JsonObject:
    """Parse ``text`` as ``fmt`` into a JSON object, with errors that name the source and line."""
    try:
        value: Any
        if fmt == "json":
            value = json.loads(text)
        elif fmt == "yaml":
            value = yaml.safe_load(text)
        else:
            value = tomllib.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{source}: invalid JSON at line {exc.lineno}: {exc.msg}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise InvalidInput(f"{source}: invalid YAML{where}: {problem}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"{source}: invalid TOML: {exc}") from exc
    if not isinstance(value, dict):
        raise InvalidInput(
            f"{source}: a policy document must be an object at the top, not {_kind(value)}"
        )
    try:
        check_json_compatible(value)
    except InvalidInput as exc:
        raise InvalidInput(f"{source}: {exc}") from exc
    return value


def check_schema(schema: Any) -> JsonObject:
    """Check that ``schema`` is itself a valid JSON Schema (draft 2020-12) object."""
    if not isinstance(schema, dict):
        raise InvalidInput(f"a JSON Schema must be an object, not {_kind(schema)}")
    check_json_compatible(schema)
    validator_cls = jsonschema.validators.validator_for(
        schema, default=jsonschema.Draft202012Validator
    )
    try:
        validator_cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/" + "/".join(str(part) for part in exc.absolute_path)
        raise InvalidInput(f"the JSON Schema itself is invalid at {where}: {exc.message}") from exc
    _check_references(schema)
    return schema


def _check_references(schema: JsonObject) -> None:
    """Refuse a schema whose ``$ref`` cannot be followed: every publish against it would fail.

    canaryguard fetches nothing, so a reference must point into the schema itself; and a
    schema that refers to itself where it stands (``{"$ref": "#"}``) never ends."""
    nested_ids = any(where != "" for where, _ in _keywords(schema, "$id"))
    resource = Resource.from_contents(schema, default_specification=DRAFT202012)
    resolver = Registry().with_resource(_ROOT, resource).resolver(base_uri=_ROOT)
    for where, ref in _keywords(schema, "$ref"):
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise InvalidInput(
                f"the JSON Schema refers outside itself at {where or '/'} ({ref!r}); canaryguard "
                "fetches no schema: put it under $defs and refer to it as '#/$defs/…'"
            )
        if nested_ids:
            continue  # a nested $id moves the base of the references below it
        try:
            resolver.lookup(ref)
        except referencing.exceptions.Unresolvable as exc:
            raise InvalidInput(
                f"the JSON Schema's $ref {ref!r} at {where or '/'} points to nothing in it"
            ) from exc
    for probe in _PROBES:
        try:
            _problems(probe, schema)
        except _UNUSABLE as exc:
            raise InvalidInput(f"the JSON Schema cannot be used: {_unusable(exc)}") from exc


_ROOT = "urn:canaryguard:schema"
# one of each JSON type: a schema that cannot judge these (it refers to itself where it stands)
# is refused when it is set rather than at every publish
_PROBES: tuple[Any, ...] = ({}, [], "", 0, 0.5, True, None)
_UNUSABLE = (RecursionError, referencing.exceptions.Unresolvable)


def _unusable(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "its references go round in a circle without end"
    return f"a $ref points to nothing in it ({exc})"


def _keywords(
    value: Any, keyword: str, where: str = "", *, names: bool = False
) -> list[tuple[str, Any]]:
    """Every ``keyword`` in ``value``, with the JSON Pointer of the object holding it
    (``names``: ``value``'s keys are names of subschemas, not keywords)."""
    found: list[tuple[str, Any]] = []
    if isinstance(value, dict):
        if keyword in value and not names:
            found.append((where, value[keyword]))
        for key, item in value.items():
            if key in _DATA and not names:
                continue  # data, not schema
            named = key in _NAMED and not names
            found += _keywords(item, keyword, f"{where}/{key}", names=named)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _keywords(item, keyword, f"{where}/{index}")
    return found


_DATA = frozenset({"const", "enum", "default", "examples"})
_NAMED = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"})


def validate_document(document: JsonObject, schema: JsonObject, *, policy: str) -> None:
    """Raise :class:`SchemaViolation` listing every failed rule as ``path: rule: message``
    (``InvalidInput`` when the schema cannot be followed: one set before such schemas were
    refused)."""
    try:
        problems = _problems(document, schema)
    except _UNUSABLE as exc:
        raise InvalidInput(
            f"policy {policy!r}'s JSON Schema cannot be used: {_unusable(exc)}; set a "
            "corrected one with PUT /policies/{name}/schema"
        ) from exc
    if problems:
        shown = "; ".join(f"{path}: {msg}" for path, msg in problems[:MAX_PROBLEMS_IN_MESSAGE])
        more = len(problems) - MAX_PROBLEMS_IN_MESSAGE
        suffix = f" (and {more} more)" if more > 0 else ""
        raise SchemaViolation(
            f"policy {policy!r} does not match its schema: {shown}{suffix}", problems
        )


def _problems(document: Any, schema: JsonObject) -> list[tuple[str, str]]:
    validator_cls = jsonschema.validators.validator_for(
        schema, default=jsonschema.Draft202012Validator
    )
    validator = validator_cls(schema)
    problems: list[tuple[str, str]] = []
    for error in sorted(
        validator.iter_errors(document), key=lambda e: list(map(str, e.absolute_path))
    ):
        pointer = "/" + "/".join(str(part) for part in error.absolute_path)
        problems.append((pointer, f"{error.validator}: {error.message}"))
    return problems


def _kind(value: Any) -> str:
    if value is None:
        return "empty"
    return {
        list: "a list",
        str: "a string",
        int: "a number",
        float: "a number",
        bool: "a boolean",
    }.get(type(value), type(value).__name__)
