"""`pipeline test` and `pipeline info`: checks, the pipeline's own `tests:` block, descriptions.

A test in the pipeline file::

    tests:
      - name: large orders only          # optional
        vars: {MIN_AMOUNT: "20"}         # variables for this run (win over --var and the environment)
        expect:
          status: ok                     # ok (default) or failed
          rows: {orders: 8, large_orders: 4}   # rows out per step id

Each test runs the pipeline for real with OUTPUT_DIR set to a scratch folder (unless its vars
set it), so pipelines that write below ${OUTPUT_DIR} leave nothing behind.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from oxiflow.cli import output

if TYPE_CHECKING:
    from oxiflow.plan.build import Plan


class Expect(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Literal["ok", "failed"] = "ok"
    """The run's final status."""
    rows: dict[str, int] = Field(default_factory=dict)
    """Rows out per step id."""


class PipelineTest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = None
    vars: dict[str, str | int | float | bool] = Field(default_factory=dict)
    expect: Expect = Field(default_factory=Expect)


def parse_tests(plan: Plan) -> list[PipelineTest]:
    from oxiflow.config.load import pydantic_issues
    from oxiflow.errors import ConfigError

    tests, issues = [], []
    for i, raw in enumerate(plan.model.tests):
        try:
            tests.append(PipelineTest.model_validate(raw))
        except ValidationError as exc:
            issues.extend(pydantic_issues(exc, plan.positions, ("tests", i)))
    if issues:
        raise ConfigError(issues)
    return tests


def _text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def run_test(plan: Plan, test: PipelineTest, cli_vars: dict[str, str], scratch: Path) -> list[str]:
    """Run one test; the list of failures (empty: it passed)."""
    from oxiflow.config.load import load_pipeline
    from oxiflow.engine.local import RunOptions, run_plan
    from oxiflow.errors import ConfigError

    variables = {"OUTPUT_DIR": str(scratch), **cli_vars, **{k: _text(v) for k, v in test.vars.items()}}
    try:
        test_plan = load_pipeline(plan.file or "pipeline.yaml", variables=variables, project=plan.project)
    except ConfigError as exc:
        return [str(exc)]
    result = run_plan(test_plan, RunOptions(variables=variables))
    failures = []
    if result.status != test.expect.status:
        why = f" ({result.error})" if result.error else ""
        failures.append(f"status: expected {test.expect.status}, got {result.status}{why}")
    rows = {m.step_id: m.rows_out for m in result.steps}
    for step_id, want in test.expect.rows.items():
        lives_in = test_plan.fused.get(step_id)
        if step_id not in rows and lives_in:
            failures.append(f"rows of {step_id!r}: it is fused into {lives_in!r}; expect rows of {lives_in!r}")
        elif step_id not in rows:
            failures.append(f"rows of {step_id!r}: no such step (steps: {', '.join(rows)})")
        elif rows[step_id] != want:
            failures.append(f"rows of {step_id!r}: expected {want}, got {rows[step_id]}")
    return failures


