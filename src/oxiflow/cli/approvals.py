"""`oxiflow approve`, `oxiflow approvals`, `oxiflow schemas list|show|compat`: the schema registry and its
human gate from the command line (docs/schema-evolution.md).

(`oxiflow schema FILE` is the shell verb printing a file's schema, hence `schemas` for the registry.)
Only typer is imported at module level (fast --help); the store is imported inside the commands.
"""

from __future__ import annotations

import getpass
import os
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from oxiflow.cli import output
from oxiflow.cli.options import ConfigOpt, JsonOpt
from oxiflow.cli.state import StateUrlOpt, _print_rows, _store, _store_or_empty

if TYPE_CHECKING:
    from oxiflow.state.approvals import Registry
    from oxiflow.state.store import StateStore

schemas_app = typer.Typer(
    help="The schema registry: every dataset's schema versions, drift and compatibility.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
DatasetArg = Annotated[str, typer.Argument(help="A dataset name, as `oxiflow schemas list` shows it.")]
_APPROVAL_COLUMNS = ["dataset", "status", "changes", "requested_at", "run_id", "approved_by", "approved_at", "reason"]


def _user() -> str:
    try:
        return os.environ.get("USER") or getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return "unknown"


def _registry(store: StateStore) -> Registry:
    from oxiflow.state.approvals import Registry

    return Registry(store)


def _unknown(registry: Registry, dataset: str, what: str) -> typer.Exit:
    import difflib

    known = registry.datasets()
    if dataset in known:  # known (settings, approvals) but without what was asked for: say why, not "did you mean"
        pending = registry.approvals(dataset, pending_only=True)
        if what == "no pending approval":
            hint = "nothing is waiting; `oxiflow approvals --all` lists the decided ones"
        elif pending:
            hint = (f"its runs are waiting for approval of a breaking change: `oxiflow approvals --dataset "
                    f"{dataset}`, then `oxiflow approve {dataset}`")  # fmt: skip
        else:
            hint = "no run has written it yet"
        output.err(f"error: {what} for dataset {dataset!r} ({hint})")
        return typer.Exit(1)
    match = difflib.get_close_matches(dataset, known, n=1)
    hint = f"did you mean {match[0]!r}?" if match else "see `oxiflow schemas list`"
    output.err(f"error: {what} for dataset {dataset!r} ({hint})")
    return typer.Exit(1)


def approve(
    dataset: DatasetArg,
    reason: Annotated[str | None, typer.Option("--reason", "-r", help="Why the change is accepted.")] = None,
    by: Annotated[str | None, typer.Option("--by", help="Who approves (default: $USER).")] = None,
    state_url: StateUrlOpt = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Accept the breaking schema change a run of DATASET was stopped for; the next run publishes it.

    Recorded with who, when and why (`oxiflow approvals --all`).

    Example: oxiflow approve warehouse.duckdb:orders --reason "amount is text upstream now, ticket 123"
    """
    from oxiflow.state.store import StateError

    with _store(state_url, config) as store:
        registry = _registry(store)
        try:
            approval = registry.approve(dataset, by=by or _user(), reason=reason)
        except StateError:
            raise _unknown(registry, dataset, "no pending approval") from None
    if json_out:
        output.print_json(approval.to_dict())
        return
    output.err(
        f"approved the schema change of {dataset} (by {approval.approved_by} at {approval.approved_at}): "
        + "; ".join(approval.changes)
    )
    output.err("the next run publishes it")


def approvals(
    pending: Annotated[bool, typer.Option("--pending", help="Only changes waiting for approval (default).")] = False,
    all_: Annotated[
        bool, typer.Option("--all", help="Every approval: pending, approved, applied, superseded.")
    ] = False,
    dataset: Annotated[str | None, typer.Option("--dataset", "-d", help="Only this dataset's.")] = None,
    state_url: StateUrlOpt = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Breaking schema changes waiting for a person (`--all`: with those decided, who, when, why).

    Example: oxiflow approvals --all --json
    """
    if pending and all_:
        output.fail_usage("--pending and --all exclude each other")
    with _store_or_empty(state_url, config) as store:
        rows = [a.to_dict() for a in _registry(store).approvals(dataset, pending_only=not all_)] if store else []
    if json_out:
        output.print_json(rows)
    elif not rows:
        output.err("no pending approvals" if not all_ else "no approvals recorded")
    else:
        for r in rows:
            r["changes"] = "; ".join(r["changes"])
        _print_rows(rows, _APPROVAL_COLUMNS)


@schemas_app.command("list")
def schemas_list(state_url: StateUrlOpt = None, config: ConfigOpt = None, json_out: JsonOpt = False) -> None:
    """Datasets in the registry: latest version, compatibility mode, schema-contract modes, pending approvals.

    Example: oxiflow schemas list
    """
    rows: list[dict[str, Any]] = []
    with _store_or_empty(state_url, config) as store:
        if store is not None:
            registry = _registry(store)
            for name in registry.datasets():
                latest = store.latest_schema(name)
                settings = registry.settings(name)
                rows.append(
                    {
                        "dataset": name,
                        "version": latest.version if latest else None,
                        "columns": len(latest.fields) if latest else None,
                        "registered_at": latest.created_at if latest else None,
                        "compatibility": settings.compatibility if settings else None,
                        "schema_contract": settings.schema_contract if settings else None,
                        "contract": settings.contract if settings else None,
                        "pending_approvals": len(registry.approvals(name, pending_only=True)),
                    }
                )
    if json_out:
        output.print_json(rows)
    elif not rows:
        output.err("no datasets in the schema registry yet")
    else:
        for r in rows:
            modes = set((r["schema_contract"] or {}).values())
            r["schema_contract"] = modes.pop() if len(modes) == 1 else r["schema_contract"]
        _print_rows(rows, ["dataset", "version", "columns", "registered_at", "compatibility", "schema_contract",
                           "pending_approvals"])  # fmt: skip


@schemas_app.command("show")
def schemas_show(
    dataset: DatasetArg,
    version: Annotated[int | None, typer.Option("--version", "-V", min=1, help="Default: the latest.")] = None,
    state_url: StateUrlOpt = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """One version of a dataset's schema (columns, types, nullability) and the drift that led to it.

    Example: oxiflow schemas show warehouse.duckdb:orders --version 2
    """
    with _store(state_url, config) as store:
        registry = _registry(store)
        versions = store.schema_versions(dataset)
        if not versions:
            raise _unknown(registry, dataset, "no schema versions")
        chosen = versions[-1] if version is None else next((v for v in versions if v.version == version), None)
        if chosen is None:
            output.err(f"error: dataset {dataset} has versions 1 to {versions[-1].version}, not {version}")
            raise typer.Exit(1)
        drift = registry.drift(dataset, chosen.version)
    fields = [{k: f[k] for k in ("name", "type", "nullable")} for f in chosen.fields]
    doc = {
        "dataset": dataset,
        "version": chosen.version,
        "versions": len(versions),
        "fingerprint": chosen.fingerprint,
        "created_at": chosen.created_at,
        "fields": fields,
        "drift": drift,
    }
    if json_out:
        output.print_json(doc)
        return
    sys.stdout.write(f"dataset {dataset}: version {chosen.version} of {len(versions)} ({chosen.created_at})\n")
    _print_rows(fields, ["name", "type", "nullable"])
    if drift:
        _print_rows(drift, ["column", "kind", "old", "new", "action"], "drift from the previous version")


@schemas_app.command("compat")
def schemas_compat(
    dataset: DatasetArg,
    mode: Annotated[
        str | None,
        typer.Option("--mode", "-m", help="backward, forward, full or none (default: the dataset's own mode)."),
    ] = None,
    state_url: StateUrlOpt = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Check every version of a dataset against the one before it under a compatibility mode.

    Exits 1 when a version is not compatible with its predecessor.

    Example: oxiflow schemas compat warehouse.duckdb:orders --mode full
    """
    import itertools

    from oxiflow.contracts.schema_diff import COMPATIBILITY, compatibility_problems

    if mode is not None and mode not in COMPATIBILITY:
        output.fail_usage(f"--mode must be one of {', '.join(COMPATIBILITY)}, got {mode!r}")
    with _store(state_url, config) as store:
        registry = _registry(store)
        versions = store.schema_versions(dataset)
        if not versions:
            raise _unknown(registry, dataset, "no schema versions")
        settings = registry.settings(dataset)
        used = mode or (settings.compatibility if settings else "backward")
        pairs: list[dict[str, Any]] = [
            {
                "from": old.version,
                "to": new.version,
                "compatible": not (problems := compatibility_problems(old.schema, new.schema, used)),
                "problems": problems,
            }
            for old, new in itertools.pairwise(versions)
        ]
    ok = all(p["compatible"] for p in pairs)
    if json_out:
        output.print_json({"dataset": dataset, "mode": used, "compatible": ok, "pairs": pairs})
    else:
        sys.stdout.write(f"dataset {dataset}, compatibility {used}: {'compatible' if ok else 'NOT compatible'}\n")
        for p in pairs:
            verdict = "ok" if p["compatible"] else "; ".join(p["problems"])
            sys.stdout.write(f"  v{p['from']} -> v{p['to']}: {verdict}\n")
        if not pairs:
            sys.stdout.write(f"  only one version (v{versions[0].version})\n")
    if not ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("approve")(approve)
    app.command("approvals")(approvals)
    app.add_typer(schemas_app, name="schemas")
