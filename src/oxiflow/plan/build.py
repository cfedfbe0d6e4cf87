"""Pipeline model -> checked DAG of steps (the Plan).

Checks: every oxi exists and its config validates; ids are unique; `inputs` name existing
steps; the graph has no cycle; each step gets as many inputs as its oxi accepts;
`${steps.ID.metadata.KEY}` names a step that runs earlier. Then the fusion rules rewrite
adjacent steps that are faster as one (read_file -> parse_csv becomes one streaming scan).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from oxiflow.config.load import Project, fixable, pydantic_issues
from oxiflow.config.model import PipelineModel, StepModel
from oxiflow.config.substitute import STEP_REF, step_reference_sites, step_references
from oxiflow.config.yaml_positions import Positions
from oxiflow.contracts.gate import config_issues as schema_gate_issues
from oxiflow.errors import ConfigError, ConfigIssue
from oxiflow.oxi import OxiConfig, OxiSpec
from oxiflow.registry import PluginLoadError, Registry, UnknownOxiError, default_registry

if TYPE_CHECKING:
    from oxiflow.plan.pushdown import Pushdown


@dataclass
class PlannedStep:
    index: int
    id: str
    model: StepModel
    spec: OxiSpec
    raw_config: dict[str, Any]
    config: OxiConfig | None  # None while the config still holds ${steps...} references
    inputs: list[str]
    fused_from: PlannedStep | None = None  # the step folded into this one by a fusion rule

    @property
    def label(self) -> str:
        return self.id if self.id == self.spec.name else f"{self.id} ({self.spec.name})"

    @property
    def deferred(self) -> bool:
        return self.config is None


@dataclass
class Plan:
    model: PipelineModel
    steps: list[PlannedStep]
    file: Path | None
    base_dir: Path
    positions: Positions
    project: Project | None = None
    fused: dict[str, str] = field(default_factory=dict)  # folded step id -> step it lives in
    pushdowns: dict[str, Pushdown] = field(default_factory=dict)  # sink id -> chain run as one statement

    @property
    def name(self) -> str:
        if self.model.metadata.name:
            return self.model.metadata.name
        return self.file.stem if self.file else "pipeline"

    def step(self, step_id: str) -> PlannedStep:
        for s in self.steps:
            if s.id == step_id:
                return s
        raise KeyError(step_id)

    def consumers(self, step_id: str) -> list[PlannedStep]:
        return [s for s in self.steps if step_id in s.inputs]


def validate_step_config(spec: OxiSpec, raw: dict[str, Any]) -> OxiConfig:
    return spec.config.model_validate(raw)


def build_plan(
    model: PipelineModel,
    pos: Positions,
    *,
    base_dir: Path,
    file: Path | None,
    registry: Registry | None = None,
    issues: list[ConfigIssue] | None = None,
    project: Project | None = None,
) -> Plan:
    registry = registry or default_registry()
    issues = list(issues or [])
    steps: list[PlannedStep] = []
    seen: dict[str, int] = {}
    previous: str | None = None
    for index, step in enumerate(model.pipeline):
        path = ("pipeline", index)
        step_id = step.id or step.name
        if step_id in seen:
            if step.id:
                issues.append(pos.issue(f"duplicate step id {step_id!r}", (*path, "id")))
            else:  # two unnamed steps of the same oxi: number them
                step_id = f"{step.name}_{index + 1}"
        seen[step_id] = index
        if "name" in step.invalid_keys:  # reported with the step's own keys
            previous = step_id
            continue
        try:
            spec = registry.get(step.name)
        except UnknownOxiError as exc:
            hint = f"did you mean {exc.suggestion!r}?" if exc.suggestion else "see `oxiflow plugins list`"
            issue = pos.issue(f"unknown oxi {step.name!r}", (*path, "name"), hint=hint)
            issues.append(fixable(issue, step.name, exc.suggestion) if exc.suggestion else issue)
            previous = step_id
            continue
        except PluginLoadError as exc:
            issues.append(pos.issue(str(exc), (*path, "name")))
            previous = step_id
            continue
        deferred_keys = {k for k, v in step.config.items() if step_references(v)}
        config: OxiConfig | None = None
        try:
            if "config" in step.invalid_keys:
                raise _Skipped
            config = validate_step_config(spec, step.config)
        except _Skipped:
            pass
        except ValidationError as exc:
            issues.extend(_config_issues(exc, pos, (*path, "config"), spec, deferred_keys))
        if deferred_keys:
            config = None
        if "inputs" in step.invalid_keys:
            inputs: list[str] = []
        elif step.inputs is not None:
            inputs = list(step.inputs)
        elif spec.kind == "source":
            inputs = []
        else:
            inputs = [previous] if previous is not None else []
        steps.append(PlannedStep(index, step_id, step, spec, dict(step.config), config, inputs))
        issues.extend(schema_gate_issues(step, spec.kind, base_dir, pos, path))  # contract keys: sinks only
        previous = step_id

    ids = {s.id for s in steps} | set(seen)
    for s in steps:
        path = ("pipeline", s.index)
        for i, ref in enumerate(s.inputs):
            if ref not in ids:
                match = difflib.get_close_matches(ref, sorted(ids), n=1)
                issue = pos.issue(
                    f"step {s.label} takes input {ref!r}, which is no step id",
                    (*path, "inputs", i),
                    hint=f"did you mean {match[0]!r}?" if match else f"known ids: {', '.join(sorted(ids))}",
                )
                issues.append(fixable(issue, ref, match[0]) if match else issue)
        n = len(s.inputs)
        lo, hi = s.spec.min_inputs, s.spec.max_inputs
        if "inputs" not in s.model.invalid_keys and (n < lo or (hi is not None and n > hi)):
            want = f"{lo}" if lo == hi else f"{lo} to {hi}" if hi is not None else f"at least {lo}"
            what = "has no step before it" if n == 0 else f"gets {n}"
            issues.append(
                pos.issue(
                    f"step {s.label} ({s.spec.kind}) takes {want} input(s) but {what}",
                    (*path, "inputs") if s.model.inputs is not None else (*path, "name"),
                    hint="put a source step first, or set `inputs:`" if n == 0 else None,
                )
            )
        issues.extend(_reference_issues(s, steps, seen, pos))

    from oxiflow.incremental import checkpoint_problems

    for bad, problem, hint in checkpoint_problems(steps):
        issues.append(pos.issue(problem, ("pipeline", bad.index, "config"), hint=hint))
    order = _topological(steps, pos, issues)
    if issues:
        from oxiflow.config.load import sort_issues

        raise ConfigError(sort_issues(issues))
    plan = Plan(model, order, file, base_dir, pos, project)
    from oxiflow.plan.fusion import apply_fusions
    from oxiflow.plan.pushdown import find_pushdowns

    apply_fusions(plan)
    plan.pushdowns = find_pushdowns(plan)
    return plan


class _Skipped(Exception):
    """The step's config was not a mapping (already reported): nothing to validate."""


