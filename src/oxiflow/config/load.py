"""Read a pipeline file, apply variables, and validate it into a :class:`Plan`.

Every problem is collected (YAML, types, unknown keys and oxis, missing variables, bad
references, cycles) and raised together as one :class:`ConfigError`, each with file, line,
column and a "did you mean" where one fits.

Variable precedence, highest first: ``--var`` on the command line, the process environment,
the pipeline's ``environment`` block, the project's ``environment`` block.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from oxiflow.config.model import PipelineModel, PipelineSettings, ProjectModel, ProjectSettings, StepModel
from oxiflow.config.substitute import MissingVariable, substitute, substitute_string
from oxiflow.config.yaml_positions import Positions, load_yaml
from oxiflow.errors import ConfigError, ConfigIssue

PROJECT_FILE = "oxiflow.yaml"
DEFAULT_PIPELINE = "pipeline"  # `oxiflow run` without a name runs pipelines/pipeline.yaml (Oxide Flow's default)


@dataclass
class FixableIssue(ConfigIssue):
    """An issue with one unambiguous repair: ``old`` written at the issue's position becomes ``new``
    (a misspelt key or oxi name, a malformed reference). `oxiflow pipeline test --fix` applies it."""

    fix: tuple[str, str] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if self.fix is not None:
            out["fix"] = {"replace": self.fix[0], "with": self.fix[1]}
        return out


def fixable(issue: ConfigIssue, old: str, new: str) -> FixableIssue:
    return FixableIssue(
        issue.message, issue.file, issue.line, issue.column, issue.hint, issue.path, fix=(str(old), str(new))
    )


@dataclass
class Project:
    root: Path
    model: ProjectModel

    @property
    def pipeline_dir(self) -> Path:
        return (self.root / self.model.settings.pipeline_dir).resolve()


def find_project(start: Path | None = None) -> Project | None:
    """The nearest folder at or above ``start`` holding ``oxiflow.yaml``."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / PROJECT_FILE
        if candidate.is_file():
            return load_project(candidate)
    return None


def load_project(path: Path) -> Project:
    data, pos = load_yaml(path.read_text(encoding="utf-8"), str(path))
    try:
        model = ProjectModel.model_validate(data or {})
    except ValidationError as exc:
        raise ConfigError(pydantic_issues(exc, pos, hints=_PROJECT_HINTS)) from None
    return Project(path.parent.resolve(), model)


def resolve_pipeline_path(target: str, project: Project | None = None) -> Path:
    """A path, or a pipeline name looked up in the project's pipeline folder."""
    path = Path(target)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    project = project or find_project()
    folders = [project.pipeline_dir] if project else []
    folders.append(Path("pipelines"))
    for folder in folders:
        # NAME.yaml, or NAME/pipeline.yaml (Oxide Flow's layout for a pipeline with its own folder)
        for rel in (f"{target}.yaml", f"{target}.yml", f"{target}/pipeline.yaml", f"{target}/pipeline.yml"):
            candidate = folder / rel
            if candidate.is_file():
                return candidate
    known = sorted({p.stem for f in folders if f.is_dir() for p in f.glob("*.y*ml")})
    match = difflib.get_close_matches(target, known, n=1)
    if match:
        hint = f"did you mean {match[0]!r}?"
    elif known:
        hint = f"the pipelines here: {', '.join(known[:10])}; or give a path to a .yaml file"
    else:
        hint = "give a path to a .yaml file, or create one with `oxiflow pipeline add NAME`"
    what = f"no pipeline named {target!r}"
    if target == DEFAULT_PIPELINE:
        what += " (the one `oxiflow run` runs when none is named, as Oxide Flow did)"
    raise ConfigError([ConfigIssue(what, file=str(folders[0]), hint=hint)])


