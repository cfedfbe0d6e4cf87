"""Command groups beyond run/validate: explain, init, pipeline, plugins, the shell verbs, profile,
diff, state/runs/worker, contract, approve/approvals/schemas.

Each group lives in its own module. Typer turns every registered command into a click command
(evaluating its annotations) on each start, so only the group the first argument names is
registered: `oxiflow run` registers none, `oxi head` only the verbs; `--help`, completion and
anything unknown get them all.
"""

from __future__ import annotations

from collections.abc import Callable

import typer


def _core(app: typer.Typer) -> None:
    from oxiflow.cli import explain, init

    app.command("explain")(explain.explain)
    app.command("init")(init.init)


def _pipeline(app: typer.Typer) -> None:
    from oxiflow.cli import pipeline

    app.add_typer(pipeline.app, name="pipeline")


def _plugins(app: typer.Typer) -> None:
    from oxiflow.cli import plugins

    app.add_typer(plugins.app, name="plugins")


def _verbs(app: typer.Typer) -> None:
    from oxiflow.cli import verbs

    verbs.register(app)


def _profile(app: typer.Typer) -> None:
    from oxiflow.cli import profile

    profile.register(app)


def _diff(app: typer.Typer) -> None:
    from oxiflow.cli import diff

    diff.register(app)


def _state(app: typer.Typer) -> None:
    from oxiflow.cli import state

    app.add_typer(state.app, name="state")
    app.add_typer(state.runs_app, name="runs")
    app.add_typer(state.worker_app, name="worker")


def _contract(app: typer.Typer) -> None:
    from oxiflow.cli import contract

    contract.register(app)


def _approvals(app: typer.Typer) -> None:
    from oxiflow.cli import approvals

    approvals.register(app)


def _dlq(app: typer.Typer) -> None:
    from oxiflow.cli import dlq

    dlq.register(app)


GROUPS: dict[str, Callable[[typer.Typer], None]] = {
    "explain": _core,
    "init": _core,
    "pipeline": _pipeline,
    "plugins": _plugins,
    "profile": _profile,
    "diff": _diff,
    "state": _state,
    "runs": _state,
    "worker": _state,
    "contract": _contract,
    "dlq": _dlq,
    "approve": _approvals,
    "approvals": _approvals,
    "schemas": _approvals,
}
CORE = ("run", "validate")  # defined in main.py itself


def register(app: typer.Typer, first: str | None = None) -> None:
    """Register the group ``first`` (the command typed) belongs to; every group when it is None or unknown."""
    if first in CORE:
        return
    if first in GROUPS:
        GROUPS[first](app)
        return
    from oxiflow.cli.verbs import VERBS

    if first in VERBS:
        _verbs(app)
        return
    for add in dict.fromkeys([*GROUPS.values(), _verbs]):
        add(app)
