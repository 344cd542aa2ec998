"""Publishing policy versions (immutable, content-hashed, optionally schema-checked)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

from canaryguard.domain.canonical import JsonObject, check_json_compatible, content_hash
from canaryguard.domain.documents import (
    check_schema,
    format_for_filename,
    parse_document,
    validate_document,
)
from canaryguard.domain.errors import AlreadyExists, InvalidInput, NotFound
from canaryguard.domain.events import PolicyPublished
from canaryguard.domain.models import PolicyVersion
from canaryguard.engine.ports import Transaction
from canaryguard.engine.unit import Ports, check_text, unit_of_work

__all__ = ["MAX_DOCUMENT_BYTES", "PolicyService", "parse_ref"]

_POLICY_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
MAX_DOCUMENT_BYTES = 1_000_000


def check_policy_name(name: str) -> str:
    if not isinstance(name, str) or not _POLICY_NAME.match(name):
        raise InvalidInput(
            f"policy name {name!r} is not valid: lower-case letters, digits, '.', '_' and '-', "
            "at most 128 characters"
        )
    return name


def parse_ref(ref: str) -> tuple[str, str | None]:
    """``name@version`` -> (name, version); ``name`` alone -> (name, None) for the latest."""
    if not isinstance(ref, str):
        raise InvalidInput(
            f"a policy reference is text like name@version, not {type(ref).__name__}"
        )
    name, sep, version = ref.partition("@")
    check_policy_name(name)
    if sep and not _VERSION.match(version):
        raise InvalidInput(f"version {version!r} in {ref!r} is not valid")
    return name, (version if sep else None)


def _read_policy_file(path: Path) -> str:
    try:
        size = path.stat().st_size
        if size > MAX_DOCUMENT_BYTES:
            raise InvalidInput(
                f"{path}: {size} bytes; a policy document is at most {MAX_DOCUMENT_BYTES}"
            )
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise InvalidInput(f"{path}: no such file") from exc
    except IsADirectoryError as exc:
        raise InvalidInput(f"{path}: is a directory, not a policy file") from exc
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{path}: not UTF-8 text") from exc


async def resolve(tx: Transaction, ref: str) -> PolicyVersion:
    """The version ``ref`` names (the latest one when no version is given)."""
    name, version = parse_ref(ref)
    found = await (
        tx.policies.get(name, version) if version is not None else tx.policies.latest(name)
    )
    if found is None:
        what = f"{name}@{version}" if version is not None else f"any version of {name}"
        raise NotFound(f"there is no policy {what}")
    return found


class PolicyService:
    """Publish, read and schema-check policy versions."""

    def __init__(self, ports: Ports) -> None:
        self._ports = ports

    async def publish(
        self,
        name: str,
        document: JsonObject,
        *,
        actor: str,
        version: str | None = None,
        description: str = "",
    ) -> PolicyVersion:
        """Publish ``document`` as a new version of ``name``.

        Identical content (by canonical hash) returns the version that already has it, so a
        repeated push is harmless. A given ``version`` label that exists with other content is
        refused: versions are immutable.
        """
        check_policy_name(name)
        description = check_text(description, "the description")
        if not isinstance(document, dict):
            raise InvalidInput(f"a policy document is an object, not {type(document).__name__}")
        check_json_compatible(document)
        if version is not None and not (isinstance(version, str) and _VERSION.match(version)):
            raise InvalidInput(
                f"version {version!r} is not valid: letters, digits, '.', '_', '+', '-', at most 64"
            )
        digest = content_hash(document)
        async with unit_of_work(self._ports, actor) as unit:
            existing = await unit.tx.policies.find_by_hash(name, digest)
            if existing is not None:
                return existing
            schema = await unit.tx.policies.get_schema(name)
            if schema is not None:
                validate_document(document, schema, policy=name)
            latest = await unit.tx.policies.latest(name)
            seq = latest.seq + 1 if latest is not None else 1
            label = version if version is not None else str(seq)
            if await unit.tx.policies.get(name, label) is not None:
                raise AlreadyExists(
                    f"{name}@{label} already exists with other content; versions are immutable, "
                    "publish under a new version"
                )
            published = PolicyVersion(
                name=name,
                version=label,
                seq=seq,
                content_hash=digest,
                document=document,
                description=description,
                created_at=unit.now,
                created_by=unit.actor,
            )
            await unit.tx.policies.insert(published)
            await unit.emit(
                PolicyPublished(policy=str(published.ref), content_hash=digest),
                deployment=None,
                revision=None,
            )
            await unit.audit(
                "policy.publish",
                details={"policy": str(published.ref), "content_hash": digest},
            )
        return published

    async def publish_file(
        self,
        path: Path,
        *,
        name: str,
        actor: str,
        version: str | None = None,
        description: str = "",
    ) -> PolicyVersion:
        """Publish a JSON, YAML or TOML file (the format follows the file's suffix)."""
        fmt = format_for_filename(path.name)
        text = await asyncio.to_thread(_read_policy_file, path)
        document = parse_document(text, fmt, source=str(path))
        return await self.publish(
            name, document, actor=actor, version=version, description=description
        )

    async def get(self, ref: str) -> PolicyVersion:
        async with self._ports.store.read() as tx:
            return await resolve(tx, ref)

    async def versions(self, name: str) -> list[PolicyVersion]:
        check_policy_name(name)
        async with self._ports.store.read() as tx:
            found = await tx.policies.versions(name)
        if not found:
            raise NotFound(f"there is no policy named {name!r}")
        return found

    async def names(self) -> list[str]:
        async with self._ports.store.read() as tx:
            return await tx.policies.names()

    async def set_schema(self, name: str, schema: Any, *, actor: str) -> None:
        """Register the JSON Schema that every later version of ``name`` must satisfy."""
        check_policy_name(name)
        checked = check_schema(schema)
        async with unit_of_work(self._ports, actor) as unit:
            await unit.tx.policies.set_schema(name, checked, now=unit.now, actor=unit.actor)
            await unit.audit(
                "policy.schema.set", details={"policy": name, "schema_hash": content_hash(checked)}
            )

    async def get_schema(self, name: str) -> JsonObject | None:
        check_policy_name(name)
        async with self._ports.store.read() as tx:
            return await tx.policies.get_schema(name)
