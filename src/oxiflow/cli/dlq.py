"""`oxiflow dlq list|show|export|purge|replay`: the dead-letter queue table of the state store.

Only typer is imported at module level (fast --help); the store and the engine inside the commands.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from oxiflow.cli import output
from oxiflow.cli.options import ConfigOpt, JsonOpt, VarsOpt, parse_vars
from oxiflow.cli.state import StateUrlOpt, _print_rows, _store, _store_or_empty, parse_duration

if TYPE_CHECKING:
    from oxiflow.state.dlq import DlqRecord

app = typer.Typer(
    help="Dead-letter queue: records steps rejected, with rule and reason (docs/quality.md).",
    no_args_is_help=True,
    rich_markup_mode=None,
)

PipelineOpt = Annotated[str | None, typer.Option("--pipeline", "-p", help="Only this pipeline (its name).")]
RunOpt = Annotated[str | None, typer.Option("--run", "-r", help="Only this run id.")]
PendingOpt = Annotated[bool, typer.Option("--pending", help="Only records not replayed yet.")]


def _table(store: Any) -> Any:
    from oxiflow.state.dlq import DlqTable

    return DlqTable(store)


@app.command("list")
def dlq_list(
    pipeline: PipelineOpt = None,
    run: RunOpt = None,
    pending: PendingOpt = False,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="At most this many records.")] = 100,
    state_url: StateUrlOpt = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Dead-lettered records, oldest first: id, run, step, rule, reason, replayed.

    Example: oxiflow dlq list --pipeline orders --run 20250101T000000-abc123
    """
    with _store_or_empty(state_url, config) as store:
        records = _table(store).records(pipeline=pipeline, run_id=run, pending=pending, limit=limit) if store else []
    if json_out:
        output.print_json([r.to_dict() for r in records])
        return
    if not records:
        output.err("no dead-lettered records")
        return
    rows = [
        {
            "id": r.id,
            "pipeline": r.pipeline,
            "run_id": r.run_id,
            "step": r.step,
            "rule": r.rule or "",
            "reason": (r.reason or "")[:80],
            "replayed": r.replay_run_id or "",
        }
        for r in records
    ]
    _print_rows(rows, ["id", "pipeline", "run_id", "step", "rule", "reason", "replayed"])


