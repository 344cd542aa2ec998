"""Generated references: the CLI (from the Typer app) and the REST API (from OpenAPI).

``scripts/gen-docs`` writes them to docs/cli.md and docs/api.md; a test regenerates them and
fails when the committed files differ, so the references cannot drift from the code.
"""

from __future__ import annotations

from typing import Any

import typer

__all__ = ["api_reference", "cli_reference"]


# Typer carries its own copy of click, so its objects are read by their attributes here.
Command = Any


def _walk(command: Command, path: list[str]) -> list[tuple[list[str], Command]]:
    found = [(path, command)]
    subcommands = getattr(command, "commands", None) or {}
    for name in sorted(subcommands):
        found.extend(_walk(subcommands[name], [*path, name]))
    return found


def _param_line(param: Any) -> str:
    if param.param_type_name == "argument":
        required = "" if param.required else " (optional)"
        label = (param.metavar or param.name or "").upper()
        help_text = f": {param.help}" if param.help else ""
        return f"- `{label}`{required}{help_text}"
    names = ", ".join(f"`{opt}`" for opt in [*param.opts, *param.secondary_opts])
    text = f"- {names}"
    if param.help:
        text += f": {param.help}"
    if param.envvar:
        text += f" (env `{param.envvar}`)"
    default = param.default
    if not param.is_flag and default not in (None, (), []) and not callable(default):
        text += f" [default: {default}]"
    return text


def cli_reference(app: typer.Typer) -> str:
    """Markdown for every command of ``app``: usage, help, arguments and options."""
    root = typer.main.get_command(app)
    lines = [
        "# CLI reference",
        "",
        "Generated from the CLI itself by `scripts/gen-docs`; do not edit.",
        "",
    ]
    for path, command in _walk(root, ["canaryguard"]):
        if command.hidden:
            continue
        ctx = command.context_class(command, info_name=" ".join(path))
        usage = " ".join([*path, *command.collect_usage_pieces(ctx)])
        lines += [f"## `{' '.join(path)}`", "", f"    {usage}", ""]
        if command.help:
            lines += [command.help.replace("\b\n", "").strip(), ""]
        if command.epilog:
            lines += [command.epilog, ""]
        params = [p for p in command.params if p.name != "help" and not getattr(p, "hidden", False)]
        if params:
            lines += [_param_line(p) for p in params] + [""]
    return "\n".join(lines).rstrip() + "\n"


def api_reference(spec: dict[str, Any]) -> str:
    """Markdown for every operation of an OpenAPI document, grouped by tag."""
    lines = [
        "# REST API reference",
        "",
        "Generated from `/openapi.json` by `scripts/gen-docs`; do not edit. Every call under",
        "`/api/v1` needs `Authorization: Bearer <token>`; errors are RFC 9457 problem details.",
        "",
    ]
    by_tag: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            tag = (operation.get("tags") or ["other"])[0]
            by_tag.setdefault(tag, []).append((method.upper(), path, operation))
    for tag in [t["name"] for t in spec.get("tags", [])] + sorted(
        set(by_tag) - {t["name"] for t in spec.get("tags", [])}
    ):
        if tag not in by_tag:
            continue
        lines += [f"## {tag}", ""]
        for method, path, operation in by_tag[tag]:
            roles = ", ".join(operation.get("x-canaryguard-roles", []))
            lines += [f"### `{method} {path}`", "", operation.get("summary", "")]
            if operation.get("description"):
                lines += ["", operation["description"].strip()]
            lines += ["", f"Roles: {roles}."]
            params = operation.get("parameters", [])
            if params:
                lines += [
                    "",
                    "Parameters: " + ", ".join(f"`{p['name']}` ({p['in']})" for p in params) + ".",
                ]
            body = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
            if body:
                schema = body.get("schema", {})
                refs = [schema, *schema.get("anyOf", [])]  # an optional body is anyOf [ref, null]
                named = [s["$ref"].rsplit("/", 1)[-1] for s in refs if "$ref" in s]
                name = named[0] if named else schema.get("title", "JSON")
                lines += ["", f"Body: `{name}`."]
            codes = ", ".join(sorted(operation.get("responses", {})))
            lines += ["", f"Responses: {codes}.", ""]
    return "\n".join(lines).rstrip() + "\n"
