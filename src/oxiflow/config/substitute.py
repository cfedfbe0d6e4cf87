"""``${VAR}``, ``${VAR:-default}`` and ``${steps.ID.metadata.KEY}`` substitution.

Variables are resolved before validation (so types can be checked); step references are left
in place and resolved by the engine when the referencing step starts. ``$${`` escapes a literal
``${``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from oxiflow.config.yaml_positions import Path

# ${NAME}, ${NAME:-default}; NAME may contain dots for steps.ID.metadata.KEY
_REF = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_.\-]*)(?::-([^}]*))?\}")
STEP_REF = re.compile(r"^steps\.([A-Za-z0-9_\-]+)\.metadata\.([A-Za-z0-9_\-.]+)$")


class MissingVariable(Exception):
    def __init__(self, name: str, path: Path) -> None:
        super().__init__(name)
        self.name = name
        self.path = path


def substitute_string(text: str, lookup: Callable[[str], str | None], path: Path = ()) -> str:
    """Replace variables in one string. Step references are kept verbatim."""

    def repl(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "$${"  # unescaped at the end, after all substitutions
        name, default = match.group(1), match.group(2)
        if name.startswith("steps."):
            return match.group(0)
        value = lookup(name)
        if value is None:
            if default is not None:
                return default
            raise MissingVariable(name, path)
        return value

    return _REF.sub(repl, text)


def unescape(text: str) -> str:
    return text.replace("$${", "${")


def substitute(
    data: Any, lookup: Callable[[str], str | None], path: Path = (), missing: list[MissingVariable] | None = None
) -> Any:
    """Substitute variables in every string of a nested structure, collecting missing names."""
    if isinstance(data, str):
        try:
            out = substitute_string(data, lookup, path)
        except MissingVariable as exc:
            if missing is None:
                raise
            missing.append(exc)
            return data
        return out if "${steps." in out else unescape(out)
    if isinstance(data, list):
        return [substitute(v, lookup, (*path, i), missing) for i, v in enumerate(data)]
    if isinstance(data, dict):
        return {k: substitute(v, lookup, (*path, k), missing) for k, v in data.items()}
    return data


def step_references(data: Any) -> list[tuple[str, str]]:
    """All ``(step_id, key)`` pairs referenced by ``${steps.ID.metadata.KEY}`` in a structure."""
    refs: list[tuple[str, str]] = []
    if isinstance(data, str):
        for match in _REF.finditer(data):
            if match.group(1) and (m := STEP_REF.match(match.group(1))):
                refs.append((m.group(1), m.group(2)))
    elif isinstance(data, list):
        for v in data:
            refs.extend(step_references(v))
    elif isinstance(data, dict):
        for v in data.values():
            refs.extend(step_references(v))
    return refs


def step_reference_sites(data: Any, path: Path = ()) -> list[tuple[Path, str]]:
    """Every ``${steps....}`` written in a structure, well-formed or not: (path of the string, the name
    inside the braces), so validation can check the shape (``steps.ID.metadata.KEY``) and point at it."""
    out: list[tuple[Path, str]] = []
    if isinstance(data, str):
        for match in _REF.finditer(data):
            name = match.group(1)
            if name and (name == "steps" or name.startswith("steps.")):
                out.append((path, name))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out.extend(step_reference_sites(v, (*path, i)))
    elif isinstance(data, dict):
        for k, v in data.items():
            out.extend(step_reference_sites(v, (*path, k)))
    return out


def resolve_step_references(data: Any, metadata: Mapping[str, Mapping[str, Any]]) -> Any:
    """Replace ``${steps.ID.metadata.KEY}`` with values reported by earlier steps."""
    if isinstance(data, str):

        def repl(match: re.Match[str]) -> str:
            if match.group(0) == "$${":
                return "$${"
            m = STEP_REF.match(match.group(1) or "")
            if not m:
                return match.group(0)
            step_id, key = m.groups()
            value = metadata.get(step_id, {}).get(key)
            if value is None:
                if match.group(2) is not None:
                    return match.group(2)
                raise KeyError(f"step {step_id!r} reported no metadata {key!r}")
            return str(value)

        return unescape(_REF.sub(repl, data))
    if isinstance(data, list):
        return [resolve_step_references(v, metadata) for v in data]
    if isinstance(data, dict):
        return {k: resolve_step_references(v, metadata) for k, v in data.items()}
    return data
