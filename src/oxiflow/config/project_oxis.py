"""Oxis that come with a project: ``oxis:`` and ``settings.oxis_dir`` in ``oxiflow.yaml``.

Oxide Flow's project file lists where its oxis come from (``oxis: {NAME: {source: ..., version: ...,
description: ...}}``) and names a folder for the project's own (``settings.oxis_dir``, default
``./oxis``). oxiflow gives both a meaning:

- ``source: builtin`` (or ``oxiflow``) is the installed oxis: nothing to load;
- ``source: some.module`` imports that module, ``source: path/to/file.py`` (or a folder of ``.py``
  files, relative to the project root) loads the file(s); every class decorated with
  :func:`oxiflow.oxi.oxi` found there is registered for the project's pipelines;
- every ``*.py`` file directly in ``oxis_dir`` is loaded the same way (a missing folder is fine).

Installed plugins (the ``oxiflow.oxis`` entry points) stay available; a project oxi with the name of
an installed one is an error rather than a silent override. Loading runs the project's own code, as
``oxiflow run`` of its pipelines would.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, ValidationError

from oxiflow.errors import ConfigError, ConfigIssue

if TYPE_CHECKING:
    from oxiflow.config.load import Project
    from oxiflow.registry import Registry

BUILTIN = ("builtin", "oxiflow")


class OxiSourceModel(BaseModel):
    """One entry of the project's ``oxis:`` block (Oxide Flow's shape)."""

    model_config = ConfigDict(extra="forbid")
    source: str = "builtin"
    """`builtin`, a Python module name, or a `.py` file / folder relative to the project root."""
    version: str | None = None
    """Informational (the version the project was written against)."""
    description: str | None = None
    """Informational."""


_cache: dict[tuple[Path, str], Registry] = {}


def project_registry(project: Project, issues: list[ConfigIssue]) -> Registry | None:
    """The default registry plus the project's own oxis; None when the project brings none. Problems
    (a module that fails to import, an unknown shape) are added to ``issues``."""
    from oxiflow.registry import Registry

    sources = _sources(project, issues)
    if not sources:
        return None
    key = (project.root, repr(sources))
    if key in _cache:
        return _cache[key]
    registry = Registry()
    for label, target in sources:
        try:
            for spec in _load(target, project.root):
                if spec.name in registry and registry.origin(spec.name) != "registered in code":
                    raise ConfigError(
                        f"project oxi {spec.name!r} ({label}) has the name of an installed oxi",
                        hint="rename it: project oxis cannot replace installed ones",
                    )
                registry.register(spec)
        except ConfigError as exc:
            issues.extend(ConfigIssue(i.message, file=i.file or label, hint=i.hint) for i in exc.issues)
        except Exception as exc:  # the project's code failed to import: say which file and why
            issues.append(ConfigIssue(f"could not load project oxis from {label}: {exc}", file=label))
    _cache[key] = registry
    return registry


def _sources(project: Project, issues: list[ConfigIssue]) -> list[tuple[str, str]]:
    """(label for messages, module name or path) of everything the project file asks to load."""
    out: list[tuple[str, str]] = []
    declared = project.model.oxis
    if declared:
        if not isinstance(declared, dict):
            issues.append(
                ConfigIssue(
                    "oxis: must be a mapping of NAME: {source: ..., version: ..., description: ...}",
                    file=str(project.root / "oxiflow.yaml"),
                    hint="e.g. oxis: {core: {source: builtin}, mine: {source: oxis/mine.py}}",
                )
            )
        else:
            for name, entry in declared.items():
                try:
                    model = OxiSourceModel.model_validate(entry or {})
                except ValidationError as exc:
                    problem = exc.errors()[0]["msg"]
                    issues.append(ConfigIssue(f"oxis.{name}: {problem}", file=str(project.root / "oxiflow.yaml")))
                    continue
                if model.source not in BUILTIN:
                    out.append((f"oxis.{name} ({model.source})", model.source))
    folder = project.root / project.model.settings.oxis_dir
    if folder.is_dir():
        out.extend((str(p), str(p)) for p in sorted(folder.glob("*.py")) if not p.name.startswith("_"))
    return out


def _load(target: str, root: Path) -> list[Any]:
    """The oxi specs defined in a module, a .py file or a folder of them."""
    from oxiflow.oxi import OxiSpec

    path = Path(target) if Path(target).is_absolute() else root / target
    if target.endswith(".py") or path.is_dir() or "/" in target:
        files = sorted(path.glob("*.py")) if path.is_dir() else [path]
        modules = [_import_file(f) for f in files]
    else:
        modules = [importlib.import_module(target)]
    specs = []
    for module in modules:
        for value in vars(module).values():
            spec = getattr(value, "spec", None)
            if isinstance(spec, OxiSpec) and getattr(value, "__module__", None) == module.__name__:
                specs.append(spec)
    return specs


def _import_file(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"no such file: {path}", hint="check the path (relative to the project root)")
    name = f"oxiflow_project_oxis.{path.stem}_{abs(hash(str(path.resolve())))}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
