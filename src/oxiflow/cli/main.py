"""The `oxiflow` / `oxi` command line. Heavy modules are imported inside commands (fast --help)."""

from __future__ import annotations

import signal
import sys
from typing import Annotated, Any, NoReturn

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
    pipeline: Annotated[
        str, typer.Argument(help="A pipeline file, or a pipeline name in the project (default: pipeline).")
    ] = "pipeline",
    var: VarsOpt = None,
    engine: Annotated[str, typer.Option("--engine", help="Execution engine: local.")] = "local",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate and show the plan; run nothing.")] = False,
    config: ConfigOpt = None,
    log_format: LogFormatOpt = "text",
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait/--no-wait",
            help="When another run of this pipeline is going, wait for it (default: fail at once, exit 75).",
        ),
    ] = False,
    wait_timeout: Annotated[
        float | None,
        typer.Option("--wait-timeout", metavar="SECONDS", min=0, help="Wait at most this long (implies --wait)."),
    ] = None,
    state_url: Annotated[
        str | None,
        typer.Option("--state-url", help="State store: an SQLite path or a postgresql:// URL (docs/state.md)."),
    ] = None,
    no_state: Annotated[
        bool, typer.Option("--no-state", help="Record nothing and take no lock (concurrent runs are not stopped).")
    ] = False,
    full_refresh: Annotated[
        bool,
        typer.Option(
            "--full-refresh",
            help="Forget the pipeline's incremental cursors and read everything again (targets are not "
            "emptied unless their write_disposition is replace; docs/incremental.md).",
        ),
    ] = False,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue the pipeline's last run if it failed or was stopped, from its last committed "
            "checkpoint; when it succeeded there is nothing to do (exit 0).",
        ),
    ] = False,
) -> None:
    """Run a pipeline (without a name: pipelines/pipeline.yaml, as Oxide Flow's `run` did).

    The run is recorded in the state store (`oxiflow runs`), and holds the pipeline's lock while it
    runs: a second run of the same pipeline fails at once (exit 75) unless --wait.
    SIGTERM stops a run like Ctrl-C (exit 143; Ctrl-C: 130).

    Example: oxiflow run pipelines/orders.yaml --var ORDERS_PATH=data/orders.csv
    """
    output.setup_logging(log_format, quiet)
    plan = output.load_or_exit(pipeline, parse_vars(var), config, log_format=log_format)
    if json_out:
        output.refuse_json_with_stdout_steps(plan)
    if engine != "local":
        output.fail_usage(f"engine {engine!r} is not available here (local only in this version)")
    if dry_run:
        from oxiflow.plan.explain import explain_plan

        output.print_plan(explain_plan(plan, probe=False), json_out)
        raise typer.Exit(0)
    if resume and (no_state or full_refresh):
        output.fail_usage(
            "--resume continues from the state store's checkpoints: it takes neither --no-state nor --full-refresh"
        )
    from oxiflow.engine.checkpoints import run_pipeline
    from oxiflow.engine.local import RunOptions, new_run_id

    run_id = new_run_id()
    observers: list[object] = [] if quiet or json_out else [output.progress_observer()]
    session = (
        None
        if no_state
        else _open_session(plan, run_id, state_url, wait or wait_timeout is not None, wait_timeout, quiet)
    )
    try:
        if session is not None:
            observers.append(session.recorder)
        if resume and session is not None and not _resuming(session, plan, run_id, quiet):
            session.store.mark_run(run_id, "ok", None, exit_code=0)
            raise typer.Exit(0)
        options = RunOptions(
            variables=parse_vars(var),
            run_id=run_id,
            observers=[o for o in observers if o],
            state=session.store if session is not None else None,
            full_refresh=full_refresh,
        )
        result = run_pipeline(plan, options)
        code = result.exit_code
        if _STOP_SIGNALS and result.status == "cancelled":
            code = 143  # stopped by SIGTERM (`oxiflow worker stop`), not by Ctrl-C
        if session is not None:
            _after_run(session, code)
    finally:
        if session is not None:
            session.close(143 if _STOP_SIGNALS else None)
    output.print_result(result, json_out=json_out, quiet=quiet, log_format=log_format)
    raise typer.Exit(code)


def _resuming(session: Any, plan: Any, run_id: str, quiet: bool) -> bool:
    """Whether --resume has a run to continue (it says which on stderr); exits 2 when it cannot resume."""
    from oxiflow.engine.checkpoints import resume_point
    from oxiflow.errors import ConfigError

    try:
        point = resume_point(session.store, plan, run_id)
    except ConfigError as exc:
        session.store.mark_run(run_id, "failed", str(exc), exit_code=2)
        output.err(f"error: {exc}")
        raise typer.Exit(2) from None
    if point is None:
        if not quiet:
            output.err(f"nothing to resume: the last run of {plan.name} succeeded (or there is none)")
        return False
    if not quiet:
        status = "was killed" if point.status == "running" else point.status
        output.err(
            f"resuming {plan.name} after run {point.run_id} ({status}, {point.checkpoints} checkpoint(s) "
            "committed): reading from the last committed cursor"
        )
    return True