def pydantic_issues(
    exc: ValidationError,
    pos: Positions,
    prefix: tuple[Any, ...] = (),
    hints: dict[tuple[Any, ...], list[str]] | None = None,
) -> list[ConfigIssue]:
    issues = []
    for err in exc.errors():
        loc = (*prefix, *err["loc"])
        kind = err["type"]
        if kind == "extra_forbidden":
            key = loc[-1]
            # a key written already is no suggestion (renaming to it would make a duplicate)
            model_fields = [f for f in _fields_at(loc, hints) if (*loc[:-1], f) not in pos.keys]
            match = difflib.get_close_matches(str(key), model_fields, n=1) if model_fields else []
            hint = f"did you mean {match[0]!r}?" if match else None
            issue = pos.issue(f"unknown key {key!r} in {_dotted(loc[:-1])}", loc, key=True, hint=hint)
            issues.append(fixable(issue, str(key), match[0]) if match else issue)
        elif kind == "missing":
            issues.append(pos.issue(f"missing required key {loc[-1]!r} in {_dotted(loc[:-1])}", loc[:-1]))
        else:
            msg = err["msg"]
            if "input" in err and not isinstance(err["input"], dict | list):
                msg += f", got {err['input']!r}"
            issues.append(pos.issue(f"{_dotted(loc)}: {msg}", loc))
    return issues


_FIELD_HINTS: dict[tuple[Any, ...], list[str]] = {}


def _fields_at(loc: tuple[Any, ...], hints: dict[tuple[Any, ...], list[str]] | None = None) -> list[str]:
    table = _FIELD_HINTS if hints is None else hints
    return table.get(tuple(str(p) if not isinstance(p, int) else "#" for p in loc[:-1]), [])


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "the file"


def _register_hints(model: type[BaseModel], prefix: tuple[str, ...]) -> None:
    _FIELD_HINTS[prefix] = list(model.model_fields)


_register_hints(PipelineModel, ())
_register_hints(StepModel, ("pipeline", "#"))
_register_hints(PipelineSettings, ("settings",))
_PROJECT_HINTS = {(): list(ProjectModel.model_fields), ("settings",): list(ProjectSettings.model_fields)}


def make_lookup(
    cli_vars: Mapping[str, str] | None,
    pipeline_env: Mapping[str, Any],
    project_env: Mapping[str, Any] | None,
) -> Any:
    """A variable lookup over the layers, highest first. Values from `environment` blocks may
    themselves use ${OTHER} (resolved through the same layers; a cycle is an error)."""
    layers: list[Mapping[str, Any]] = [cli_vars or {}, os.environ, pipeline_env, project_env or {}]
    resolving: set[str] = set()

    def lookup(name: str) -> str | None:
        for depth, layer in enumerate(layers):
            if name in layer and layer[name] is not None:
                value = layer[name]
                if isinstance(value, bool):
                    return str(value).lower()
                text = value if isinstance(value, str) else str(value)
                if depth >= 2 and "${" in text:  # only file-defined defaults are expanded
                    if name in resolving:
                        raise MissingVariable(f"{name} (defined in terms of itself)", ())
                    resolving.add(name)
                    try:
                        text = substitute_string(text, lookup)
                    finally:
                        resolving.discard(name)
                return text
        return None

    return lookup


