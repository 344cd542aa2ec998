"""The generated references match the code; run scripts/gen-docs after changing the CLI or API."""

from __future__ import annotations

from pathlib import Path

from canaryguard.api.app import create_app
from canaryguard.cli.app import app
from canaryguard.cli.reference import api_reference, cli_reference

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_cli_reference_is_current() -> None:
    assert (DOCS / "cli.md").read_text() == cli_reference(app), "run scripts/gen-docs"


def test_api_reference_is_current() -> None:
    spec = create_app(None).openapi()  # type: ignore[arg-type]  # only the route table is read
    assert (DOCS / "api.md").read_text() == api_reference(spec), "run scripts/gen-docs"


def test_cli_reference_lists_every_command_of_the_contract() -> None:
    text = (DOCS / "cli.md").read_text()
    for command in (
        "serve", "policy push", "policy list", "policy show", "policy diff", "policy schema set",
        "deploy create", "deploy canary", "deploy split", "deploy promote", "deploy abort", "status",
        "snapshot list", "snapshot show", "snapshot create", "snapshot diff", "rollback",
        "config show", "config set", "events", "audit list", "audit verify", "keys rotate",
        "token create", "token list", "token revoke",
    ):  # fmt: skip
        assert f"## `canaryguard {command}`" in text, command


def test_the_cli_default_data_dir_is_the_library_default() -> None:
    from canaryguard.cli.app import DEFAULT_DATA_DIR as CLI_DEFAULT  # noqa: PLC0415
    from canaryguard.wiring import DEFAULT_DATA_DIR  # noqa: PLC0415

    assert CLI_DEFAULT == DEFAULT_DATA_DIR