def _open_session(plan: Any, run_id: str, state_url: str | None, wait: bool, timeout: float | None, quiet: bool) -> Any:
    from oxiflow.state.session import RunSession
    from oxiflow.state.store import StateError

    def waiting(holder: str) -> None:
        if not quiet:
            output.err(f"waiting for the running {plan.name} ({holder}) to finish")

    try:
        return RunSession.open(plan, run_id, state_url=state_url, wait=wait, timeout=timeout, on_wait=waiting)
    except StateError as exc:
        output.err(f"error: {exc}")
        if exc.exit_code != 75:
            output.err("(pass --no-state to run without the state store)")
        raise typer.Exit(exc.exit_code) from None


def _after_run(session: Any, code: int) -> None:
    from oxiflow.state.store import StateError

    problem = session.recorder.error
    if code == 143:
        try:
            session.store.finish_run(session.recorder.run_id, {"error": "stopped by SIGTERM", "exit_code": code})
        except StateError as exc:
            problem = problem or exc
    if problem is not None:
        output.err(f"warning: the run was not fully recorded in the state store: {problem}")


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


_STOP_SIGNALS: list[int] = []


def _on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM stops like Ctrl-C: the main thread gets KeyboardInterrupt once; a run cancels cleanly
    (steps interrupted, temporaries removed, the run recorded) and exits 143."""
    if _STOP_SIGNALS:
        return  # already stopping: let the clean stop finish
    _STOP_SIGNALS.append(signum)
    raise KeyboardInterrupt("stopped by SIGTERM")  # the engine's error message says which stop it was


def main() -> None:
    import os

    # pydantic looks for its plugins (observability hooks) in every installed package's metadata at the
    # first model it builds: ~35 ms of each start, for plugins a CLI run has no use for. Set the variable
    # yourself (e.g. to an empty string) to keep them (docs/cli.md).
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    from oxiflow.cli import commands

    # the first word that is not an option names the command (no top-level option takes a value);
    # shell completion asks about any command, so it gets them all
    first = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), None)
    completing = any(key.startswith("_") and key.endswith("_COMPLETE") for key in os.environ)
    if completing:
        from oxiflow.cli.completion import one_line_candidates

        one_line_candidates()  # typer wraps each candidate's help at 80 columns (cli/completion.py)
    try:
        signal.signal(signal.SIGTERM, _on_sigterm)  # inside the try: a SIGTERM at any point below exits 143
        commands.register(app, None if completing else first)
        app()
    except KeyboardInterrupt:
        sys.stderr.write("terminated\n" if _STOP_SIGNALS else "interrupted\n")
        sys.exit(143 if _STOP_SIGNALS else 130)
    except SystemExit as exc:
        # typer turns a KeyboardInterrupt that leaves a command (one outside the engine's clean stop: while
        # the pipeline loads, the store opens, between checkpoint slices) into a silent exit 130
        if _STOP_SIGNALS and exc.code == 130:
            sys.stderr.write("terminated\n")
            sys.exit(143)
        raise
    except BrokenPipeError:
        # The reader of our stdout went away (`| head`): exit quietly like other Unix tools.
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(141)


def entry() -> None:
    """The console scripts `oxiflow` and `oxi`: :func:`main`, then a quick exit.

    When a command returns, oxiflow has closed all it opened (sinks renamed their files, DuckDB
    connections and the state store are closed). What Python's shutdown does after that, tearing
    down every module of typer, pydantic and DuckDB one by one, takes 20-30 ms of each start that
    nothing needs. So: run the atexit handlers (logging's flush, weakref finalizers such as temporary
    folders), flush stdout and stderr, and leave with ``os._exit``. While another non-daemon
    thread runs, the exit is Python's own, which waits for it. Call :func:`main` to stay in the
    interpreter (tests do).
    """
    import threading

    try:
        main()
        code: object = 0
    except SystemExit as exc:
        code = exc.code
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(code)  # type: ignore[arg-type]
    _leave(code)


def _leave(code: object) -> NoReturn:
    """Run the atexit handlers, flush, and exit with ``code`` (SystemExit's rules: None is 0, a text is
    printed and is 1) without tearing the interpreter down. The handlers come first: what they write
    (logging's last records) is flushed too."""
    import atexit
    import os

    if code is None:
        code = 0
    elif not isinstance(code, int):
        sys.stderr.write(f"{code}\n")
        code = 1
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
    except BrokenPipeError:  # the reader went away (`| head`), as in main()
        code = 141
    except (OSError, ValueError):
        code = code or 120  # what Python's own exit gives when the final flush of stdout fails
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os._exit(code)


if __name__ == "__main__":
    entry()