def load_pipeline(
    source: str | Path,
    *,
    variables: Mapping[str, str] | None = None,
    text: str | None = None,
    project: Project | None = None,
    registry: Any = None,
) -> Any:
    """Load and validate a pipeline file into a Plan. Raises ConfigError with every issue."""
    from oxiflow.plan.build import build_plan

    path = Path(source)
    if text is None:
        if not path.is_file():
            raise ConfigError([ConfigIssue(f"pipeline file not found: {path}", file=str(path))])
        text = path.read_text(encoding="utf-8")
    if project is None:
        project = find_project(path.parent if path.parent != Path("") else None)
    data, pos = load_yaml(text, str(path))
    issues: list[ConfigIssue] = []
    if not isinstance(data, dict):
        raise ConfigError([pos.issue("a pipeline file must be a mapping with a `pipeline:` list", ())])
    pipeline_env = data.get("environment") or {}
    if not isinstance(pipeline_env, dict):
        issues.append(pos.issue("environment must be a mapping of NAME: value", ("environment",)))
        pipeline_env = {}
    lookup = make_lookup(variables, pipeline_env, project_environment(project))
    missing: list[MissingVariable] = []
    body = {k: v for k, v in data.items() if k != "environment"}
    body = substitute(body, lookup, (), missing)
    body["environment"] = pipeline_env
    raw_steps = body.get("pipeline")
    for miss in missing:
        step_hint = ""
        if len(miss.path) >= 2 and miss.path[0] == "pipeline" and isinstance(miss.path[1], int):
            step_hint = f" in step {_step_label(raw_steps, miss.path[1])}"
        issues.append(
            pos.issue(
                f"variable ${{{miss.name}}} is not set{step_hint}",
                miss.path,
                hint=f"export {miss.name}=..., pass --var {miss.name}=..., or write ${{{miss.name}:-default}}",
            )
        )
    model = validate_model(body, pos, issues)
    if model is None:
        raise ConfigError(sort_issues(issues))
    # Inside a project, relative paths start at the project root (Oxide Flow's rule, and what
    # `environment: {DATA_DIR: data}` in oxiflow.yaml means); otherwise at the pipeline's folder.
    base_dir = project.root if project is not None else path.parent.resolve()
    if registry is None and project is not None:
        from oxiflow.config.project_oxis import project_registry

        registry = project_registry(project, issues)
    return build_plan(model, pos, base_dir=base_dir, file=path, registry=registry, issues=issues, project=project)


def project_environment(project: Project | None) -> dict[str, Any] | None:
    """The project's variable defaults: its ``environment``, over ``settings.output_dir`` as the
    default of ``${OUTPUT_DIR}`` (Oxide Flow's setting)."""
    if project is None:
        return None
    return {"OUTPUT_DIR": project.model.settings.output_dir, **project.model.environment}


def _step_label(raw_steps: Any, index: int) -> str:
    """How a step is named in messages: its id, else its oxi name, else its position."""
    raw = raw_steps[index] if isinstance(raw_steps, list) and index < len(raw_steps) else None
    if isinstance(raw, dict):
        for key in ("id", "name"):
            if isinstance(raw.get(key), str) and raw[key]:
                return repr(raw[key])
    return f"{index + 1}"


def sort_issues(issues: list[ConfigIssue]) -> list[ConfigIssue]:
    """In file order, so a long list reads top to bottom."""
    return sorted(issues, key=lambda i: (i.file or "", i.line or 0, i.column or 0))


def validate_model(body: dict[str, Any], pos: Positions, issues: list[ConfigIssue]) -> PipelineModel | None:
    """The pipeline model, with every step validated on its own: a step (or top-level key) in error is
    reported and set aside, so the checks after it (oxis, their configs, ids, inputs, references,
    cycles) still run for everything else. None when there is no list of steps to check."""
    raw_steps = body.get("pipeline")
    steps: list[StepModel] | None = None
    if isinstance(raw_steps, list):
        steps = [_validate_step(raw, i, pos, issues) for i, raw in enumerate(raw_steps)]
    data = {**body, "pipeline": steps if steps is not None else raw_steps}
    try:
        return PipelineModel.model_validate(data)
    except ValidationError as exc:
        issues.extend(pydantic_issues(exc, pos))
        bad = {err["loc"][0] for err in exc.errors() if err["loc"]}
    if "pipeline" in bad:
        return None
    try:
        return PipelineModel.model_validate({k: v for k, v in data.items() if k not in bad})
    except ValidationError:
        return None


def _validate_step(raw: Any, index: int, pos: Positions, issues: list[ConfigIssue]) -> StepModel:
    try:
        return StepModel.model_validate(raw)
    except ValidationError as exc:
        issues.extend(pydantic_issues(exc, pos, ("pipeline", index)))
        errors = exc.errors()
    if not isinstance(raw, dict):
        step = StepModel(name="")
        step.invalid_keys.add("name")
        return step
    bad = {str(err["loc"][0]) for err in errors if err["loc"]}
    kept = {k: v for k, v in raw.items() if k not in bad}
    try:
        step = StepModel.model_validate({"name": "", **kept})
    except ValidationError:
        step = StepModel(name="")
        bad |= {"name", "config", "inputs", "id"}
    step.invalid_keys.update(bad | ({"name"} if not step.name else set()))
    return step
