"""`oxiflow pipeline list|add|test|info`: the pipelines of a project."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from oxiflow.cli import output
from oxiflow.cli.options import ConfigOpt, JsonOpt, VarsOpt, parse_vars

if TYPE_CHECKING:
    from oxiflow.config.load import Project

app = typer.Typer(help="List, create, test and describe the pipelines of a project.", no_args_is_help=True)

TEMPLATES = ("basic", "etl", "batch", "streaming", "api", "validation")
# the sample input each template reads (templates/data/TEMPLATE.EXT), written as DATA_DIR/NAME.EXT so a
# new pipeline runs, and passes its own `tests:`, before it is pointed at real data
TEMPLATE_DATA = {"basic": "csv", "etl": "csv", "batch": "csv", "streaming": "jsonl", "api": "json", "validation": "csv"}
NameArg = Annotated[str, typer.Argument(help="A pipeline name in the project (or a path to a .yaml file).")]


def _project(config: Path | None) -> Project | None:
    from oxiflow.config.load import find_project, load_project
    from oxiflow.errors import ConfigError

    try:
        return load_project(config) if config else find_project()
    except ConfigError as exc:
        output.err(f"error: {exc}")
        raise typer.Exit(2) from None


def _pipeline_dir(project: Project | None) -> Path:
    return project.pipeline_dir if project else Path("pipelines")


def _summary(path: Path) -> dict[str, Any]:
    """Name, description, tags and step count, read without validating (a broken file still lists)."""
    from oxiflow.config.yaml_positions import load_yaml
    from oxiflow.errors import ConfigError

    entry: dict[str, Any] = {"name": path.stem, "file": str(path), "description": "", "tags": [], "steps": None}
    try:
        data, _ = load_yaml(path.read_text(encoding="utf-8"), str(path))
    except ConfigError as exc:
        entry["error"] = str(exc.issues[0]) if exc.issues else str(exc)
        return entry
    if isinstance(data, dict):
        raw_meta = data.get("metadata")
        meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
        entry["description"] = str(meta.get("description") or "")
        tags = meta.get("tags") or []
        entry["tags"] = [str(t) for t in tags] if isinstance(tags, list) else [str(tags)]
        steps = data.get("pipeline")
        entry["steps"] = len(steps) if isinstance(steps, list) else None
    return entry


@app.command("list")
def list_(
    tags: Annotated[bool, typer.Option("--tags", help="Show each pipeline's tags.")] = False,
    filter_: Annotated[
        str | None, typer.Option("--filter", help="Only pipelines whose name, description or a tag contains TEXT.")
    ] = None,
    json_out: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """List the pipelines in the project's pipeline folder.

    Example: oxiflow pipeline list --tags --filter daily
    """
    folder = _pipeline_dir(_project(config))
    files = sorted(p for p in folder.glob("*.y*ml") if p.suffix in (".yaml", ".yml")) if folder.is_dir() else []
    entries = [_summary(p) for p in files]
    if filter_:
        needle = filter_.lower()
        entries = [
            e
            for e in entries
            if needle in e["name"].lower()
            or needle in e["description"].lower()
            or any(needle in t.lower() for t in e["tags"])
        ]
    if json_out:
        output.print_json(entries)
        return
    if not entries:
        output.err(f"no pipelines in {folder}" + (f" matching {filter_!r}" if filter_ else ""))
        return
    width = max(len(e["name"]) for e in entries)
    for e in entries:
        line = f"{e['name']:<{width}}  {e['description'] or e.get('error', '')}"
        if tags:
            line += f"  [{', '.join(e['tags'])}]"
        print(line.rstrip())


@app.command()
def add(
    name: Annotated[str, typer.Argument(help="Name of the new pipeline (file pipelines/NAME.yaml).")],
    template: Annotated[str, typer.Option("--template", "-t", help=f"One of: {', '.join(TEMPLATES)}.")] = "basic",
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing pipeline file.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Create a pipeline from a template.

    streaming and api are file-based placeholders until oxiflow has broker and HTTP sources.

    Example: oxiflow pipeline add orders --template etl
    """
    import difflib

    from oxiflow.cli.init import template_text

    if template not in TEMPLATES:
        match = difflib.get_close_matches(template, TEMPLATES, n=1)
        hint = f"did you mean {match[0]!r}? " if match else ""
        output.fail_usage(f"unknown template {template!r} ({hint}choose one of: {', '.join(TEMPLATES)})")
    if not re.fullmatch(r"[A-Za-z0-9_\-]+", name):
        output.fail_usage(f"pipeline name {name!r}: use letters, digits, '_' or '-'")
    project = _project(config)
    folder = _pipeline_dir(project)
    dest = folder / f"{name}.yaml"
    if dest.exists() and not force:
        output.fail_usage(f"{dest} already exists (pass --force to overwrite)")
    folder.mkdir(parents=True, exist_ok=True)
    dest.write_text(template_text(f"pipelines/{template}.yaml").replace("__NAME__", name), encoding="utf-8")
    said = [f"created {dest} from template {template!r}"]
    sample = _sample_input(project, folder, name, TEMPLATE_DATA[template])
    if not sample.exists():
        sample.parent.mkdir(parents=True, exist_ok=True)
        sample.write_text(template_text(f"data/{template}.{TEMPLATE_DATA[template]}"), encoding="utf-8")
        said.append(f"created {sample} (sample input: replace it with your data)")
    output.err("\n".join([*said, f"next: oxiflow pipeline test {name}"]))