def check_pipeline(
    target: str,
    cli_vars: dict[str, str],
    config: Path | None,
    *,
    run_tests: bool,
    probe_schema: bool,
    quiet: bool,
    fix: bool = False,
) -> dict[str, Any]:
    say = (lambda _text: None) if quiet else output.err
    fixed = _fix(target, cli_vars, config, say) if fix else None
    plan = output.load_or_exit(target, cli_vars, config, json_out=quiet)
    report: dict[str, Any] = {"pipeline": plan.name, "file": str(plan.file), "valid": True, "exit_code": 0}
    if fixed is not None:
        report["fixed"] = fixed
    say(f"✓ {plan.file}: structure, variables and references are valid ({len(plan.steps)} steps)")
    try:
        tests = parse_tests(plan)
    except Exception as exc:  # a ConfigError in the tests block
        say(f"error: {exc}")
        return {**report, "valid": False, "error": str(exc), "exit_code": 2}
    if probe_schema:
        from oxiflow.plan.explain import explain_plan

        explained = explain_plan(plan)
        report["schema"] = {s["id"]: s.get("schema") for s in explained["steps"]}
        bad = {s["id"]: s["error"] for s in explained["steps"] if s.get("error")}
        for step_id, error in bad.items():
            say(f"✗ schema of step {step_id}: {error}")
        if bad:
            report["schema_errors"] = bad
            report["exit_code"] = 1
        else:
            say(f"✓ schemas: every step's output schema is known ({len(explained['steps'])} steps)")
    results: list[dict[str, Any]] = []
    if run_tests and tests:
        for i, test in enumerate(tests, 1):
            label = test.name or f"test {i}"
            with tempfile.TemporaryDirectory(prefix="oxiflow-test-") as scratch:
                failures = run_test(plan, test, cli_vars, Path(scratch))
            results.append({"name": label, "passed": not failures, "failures": failures})
            say(f"{'✓' if not failures else '✗'} {label}" + "".join(f"\n    {f}" for f in failures))
        if any(not r["passed"] for r in results):
            report["exit_code"] = 1
        passed = sum(1 for r in results if r["passed"])
        say(f"{passed} passed, {len(results) - passed} failed")
    elif run_tests:
        say("no `tests:` block: checked only")
    else:
        say(f"dry run: {len(tests)} test(s) not run")
    report["tests"] = results
    return report


def _fix(target: str, cli_vars: dict[str, str], config: Path | None, say: Any) -> list[str]:
    """--fix: repair the file in place (cli/pipeline_fix.py); say what changed and what is left."""
    from oxiflow.cli.pipeline_fix import fix_file
    from oxiflow.config.load import find_project, load_project, resolve_pipeline_path
    from oxiflow.errors import ConfigError

    try:
        project = load_project(config) if config else find_project()
        path = resolve_pipeline_path(target, project)
    except ConfigError:
        return []  # load_or_exit reports it
    applied, left = fix_file(path, cli_vars, project if config else None)
    for change in applied:
        say(f"fixed {path}:{change}")
    if not applied:
        say(f"--fix: nothing to repair automatically in {path}" + (f" ({len(left)} issue(s) need you)" if left else ""))
    return [f"{path}:{change}" for change in applied]


def _written_steps(plan: Plan) -> list[dict[str, Any]]:
    from oxiflow.config.yaml_positions import load_yaml

    if plan.file is None or not plan.file.is_file():
        return []
    data, _ = load_yaml(plan.file.read_text(encoding="utf-8"), str(plan.file))
    steps = data.get("pipeline") if isinstance(data, dict) else None
    return [s if isinstance(s, dict) else {} for s in steps] if isinstance(steps, list) else []


def describe(plan: Plan, *, probe_schema: bool) -> dict[str, Any]:
    meta = plan.model.metadata.model_dump(exclude_none=True)
    steps = []
    schemas: dict[str, Any] = {}
    if probe_schema:
        from oxiflow.plan.explain import explain_plan

        schemas = {s["id"]: s for s in explain_plan(plan)["steps"]}
    written = _written_steps(plan)
    for s in plan.steps:
        entry: dict[str, Any] = {"id": s.id, "oxi": s.spec.name, "kind": s.spec.kind, "inputs": s.inputs}
        if s.fused_from is not None:
            entry["fused"] = s.fused_from.id
        # the config as written (${VAR} unexpanded), so values from the environment are never shown
        entry["config"] = written[s.index].get("config", {}) if s.index < len(written) else {}
        if probe_schema:
            probed = schemas.get(s.id, {})
            entry["schema"] = probed.get("schema")
            if probed.get("error"):
                entry["schema_error"] = probed["error"]
        steps.append(entry)
    return {
        "name": plan.name,
        "file": str(plan.file) if plan.file else None,
        "metadata": meta,
        "environment": {k: _text(v) for k, v in plan.model.environment.items()},
        "settings": plan.model.settings.model_dump(exclude_defaults=True),
        "steps": steps,
        "tests": [t.get("name") or f"test {i}" for i, t in enumerate(plan.model.tests, 1)],
    }
