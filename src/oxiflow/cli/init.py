"""`oxiflow init`: a new project in the Oxide Flow layout, with a sample pipeline that runs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from oxiflow.cli import output

# template file (under templates/project) -> where it goes in the new project
PROJECT_FILES = {
    "oxiflow.yaml": "oxiflow.yaml",
    "pipelines/sample.yaml": "pipelines/sample.yaml",
    "data/sample.csv": "data/sample.csv",
    "gitignore": ".gitignore",
}


def template_text(relative: str) -> str:
    from importlib.resources import files

    return files("oxiflow").joinpath("templates", *relative.split("/")).read_text(encoding="utf-8")


def init(
    name: Annotated[str | None, typer.Option("--name", "-n", help="Project name (default: the folder's name).")] = None,
    directory: Annotated[
        Path | None, typer.Option("--dir", "-d", help="Where to create it (default: ./NAME, or . without a name).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite files that already exist.")] = False,
) -> None:
    """Create a project: oxiflow.yaml, pipelines/ with a sample pipeline, data/ with its input, output/, oxis/.

    Example: oxiflow init -n shop && cd shop && oxiflow run sample
    """
    target = directory or (Path(name) if name else Path("."))
    project_name = name or target.resolve().name
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", project_name):
        output.fail_usage(f"project name {project_name!r}: use letters, digits, '_', '-' or '.'")
    existing = [rel for rel in PROJECT_FILES.values() if (target / rel).exists()]
    if existing and not force:
        output.fail_usage(f"{target / existing[0]} already exists; pass --force to overwrite, or choose another --dir")
    for source, rel in PROJECT_FILES.items():
        dest = target / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(template_text(f"project/{source}").replace("__NAME__", project_name), encoding="utf-8")
    (target / "output").mkdir(exist_ok=True)
    (target / "oxis").mkdir(exist_ok=True)  # settings.oxis_dir: the project's own oxis (*.py), as in Oxide Flow
    where = "" if target == Path(".") else f"cd {target} && "
    output.err(f"created project {project_name!r} in {target}\nnext: {where}oxiflow run sample")
