"""Build and run the small pipeline a shell verb stands for.

A verb is a list of step dicts (``{"name": "filter", "config": {...}}``) checked and planned by
the same code as a pipeline file (``build_plan``) and run by the same engine (``run_plan``), so a
verb and a pipeline step never disagree. Verb arguments are never ``${VAR}``-substituted (a
filter expression may hold a ``$``). Errors name the verb: ``oxi filter: error: ...``.
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from oxiflow.engine.metrics import RunResult
    from oxiflow.plan.build import Plan

_STEP_PATH = re.compile(r"pipeline(?:\.(\d+)|\[(\d+)\])\.config\.?")


class VerbError(Exception):
    """A usage or configuration problem found before anything runs (exit 2)."""

    exit_code = 2


class VerbFailed(Exception):
    """The run did not succeed and said so on stderr already: exit with ``exit_code`` (1 failed,
    130 interrupted, 141 output closed)."""

    def __init__(self, exit_code: int) -> None:
        super().__init__(exit_code)
        self.exit_code = exit_code


@dataclass
class Outcome:
    exit_code: int
    result: RunResult | None = None


def plan_steps(verb: str, steps: list[dict[str, Any]]) -> Plan:
    """The checked plan of ``steps``; a :class:`VerbError` naming the verb's step otherwise."""
    from pydantic import ValidationError

    from oxiflow.config.model import PipelineModel
    from oxiflow.config.yaml_positions import Positions
    from oxiflow.errors import ConfigError
    from oxiflow.plan.build import build_plan

    try:
        model = PipelineModel.model_validate({"metadata": {"name": f"oxi-{verb}"}, "pipeline": steps})
        return build_plan(model, Positions(file=f"oxi {verb}"), base_dir=Path.cwd(), file=None)
    except ValidationError as exc:
        raise VerbError(str(exc)) from None
    except ConfigError as exc:
        raise VerbError(describe_issues(exc, steps)) from None


def describe_issues(exc: Any, steps: list[dict[str, Any]]) -> str:
    """Config issues in the verb's terms: ``filter.expr: ...`` rather than ``pipeline.1.config.expr``."""
    lines = []
    for issue in exc.issues:

        def name(m: re.Match[str]) -> str:
            index = int(m.group(1) or m.group(2))
            oxi = steps[index]["name"] if index < len(steps) else "step"
            return f"{oxi}." if m.group(0).endswith(".") else oxi

        text = _STEP_PATH.sub(name, issue.message)
        if issue.hint:
            text += f" ({issue.hint})"
        lines.append(text)
    return "; ".join(lines)


def run_steps(verb: str, plan: Plan, *, verbose: bool = False) -> Outcome:
    """Run ``plan``; report a failure on stderr (nothing on success but the data)."""
    from oxiflow.engine.local import RunOptions, run_plan
    from oxiflow.pipe.stdio import OutputClosed

    started = time.perf_counter()
    result = run_plan(plan, RunOptions())
    error = result.error
    if isinstance(error, OutputClosed):
        return Outcome(error.exit_code, result)  # `| head` took what it wanted: not an error
    if error is not None:
        report(verb, error)
    elif verbose:
        summary(verb, result, time.perf_counter() - started)
    return Outcome(result.exit_code, result)


def check_result(verb: str, result: RunResult) -> None:
    """Raise :class:`VerbFailed` (after reporting the error) unless ``result`` is a success."""
    from oxiflow.pipe.stdio import OutputClosed

    error = result.error
    if error is None:
        return
    if isinstance(error, OutputClosed):
        raise VerbFailed(error.exit_code)  # `| head` took what it wanted: nothing to report
    report(verb, error)
    raise VerbFailed(result.exit_code)


def report(verb: str, error: BaseException) -> None:
    from oxiflow.errors import RunCancelled

    if isinstance(error, RunCancelled) and getattr(error, "exit_code", 1) == 130:
        sys.stderr.write(f"oxi {verb}: interrupted\n")
        return
    text = str(error)
    if not text or text == type(error).__name__:
        text = f"{type(error).__name__}: {error!r}"
    sys.stderr.write(f"oxi {verb}: error: {text}\n")


def summary(verb: str, result: RunResult, seconds: float) -> None:
    steps = result.steps
    first = next((s for s in steps if s.kind == "source"), steps[0])
    last = steps[-1]
    rows_in = first.rows_out
    rows_out = last.rows_in if last.kind == "sink" else last.rows_out
    sys.stderr.write(f"oxi {verb}: {rows_in:,} rows read, {rows_out:,} rows out in {seconds:.2f}s\n")