def _sample_input(project: Project | None, folder: Path, name: str, ext: str) -> Path:
    """Where the template's ``${DATA_DIR:-data}/NAME.EXT`` points: below the project root (DATA_DIR from
    the project's environment), or below the pipeline's folder outside a project."""
    import os

    if project is not None:
        data_dir = os.environ.get("DATA_DIR") or str(project.model.environment.get("DATA_DIR") or "data")
        base = project.root
    else:
        data_dir, base = os.environ.get("DATA_DIR") or "data", folder
    return (Path(data_dir) if Path(data_dir).is_absolute() else base / data_dir) / f"{name}.{ext}"


@app.command()
def test(
    name: NameArg,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only check the file; do not run its tests.")] = False,
    fix: Annotated[
        bool,
        typer.Option(
            "--fix",
            help="First repair, in the file, what validation is sure of (a misspelt key, oxi name or step "
            "reference with one close match); then check and test as usual.",
        ),
    ] = False,
    schema: Annotated[bool, typer.Option("--schema", help="Also probe every step's output schema.")] = False,
    var: VarsOpt = None,
    json_out: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Check a pipeline (structure, variables, references; --schema: schemas) and run its `tests:` block.

    Each test sets `vars`, runs the pipeline with OUTPUT_DIR pointing at a scratch folder, and
    checks `expect.status` and `expect.rows` (rows out per step id). Exit 0: all good;
    1: a test or a schema probe failed; 2: the file is invalid.

    Example: oxiflow pipeline test sample --schema
    Example: oxiflow pipeline test sample --fix
    """
    from oxiflow.cli.pipeline_tests import check_pipeline

    report = check_pipeline(
        name, parse_vars(var), config, run_tests=not dry_run, probe_schema=schema, quiet=json_out, fix=fix
    )
    if json_out:
        output.print_json(report)
    raise typer.Exit(report["exit_code"])


@app.command()
def info(
    name: NameArg,
    schema: Annotated[bool, typer.Option("--schema", help="Add every step's output schema (probed).")] = False,
    json_out: JsonOpt = False,
    yaml_out: Annotated[bool, typer.Option("--yaml", help="YAML on stdout.")] = False,
    var: VarsOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Describe a pipeline: metadata, variables, steps with their inputs and config, tests.

    Example: oxiflow pipeline info sample --schema --yaml
    """
    plan = output.load_or_exit(name, parse_vars(var), config)
    from oxiflow.cli.pipeline_tests import describe

    data = describe(plan, probe_schema=schema)
    if json_out:
        output.print_json(data)
    elif yaml_out:
        import yaml

        print(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), end="")
    else:
        output.print_info(data)