@app.command("show")
def dlq_show(
    record_id: Annotated[str, typer.Argument(help="A record id (a unique prefix is enough).")],
    state_url: StateUrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """One record in full, as JSON: raw record, offending values, rule, reason, run, step.

    Example: oxiflow dlq show 3f2a9c
    """
    with _store(state_url, config) as store:
        record = _table(store).get(record_id)
    if record is None:
        output.err(f"error: no dead-lettered record {record_id!r} (or the prefix is not unique)")
        raise typer.Exit(1)
    output.print_json(record.to_dict())


@app.command("export")
def dlq_export(
    path: Annotated[Path, typer.Argument(help="The file to write ('-': stdout, jsonl only).")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="jsonl, csv or parquet.")] = "jsonl",
    pipeline: PipelineOpt = None,
    run: RunOpt = None,
    pending: PendingOpt = False,
    state_url: StateUrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Write records to a file. JSON Lines keep `raw` as an object: fix it and `replay --from-file`.
    CSV and Parquet hold `raw` and `values` as JSON text.

    Example: oxiflow dlq export --pipeline orders --format jsonl rejected.jsonl
    """
    if fmt not in ("jsonl", "csv", "parquet"):
        output.fail_usage(f"--format must be jsonl, csv or parquet, got {fmt!r}")
    if str(path) == "-" and fmt != "jsonl":
        output.fail_usage("only --format jsonl can go to stdout")
    with _store(state_url, config) as store:
        records = _table(store).records(pipeline=pipeline, run_id=run, pending=pending)
    _write_export(records, path, fmt)
    output.err(f"exported {len(records)} record(s) to {path}")


def _write_export(records: list[DlqRecord], path: Path, fmt: str) -> None:
    docs = [r.to_dict() for r in records]
    if fmt == "jsonl":
        text = "".join(json.dumps(d, default=str, ensure_ascii=False) + "\n" for d in docs)
        if str(path) == "-":
            sys.stdout.write(text)
        else:
            path.write_text(text, encoding="utf-8")
        return
    import pyarrow as pa

    flat = [{**d, **{k: json.dumps(d[k], default=str) for k in ("raw", "values", "masked")}} for d in docs]
    names = list(docs[0]) if docs else ["id", "pipeline", "run_id", "step", "rule", "reason", "raw", "values"]
    table = pa.Table.from_pylist(
        flat, schema=pa.schema([(n, pa.int64() if n == "line" else pa.string()) for n in names])
    )
    if fmt == "csv":
        import pyarrow.csv as pcsv

        pcsv.write_csv(table, path)
    else:
        import pyarrow.parquet as pq

        pq.write_table(table, path)


@app.command("purge")
def dlq_purge(
    older_than: Annotated[
        str | None, typer.Option("--older-than", help="Delete records older than this: 30d, 12h, 2w.")
    ] = None,
    run: RunOpt = None,
    pipeline: PipelineOpt = None,
    state_url: StateUrlOpt = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Delete records: those older than a duration, or those of one run.

    Example: oxiflow dlq purge --older-than 30d
    """
    from datetime import timedelta

    from oxiflow.state.store import iso_before

    if older_than is None and run is None:
        output.fail_usage("say what to purge: --older-than 30d or --run RUN_ID")
    before = iso_before(timedelta(seconds=parse_duration(older_than))) if older_than else None
    with _store(state_url, config) as store:
        n = _table(store).purge(before=before, run_id=run, pipeline=pipeline)
    if json_out:
        output.print_json({"deleted": n})
    else:
        output.err(f"deleted {n} dead-lettered record(s)")


@app.command("replay")
def dlq_replay(
    pipeline: Annotated[str, typer.Option("--pipeline", "-p", help="The pipeline (a file, or a name in the project).")],
    run: RunOpt = None,
    from_file: Annotated[
        Path | None,
        typer.Option("--from-file", help="Fixed records: `dlq export --format jsonl` lines with `raw` corrected."),
    ] = None,
    step: Annotated[str | None, typer.Option("--step", help="Only records rejected by this step.")] = None,
    var: VarsOpt = None,
    state_url: StateUrlOpt = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Send dead-lettered records back through the pipeline, from the step that rejected them.

    Without --from-file, the records not replayed yet are sent as stored (after fixing the rule or the
    upstream); with it, the file's (fixed) records. The replay is a new run of the pipeline; replayed
    records are marked with its run id, and rows it rejects again are dead-lettered again.

    Example: oxiflow dlq export -p orders fixed.jsonl && $EDITOR fixed.jsonl &&
    oxiflow dlq replay -p pipelines/orders.yaml --from-file fixed.jsonl
    """
    from oxiflow.cli.main import _open_session
    from oxiflow.engine.local import RunOptions, new_run_id, run_plan
    from oxiflow.state import replay as rp
    from oxiflow.state.dlq import DlqTable
    from oxiflow.state.store import StateError, open_store, resolve_url

    output.setup_logging()
    variables = parse_vars(var)
    plan = output.load_or_exit(pipeline, variables, config)
    try:
        with open_store(resolve_url(state_url, plan.project, plan.base_dir)) as store:
            table = DlqTable(store)
            # records of values `discard_value` nulled describe rows that were written: replaying them would
            # write those rows twice
            from oxiflow.contracts.enforce import VALUES_RULE

            if from_file is not None:
                items = rp.items_from_file(from_file, table)
                items = [i for i in items if not (i.id and getattr(table.get(i.id), "rule", None) == VALUES_RULE)]
            else:
                records = table.records(pipeline=plan.name, run_id=run, pending=True)
                items = rp.items_from_table([r for r in records if r.rule != VALUES_RULE])
            schemas = {fp: table.schema(fp) for fp in {i.schema_fp for i in items} if fp}
    except (StateError, rp.ReplayError) as exc:
        output.err(f"error: {exc}")
        raise typer.Exit(exc.exit_code) from None
    if step is not None:
        items = [i for i in items if i.step == step]
    if not items:
        output.err("nothing to replay")
        if json_out:
            output.print_json({"replayed": 0, "runs": []})
        return
    summary: list[dict[str, Any]] = []
    code = 0
    for step_id in dict.fromkeys(i.step for i in items):
        group = [i for i in items if i.step == step_id]
        try:
            rp.check_unmasked(group)
            fps = {i.schema_fp or "" for i in group}
            stored = schemas.get(fps.pop()) if len(fps) == 1 else None  # else: probe it, as explain does
            schema = stored if stored is not None else rp.input_schema(plan, step_id)
            with rp.scratch_dir() as tmp:
                replay = rp.replay_plan(plan, step_id, rp.write_records(group, schema, Path(tmp)))
                run_id = new_run_id()
                session = _open_session(replay, run_id, state_url, False, None, json_out)
                try:
                    result = run_plan(replay, RunOptions(variables=variables, run_id=run_id, state=session.store,
                                                         observers=[session.recorder]))  # fmt: skip
                    marked = 0
                    if result.status == "ok":
                        marked = DlqTable(session.store).mark_replayed([i.id for i in group if i.id], run_id)
                finally:
                    session.close()
        except rp.ReplayError as exc:
            output.err(f"error: {exc}")
            raise typer.Exit(exc.exit_code) from None
        code = max(code, result.exit_code)
        summary.append(
            {"step": step_id, "run_id": run_id, "status": result.status, "records": len(group), "marked": marked,
             "rejected_again": result.dlq_count, "error": str(result.error) if result.error else None}
        )  # fmt: skip
        if not json_out:
            output.print_result(result, json_out=False, quiet=False)
            output.err(f"replayed {len(group)} record(s) of step {step_id} as run {run_id}: {result.status}")
    if json_out:
        output.print_json({"replayed": sum(s["records"] for s in summary if s["status"] == "ok"), "runs": summary})
    raise typer.Exit(code)


def register(app_: typer.Typer) -> None:
    app_.add_typer(app, name="dlq")
