"""`oxiflow plugins list|describe`: the oxis in the registry (built-in and third-party)."""

from __future__ import annotations

import enum
import types
import typing
from typing import TYPE_CHECKING, Annotated, Any

import typer

from oxiflow.cli import output
from oxiflow.cli.options import JsonOpt

if TYPE_CHECKING:
    from oxiflow.oxi import OxiSpec

app = typer.Typer(help="The oxis (plugins) oxiflow can run: built-in and installed third-party packages.")


def type_name(annotation: Any) -> str:
    """A readable type: `str | list[str]`, `'auto' | 'gzip'`, `fail | skip | dlq`."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(type_name(a) for a in args)}]" if args else name
    if annotation is type(None):
        return "None"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return " | ".join(str(m.value) for m in annotation)
    return getattr(annotation, "__name__", str(annotation).replace("typing.", ""))


def _default(field: Any) -> Any:
    if field.is_required():
        return None
    if field.default_factory is not None:
        return field.default_factory()
    value = field.default
    return value.value if isinstance(value, enum.Enum) else value


def spec_fields(spec: OxiSpec) -> list[dict[str, Any]]:
    from oxiflow.oxi import field_docs

    docs = field_docs(spec.config)
    out = []
    for name, field in spec.config.model_fields.items():
        entry: dict[str, Any] = {
            "name": name,
            "type": type_name(field.annotation),
            "required": field.is_required(),
            "default": _default(field),
            "description": docs[name],
        }
        if field.alias and field.alias != name:
            entry["alias"] = field.alias
        out.append(entry)
    return out


def describe_spec(spec: OxiSpec, origin: str) -> dict[str, Any]:
    return {
        "name": spec.name,
        "kind": spec.kind,
        "summary": spec.summary,
        "origin": origin,
        "status": spec.status,
        "since": spec.since,
        "inputs": {"min": spec.min_inputs, "max": spec.max_inputs},
        "config": spec_fields(spec),
        "example": spec.example,
    }


@app.command("list")
def list_(json_out: JsonOpt = False) -> None:
    """List every oxi with its kind, summary and the package that provides it.

    Example: oxiflow plugins list --json
    """
    from oxiflow.registry import default_registry

    registry = default_registry()
    rows = []
    for name in registry.names():
        row: dict[str, Any] = {"name": name, "origin": registry.origin(name)}
        try:
            spec = registry.get(name)
            row.update(kind=spec.kind, summary=spec.summary, status=spec.status)
        except Exception as exc:  # a broken plugin must not hide the others
            row.update(kind="?", summary="", status="broken", error=str(exc))
        rows.append(row)
    if json_out:
        output.print_json(rows)
        return
    wn = max((len(r["name"]) for r in rows), default=4)
    wo = max((len(r["origin"]) for r in rows), default=6)
    for r in rows:
        text = r["summary"] if "error" not in r else f"BROKEN: {r['error']}"
        print(f"{r['name']:<{wn}}  {r['kind']:<9}  {r['origin']:<{wo}}  {text}".rstrip())


@app.command()
def describe(
    name: Annotated[str, typer.Argument(help="An oxi name, e.g. read_csv.")],
    json_out: JsonOpt = False,
) -> None:
    """Describe one oxi: its config keys with types, defaults and docs, and an example.

    Example: oxiflow plugins describe read_csv
    """
    from oxiflow.registry import PluginLoadError, UnknownOxiError, default_registry

    registry = default_registry()
    try:
        spec = registry.get(name)
    except UnknownOxiError as exc:
        output.err(f"error: {exc}")
        raise typer.Exit(2) from None
    except PluginLoadError as exc:
        output.err(f"error: {exc}")
        raise typer.Exit(1) from None
    data = describe_spec(spec, registry.origin(name))
    if json_out:
        output.print_json(data)
        return
    ins = data["inputs"]
    hi = "n" if ins["max"] is None else ins["max"]
    span = f"{ins['min']}" if ins["min"] == ins["max"] else f"{ins['min']}..{hi}"
    lines = [
        f"{spec.name} ({spec.kind}, from {data['origin']}, {spec.status} since {spec.since}, inputs: {span})",
        f"  {spec.summary}",
        "",
        "config:",
    ]
    for f in data["config"]:
        default = "required" if f["required"] else f"default {f['default']!r}"
        alias = f", alias {f['alias']}" if f.get("alias") else ""
        lines.append(f"  {f['name']}: {f['type']}  ({default}{alias})")
        for doc_line in f["description"].splitlines():
            lines.append(f"      {doc_line}")
    if spec.example:
        lines += ["", "example:", *(f"  {line}" for line in spec.example.splitlines())]
    print("\n".join(lines))
