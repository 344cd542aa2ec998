"""Publishing policy versions through the store (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest

from canaryguard.domain.errors import AlreadyExists, InvalidInput, NotFound, SchemaViolation
from canaryguard.engine.app import CanaryGuard
from tests.helpers import ACTOR, V1, V2

EXAMPLES = resources.files("canaryguard") / "examples"


async def test_first_version_is_numbered_one(app: CanaryGuard) -> None:
    published = await app.policies.publish("sec", V1, actor=ACTOR)
    assert (published.version, published.seq, published.created_by) == ("1", 1, ACTOR)


async def test_identical_content_returns_the_existing_version(app: CanaryGuard) -> None:
    first = await app.policies.publish("sec", V1, actor=ACTOR)
    again = await app.policies.publish("sec", dict(reversed(list(V1.items()))), actor=ACTOR)
    assert again == first
    assert [v.version for v in await app.policies.versions("sec")] == ["1"]


async def test_versions_are_immutable(app: CanaryGuard) -> None:
    await app.policies.publish("sec", V1, actor=ACTOR, version="2026.1")
    with pytest.raises(AlreadyExists, match="versions are immutable"):
        await app.policies.publish("sec", V2, actor=ACTOR, version="2026.1")
    assert (await app.policies.get("sec@2026.1")).document == V1


async def test_published_document_reads_back_exactly(app: CanaryGuard) -> None:
    document = {"a": [1, 2.5, None, True], "nested": {"é": "ü", "big": 2**53}}
    await app.policies.publish("sec", document, actor=ACTOR)
    assert (await app.policies.get("sec@1")).document == document


async def test_name_without_version_resolves_to_the_latest(app: CanaryGuard) -> None:
    await app.policies.publish("sec", V1, actor=ACTOR)
    await app.policies.publish("sec", V2, actor=ACTOR)
    assert (await app.policies.get("sec")).version == "2"


async def test_unknown_version_is_not_found(app: CanaryGuard) -> None:
    with pytest.raises(NotFound, match="no policy sec@9"):
        await app.policies.get("sec@9")


async def test_bad_policy_name_is_refused(app: CanaryGuard) -> None:
    with pytest.raises(InvalidInput, match="policy name 'Bad Name'"):
        await app.policies.publish("Bad Name", V1, actor=ACTOR)


async def test_publish_files_in_each_format(app: CanaryGuard) -> None:
    with resources.as_file(EXAMPLES / "security-v1.yaml") as yaml_path:
        v1 = await app.policies.publish_file(yaml_path, name="sec", actor=ACTOR)
    with resources.as_file(EXAMPLES / "security-v2.toml") as toml_path:
        v2 = await app.policies.publish_file(toml_path, name="sec", actor=ACTOR)
    assert v1.document["security"]["tls"]["min_version"] == "1.2"
    assert v2.document["security"]["tls"]["min_version"] == "1.3"


async def test_schema_violation_is_refused_and_stores_nothing(app: CanaryGuard) -> None:
    schema = json.loads((EXAMPLES / "security-policy.schema.json").read_text())
    await app.policies.set_schema("sec", schema, actor=ACTOR)
    with pytest.raises(SchemaViolation, match="/security/rate_limiting/requests_per_minute"):
        await app.policies.publish(
            "sec", json.loads((EXAMPLES / "security-invalid.json").read_text()), actor=ACTOR
        )
    assert await app.policies.names() == []


async def test_malformed_file_is_refused_and_stores_nothing(
    app: CanaryGuard, tmp_path: Path
) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"a": ')
    with pytest.raises(InvalidInput, match=r"broken\.json: invalid JSON"):
        await app.policies.publish_file(path, name="sec", actor=ACTOR)
    assert await app.policies.names() == []


async def test_missing_file_is_refused(app: CanaryGuard, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="no such file"):
        await app.policies.publish_file(tmp_path / "nope.yaml", name="sec", actor=ACTOR)


async def test_oversized_file_is_refused(app: CanaryGuard, tmp_path: Path) -> None:
    path = tmp_path / "huge.json"
    path.write_text(json.dumps({"blob": "x" * 1_000_001}))
    with pytest.raises(InvalidInput, match=r"at most 1000000"):
        await app.policies.publish_file(path, name="sec", actor=ACTOR)


async def test_publishing_is_audited_and_evented(app: CanaryGuard) -> None:
    await app.policies.publish("sec", V1, actor=ACTOR)
    (entry,) = await app.audit.list()
    (event,) = await app.events.read()
    assert (entry.action, entry.details["policy"]) == ("policy.publish", "sec@1")
    assert event.type == "io.canaryguard.policy.published"


async def test_missing_actor_is_refused(app: CanaryGuard) -> None:
    with pytest.raises(InvalidInput, match="names its actor"):
        await app.policies.publish("sec", V1, actor="  ")
