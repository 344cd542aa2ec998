"""Canonical JSON and content hashes.

A policy version's identity is the sha256 of its canonical JSON: keys sorted, no insignificant
white space, UTF-8, no NaN or infinities. Two documents with the same meaning (key order, spacing,
source format) therefore get the same hash, which is what makes publishing idempotent.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from canaryguard.domain.errors import InvalidInput

__all__ = [
    "MAX_DEPTH",
    "JsonObject",
    "canonical_json",
    "check_json_compatible",
    "content_hash",
    "is_unicode",
]

JsonObject = dict[str, Any]


def canonical_json(value: Any) -> str:
    """Serialise ``value`` the one canonical way (sorted keys, compact, UTF-8, finite numbers)."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def content_hash(document: JsonObject) -> str:
    """``sha256:<hex>`` of the canonical JSON of ``document``."""
    digest = hashlib.sha256(canonical_json(document).encode("utf-8")).hexdigest()
    return f"sha256:{digest}"


# nesting deeper than this is refused: pydantic serialises at most about 255 levels, and a
# document it cannot serialise could be stored but never shown, snapshotted or rolled back from
MAX_DEPTH = 64


def check_json_compatible(value: Any, path: str = "", depth: int = 0) -> None:
    """Refuse anything JSON cannot carry exactly, naming where it is.

    YAML and TOML parse dates, times and non-string keys that JSON has no form for; silently
    turning them into strings would make the hash depend on the parser, so they are refused. So
    are strings that are not Unicode text (a lone UTF-16 surrogate, from a ``\\ud800`` escape:
    UTF-8 has no form for it) and nesting deeper than ``MAX_DEPTH``.
    """
    if depth > MAX_DEPTH:
        raise InvalidInput(f"{path or '/'}: nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, bool | int):
        return
    if isinstance(value, str):
        _check_text(value, path)
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInput(f"{path or '/'}: {value} is not a finite number")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidInput(f"{path or '/'}: key {key!r} is not a string")
            _check_text(key, path or "/")
            check_json_compatible(item, f"{path}/{_escape(key)}", depth + 1)
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            check_json_compatible(item, f"{path}/{index}", depth + 1)
        return
    raise InvalidInput(
        f"{path or '/'}: a {type(value).__name__} value has no JSON form; quote it as a string"
    )


def is_unicode(text: str) -> bool:
    """Whether ``text`` is Unicode text UTF-8 can carry: no lone UTF-16 surrogate (JSON's
    ``\\ud800`` escape gives one), which no store, snapshot or response could encode."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_text(text: str, path: str) -> None:
    if not is_unicode(text):
        raise InvalidInput(
            f"{path or '/'}: text holds a lone UTF-16 surrogate, which is not Unicode text"
        )


def _escape(key: str) -> str:
    """JSON Pointer escaping (RFC 6901)."""
    return key.replace("~", "~0").replace("/", "~1")
