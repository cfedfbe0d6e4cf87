"""The `oxiflow` / `oxi` command line. Heavy modules are imported inside commands (fast --help)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from oxiflow.cli import output
from oxiflow.cli.options import ConfigOpt, JsonOpt, LogFormatOpt, QuietOpt, VarsOpt, parse_vars

app = typer.Typer(
    name="oxiflow",
    help="Schema-aware data pipelines: run YAML pipelines of Arrow-streaming oxis.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.command()
def run(
    pipeline: Annotated[str, typer.Argument(help="A pipeline file, or a pipeline name in the project.")],
    var: VarsOpt = None,
    engine: Annotated[str, typer.Option("--engine", help="Execution engine: local.")] = "local",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate and show the plan; run nothing.")] = False,
    config: ConfigOpt = None,
    log_format: LogFormatOpt = "text",
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Run a pipeline.

    Example: oxiflow run pipelines/orders.yaml --var ORDERS_PATH=data/orders.csv
    """
    output.setup_logging(log_format, quiet)
    plan = output.load_or_exit(pipeline, parse_vars(var), config)
    if engine != "local":
        output.fail_usage(f"engine {engine!r} is not available here (local only in this version)")
    if dry_run:
        from oxiflow.plan.explain import explain_plan

        output.print_plan(explain_plan(plan, probe=False), json_out)
        raise typer.Exit(0)
    from oxiflow.engine.local import RunOptions, run_plan

    observers = [] if quiet or json_out else [output.progress_observer()]
    result = run_plan(plan, RunOptions(variables=parse_vars(var), observers=[o for o in observers if o]))
    output.print_result(result, json_out=json_out, quiet=quiet, log_format=log_format)
    raise typer.Exit(result.exit_code)


@app.command()
def validate(
    pipeline: Annotated[str, typer.Argument(help="A pipeline file, or a pipeline name in the project.")],
    var: VarsOpt = None,
    json_out: JsonOpt = False,
    config: ConfigOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Check a pipeline without running it: YAML, oxis, config types, variables, references, cycles.

    Example: oxiflow validate pipelines/orders.yaml
    """
    plan = output.load_or_exit(pipeline, parse_vars(var), config, json_out=json_out)
    if json_out:
        output.print_json({"valid": True, "pipeline": plan.name, "steps": [s.id for s in plan.steps]})
    elif not quiet:
        output.err(f"✓ {plan.file}: valid ({len(plan.steps)} steps)")


def main() -> None:
    from oxiflow.cli import commands

    commands.register(app)
    try:
        app()
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    except BrokenPipeError:
        # The reader of our stdout went away (`| head`): exit quietly like other Unix tools.
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(141)


if __name__ == "__main__":
    main()
