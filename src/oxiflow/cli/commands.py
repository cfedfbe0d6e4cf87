"""Command groups beyond run/validate: explain, init, pipeline, plugins.

Each group lives in its own module; only typer is imported here, so `oxi --help` stays fast.
"""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    from oxiflow.cli import explain, init, pipeline, plugins

    app.command("explain")(explain.explain)
    app.command("init")(init.init)
    app.add_typer(pipeline.app, name="pipeline")
    app.add_typer(plugins.app, name="plugins")
