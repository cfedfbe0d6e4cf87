"""What `oxi schema` and `oxi count` compute: facts about an input, read as cheaply as possible.

``schema`` runs the verb's plan the way ``explain`` does (sources limited to zero rows), so it
reports exactly the schema the data would have in a pipe. ``count`` asks the source oxi for its
own count query when it has one (``ScanSQL.count_sql``: Parquet footers, DuckDB table metadata,
the same query a pushed-down pipeline step counts with); anything else is streamed through the
plan and counted, never held. A failure is reported on stderr and raised as ``VerbFailed``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

    from oxiflow.plan.build import Plan


def probe_schema(verb: str, plan: Plan) -> pa.Schema:
    """The output schema of the plan's last step (reads no rows)."""
    from oxiflow.engine.local import LocalEngine, RunOptions
    from oxiflow.pipe.plan import check_result

    engine = LocalEngine(plan, RunOptions(explain=True))
    check_result(verb, engine.run())
    return engine.schemas[plan.steps[-1].id]


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "0x" + raw.hex()


def _metadata(meta: dict[bytes, bytes] | None) -> dict[str, str]:
    return {_decode(k): _decode(v) for k, v in (meta or {}).items()}


def schema_json(schema: pa.Schema) -> dict[str, Any]:
    return {
        "fields": [
            {"name": f.name, "type": str(f.type), "nullable": f.nullable, "metadata": _metadata(f.metadata)}
            for f in schema
        ],
        "metadata": _metadata(schema.metadata),
    }


def schema_table(schema: pa.Schema) -> pa.Table:
    """One row per field: name, type, nullable, metadata (JSON text)."""
    import pyarrow as pa

    fields = schema_json(schema)["fields"]
    return pa.table(
        {
            "name": pa.array([f["name"] for f in fields], pa.string()),
            "type": pa.array([f["type"] for f in fields], pa.string()),
            "nullable": pa.array([f["nullable"] for f in fields], pa.bool_()),
            "metadata": pa.array(
                [json.dumps(f["metadata"], ensure_ascii=False) if f["metadata"] else None for f in fields], pa.string()
            ),
        }
    )


def emit_table(verb: str, table: pa.Table, fmt: str) -> None:
    """Write a small in-memory table to stdout through the pipe writer."""
    from oxiflow.data import OxiData
    from oxiflow.errors import RunCancelled
    from oxiflow.oxi import StepContext
    from oxiflow.pipe.plan import VerbFailed, report
    from oxiflow.pipe.stdio import WritePipe, WritePipeConfig

    ctx = StepContext(step_id="write_pipe", oxi_name="write_pipe", run_id=f"oxi-{verb}")
    try:
        WritePipe(WritePipeConfig(format=fmt)).write(OxiData.from_table(table), ctx)
    except RunCancelled:
        raise  # OutputClosed: the caller's shell manners exit 141
    except Exception as exc:
        report(verb, exc)
        raise VerbFailed(1) from None


def metadata_rows(steps: list[dict[str, Any]]) -> int | None:
    """The row count from the source oxi's own count query, when the input is one source that has
    one (no scan); None otherwise, and when that query fails (the streaming count then reports
    the problem with its file and position)."""
    if len(steps) != 1:
        return None
    import duckdb

    from oxiflow.engine.duck import connect
    from oxiflow.errors import OxiflowError
    from oxiflow.pipe.inputs import open_step

    try:
        opened = open_step(steps[0])
        scan = opened.scan()
    except OxiflowError:
        return None
    if scan is None or scan.count_sql is None:
        return None
    con = connect(opened.ctx, stream="read")
    try:
        row = con.execute(scan.count_sql).fetchone()
    except duckdb.Error:
        return None
    finally:
        con.close()
    return int(row[0]) if row else 0


def count_rows(verb: str, plan: Plan) -> int:
    """Stream the plan (sources only, nothing written) and count the rows of its last step."""
    from oxiflow.engine.local import RunOptions, run_plan
    from oxiflow.pipe.plan import check_result

    result = run_plan(plan, RunOptions())
    check_result(verb, result)
    last = plan.steps[-1].id
    return next(s.rows_out for s in result.steps if s.step_id == last)
