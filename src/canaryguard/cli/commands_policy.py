"""``canaryguard policy ...``"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from canaryguard.cli.client import EXIT_USAGE, CliError
from canaryguard.cli.context import ctx_of
from canaryguard.domain.documents import format_for_filename, parse_document
from canaryguard.domain.errors import InvalidInput

__all__ = ["app"]

app = typer.Typer(help="Publish and inspect policy versions.", no_args_is_help=True)


def _read(path: Path) -> dict[str, object]:
    """Parse the file here, so a malformed one is refused before anything is sent."""
    try:
        return parse_document(
            path.read_text(encoding="utf-8"), format_for_filename(path.name), source=str(path)
        )
    except OSError as exc:
        raise CliError(f"{path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise CliError(f"{path}: not UTF-8 text") from exc
    except InvalidInput as exc:
        raise CliError(str(exc)) from exc


def _split_ref(ref: str) -> tuple[str, str | None]:
    name, sep, version = ref.partition("@")
    return name, (version if sep else None)


@app.command()
def push(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="JSON, YAML or TOML policy document")],
    name: Annotated[str, typer.Option("--name", help="policy name")],
    version: Annotated[
        str | None, typer.Option("--version", help="version label (default: next number)")
    ] = None,
    description: Annotated[str, typer.Option("--description")] = "",
) -> None:
    """Publish FILE as a new version of a policy (identical content returns the existing one)."""
    c = ctx_of(ctx)
    body = {"document": _read(file), "version": version, "description": description}
    published = c.api.post(f"/policies/{name}/versions", body)
    c.out.result(
        published,
        f"published {published['name']}@{published['version']} ({published['content_hash'][:19]})",
    )


@app.command("list")
def list_(ctx: typer.Context) -> None:
    """Every policy with its latest version."""
    c = ctx_of(ctx)
    policies = c.api.get("/policies")
    c.out.table(
        policies,
        "policies",
        ("name", "latest", "versions"),
        ((p["name"], p["latest_version"], p["versions"]) for p in policies),
    )


@app.command()
def show(
    ctx: typer.Context, ref: Annotated[str, typer.Argument(help="name or name@version")]
) -> None:
    """One version in full (the latest when no version is given)."""
    c = ctx_of(ctx)
    name, version = _split_ref(ref)
    if version is None:
        found = c.api.get(f"/policies/{name}/versions")[-1]
    else:
        found = c.api.get(f"/policies/{name}/versions/{version}")
    if c.out.as_json:
        c.out.json(found)
        return
    c.out.console.print(
        f"[bold]{found['name']}@{found['version']}[/bold]  {found['content_hash']}\n"
        f"published {found['created_at']} by {found['created_by']}  {found['description']}"
    )
    c.out.console.print_json(data=found["document"])


@app.command()
def diff(ctx: typer.Context, old: str, new: str) -> None:
    """What changed between two versions of one policy: `policy diff sec@1 sec@2`."""
    c = ctx_of(ctx)
    (name, a), (other, b) = _split_ref(old), _split_ref(new)
    if a is None or b is None or name != other:
        raise CliError("compare two versions of one policy: policy diff NAME@A NAME@B", EXIT_USAGE)
    changes = c.api.get(f"/policies/{name}/diff", **{"from": a, "to": b})
    c.out.table(
        changes,
        f"{old} -> {new}",
        ("path", "change", "old", "new"),
        ((x["path"], x["kind"], x.get("old"), x.get("new")) for x in changes),
    )


schema_app = typer.Typer(
    help="JSON Schemas that policy versions must satisfy.", no_args_is_help=True
)
app.add_typer(schema_app, name="schema")


@schema_app.command("set")
def schema_set(ctx: typer.Context, name: str, file: Path) -> None:
    """Register FILE (a JSON Schema) for policy NAME."""
    c = ctx_of(ctx)
    c.api.request("PUT", f"/policies/{name}/schema", json={"schema": _read(file)})
    c.out.result({"policy": name, "schema": str(file)}, f"schema for {name} set from {file}")


@schema_app.command("show")
def schema_show(ctx: typer.Context, name: str) -> None:
    c = ctx_of(ctx)
    schema = c.api.get(f"/policies/{name}/schema")
    if c.out.as_json:
        c.out.json(schema)
    else:
        c.out.console.print_json(data=schema)
