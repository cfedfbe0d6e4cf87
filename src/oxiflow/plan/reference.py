"""Render the oxi reference (docs/oxis.md) from the registrations: one source of truth."""

from __future__ import annotations

from typing import Any

from oxiflow.registry import Registry, default_registry


def type_label(annotation: Any) -> str:
    """`fail | skip | dlq` for Literals and enums, `str | None` for unions, the name otherwise."""
    import enum
    import typing

    if typing.get_origin(annotation) is typing.Literal:
        return " | ".join(str(v) for v in typing.get_args(annotation))
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return " | ".join(str(m.value) for m in annotation)
    name = getattr(annotation, "__name__", None)
    if name and not typing.get_args(annotation):
        return name
    return str(annotation).replace("typing.", "")


def field_rows(config: Any) -> list[dict[str, str]]:
    """Name, type, default and description of every config field of an oxi."""
    from oxiflow.oxi import field_docs

    docs = field_docs(config)
    rows = []
    for name, info in config.model_fields.items():
        type_name = type_label(info.annotation)
        if info.is_required():
            default = "required"
        elif info.default_factory is not None:
            default = repr(info.default_factory())
        else:
            default = repr(getattr(info.default, "value", info.default))
        rows.append(
            {
                "name": info.alias or name,
                "type": type_name,
                "default": default,
                "description": docs[name].strip(),
            }
        )
    return rows


def render_reference(registry: Registry | None = None) -> str:
    registry = registry or default_registry()
    specs = [registry.get(name) for name in registry.names() if registry.origin(name) == "oxiflow"]
    out = [
        "# Oxi reference",
        "",
        "Generated from the plugin registrations by `python -m oxiflow.plan.reference > docs/oxis.md`",
        "(a test checks it is current). `oxiflow plugins describe NAME` shows the same for any plugin.",
        "",
    ]
    for kind, title in (("source", "Sources"), ("transform", "Transforms"), ("sink", "Sinks")):
        out += [f"## {title}", ""]
        for spec in sorted((s for s in specs if s.kind == kind), key=lambda s: s.name):
            out += [f"### `{spec.name}`", "", spec.summary, ""]
            out += ["| key | type | default | meaning |", "|---|---|---|---|"]
            for row in field_rows(spec.config):
                desc = row["description"].replace("|", "\\|").replace("\n", " ")
                typ = row["type"].replace("|", "\\|")
                default = row["default"].replace("|", "\\|")
                out.append(f"| `{row['name']}` | `{typ}` | `{default}` | {desc} |")
            if spec.example:
                out += ["", "```yaml", spec.example.rstrip(), "```"]
            out.append("")
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    print(render_reference(), end="")