def _config_issues(
    exc: ValidationError, pos: Positions, prefix: tuple[Any, ...], spec: OxiSpec, deferred: set[str]
) -> list[ConfigIssue]:
    out = []
    fields = list(spec.config.model_fields)
    for issue, err in zip(pydantic_issues(exc, pos, prefix), exc.errors(), strict=True):
        if err["loc"] and err["loc"][0] in deferred:
            continue  # holds ${steps...}: checked when the step runs
        if isinstance(err.get("input"), str) and "${" in err["input"]:
            continue  # an unset variable, reported as such
        if err["type"] == "extra_forbidden":
            unused = [f for f in fields if (*prefix, *err["loc"][:-1], f) not in pos.keys]
            match = difflib.get_close_matches(str(err["loc"][-1]), unused, n=1)
            issue.hint = f"did you mean {match[0]!r}?" if match else f"{spec.name} takes: {', '.join(fields)}"
            issue.message = f"unknown key {err['loc'][-1]!r} for oxi {spec.name!r}"
            issue = fixable(issue, str(err["loc"][-1]), match[0]) if match else issue
        out.append(issue)
    return out


def _reference_issues(
    s: PlannedStep, steps: list[PlannedStep], seen: dict[str, int], pos: Positions
) -> list[ConfigIssue]:
    """``${steps.ID.metadata.KEY}``: the shape, a step ID that exists and runs earlier, and a KEY that
    step reports (when its oxi says which keys it reports)."""
    out: list[ConfigIssue] = []
    by_id = {p.id: p for p in steps}
    ids = sorted(set(by_id) | set(seen))
    for where, name in step_reference_sites(s.raw_config, ("pipeline", s.index, "config")):
        m = STEP_REF.match(name)
        if m is None:
            parts = name.split(".")
            fixed = ".".join([*parts[:2], "metadata", *parts[3:]]) if len(parts) >= 4 else None
            good = fixed if fixed and fixed != name and STEP_REF.match(fixed) else None
            issue = pos.issue(
                f"${{{name}}} is not a step reference: they read ${{steps.ID.metadata.KEY}}",
                where,
                hint=f"did you mean ${{{good}}}?"
                if good
                else "write ${steps.ID.metadata.KEY}, e.g. ${steps.reader.metadata.path}",
            )
            out.append(fixable(issue, f"${{{name}}}", f"${{{good}}}") if good else issue)
            continue
        ref_id, key = m.groups()
        if ref_id not in seen:
            match = difflib.get_close_matches(ref_id, ids, n=1)
            issue = pos.issue(
                f"${{steps.{ref_id}...}} names no step",
                where,
                hint=f"did you mean {match[0]!r}?" if match else f"known ids: {', '.join(ids)}",
            )
            fix = (f"${{steps.{ref_id}.metadata.{key}}}", f"${{steps.{match[0]}.metadata.{key}}}") if match else None
            out.append(fixable(issue, *fix) if fix else issue)
            continue
        if seen[ref_id] >= s.index:
            out.append(pos.issue(f"${{steps.{ref_id}...}} refers to a step that runs later", where))
            continue
        target = by_id.get(ref_id)
        reported = _metadata_keys(target) if target is not None else None
        if target is not None and reported is not None and key not in reported:
            match = difflib.get_close_matches(key, sorted(reported), n=1)
            issue = pos.issue(
                f"step {target.label} reports no metadata {key!r} (it reports: {', '.join(sorted(reported))})",
                where,
                hint=f"did you mean {match[0]!r}?" if match else None,
            )
            old, new = (
                f"${{steps.{ref_id}.metadata.{key}}}",
                f"${{steps.{ref_id}.metadata.{match[0] if match else ''}}}",
            )
            out.append(fixable(issue, old, new) if match else issue)
    return out


