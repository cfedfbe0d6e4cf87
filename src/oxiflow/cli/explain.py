"""`oxiflow explain`: every step with its inputs and output schema (probed with zero rows)."""

from __future__ import annotations

from typing import Annotated

import typer

from oxiflow.cli import output
from oxiflow.cli.options import ConfigOpt, JsonOpt, VarsOpt, parse_vars


def explain(
    pipeline: Annotated[str, typer.Argument(help="A pipeline file, or a pipeline name in the project.")],
    var: VarsOpt = None,
    json_out: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Show the plan: steps, their inputs, fused steps and the output schema of every step.

    Schemas are probed by running the pipeline with sources limited to zero rows and sinks
    skipped: no data is read, nothing is written.

    Example: oxiflow explain pipelines/orders.yaml --json
    """
    plan = output.load_or_exit(pipeline, parse_vars(var), config)
    from oxiflow.plan.explain import explain_plan

    explained = explain_plan(plan)
    output.print_plan(explained, json_out)
    raise typer.Exit(1 if any(s.get("error") for s in explained["steps"]) else 0)