def _metadata_keys(step: PlannedStep) -> set[str] | None:
    """The metadata keys a step is known to report: its oxi's ``metadata_keys`` (None: not declared),
    plus what the engine and the schema gate add for every sink."""
    declared = getattr(step.spec.factory, "metadata_keys", None)
    if declared is None:
        return None
    return set(declared) | ({"rows", "dataset", "schema_drift", "load_id"} if step.spec.kind == "sink" else set())


def _topological(steps: list[PlannedStep], pos: Positions, issues: list[ConfigIssue]) -> list[PlannedStep]:
    by_id = {s.id: s for s in steps}
    state: dict[str, int] = {}
    order: list[PlannedStep] = []
    reported: set[str] = set()

    def visit(s: PlannedStep, trail: list[str]) -> None:
        mark = state.get(s.id)
        if mark == 2:
            return
        if mark == 1:
            cycle = [*trail[trail.index(s.id) :], s.id]
            key = "->".join(sorted(set(cycle)))
            if key not in reported:
                reported.add(key)
                issues.append(pos.issue(f"steps form a cycle: {' -> '.join(cycle)}", ("pipeline", s.index, "inputs")))
            return
        state[s.id] = 1
        for ref in s.inputs:
            if ref in by_id:
                visit(by_id[ref], [*trail, s.id])
        state[s.id] = 2
        order.append(s)

    for s in steps:
        visit(s, [])
    return order
