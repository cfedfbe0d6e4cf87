"""What `oxi schema` and `oxi count` compute: facts about an input, read as cheaply as possible.

``schema`` runs the verb's plan the way ``explain`` does (sources limited to zero rows), so it
reports exactly the schema the data would have in a pipe. ``count`` reads Parquet footers when
every input is Parquet; anything else is streamed through the plan and counted, never held.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

    from oxiflow.plan.build import Plan


def probe_schema(verb: str, plan: Plan) -> pa.Schema | None:
    """The output schema of the plan's last step (reads no rows); None after reporting an error."""
    from oxiflow.engine.local import LocalEngine, RunOptions
    from oxiflow.pipe.plan import report

    engine = LocalEngine(plan, RunOptions(explain=True))
    result = engine.run()
    if result.error is not None:
        report(verb, result.error)
        return None
    return engine.schemas.get(plan.steps[-1].id)


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


def emit_table(verb: str, table: pa.Table, fmt: str) -> int:
    """Write a small in-memory table to stdout through the pipe writer; the exit code."""
    from oxiflow.data import OxiData
    from oxiflow.errors import RunCancelled
    from oxiflow.oxi import StepContext
    from oxiflow.pipe.plan import report
    from oxiflow.pipe.stdio import WritePipe, WritePipeConfig

    ctx = StepContext(step_id="write_pipe", oxi_name="write_pipe", run_id=f"oxi-{verb}")
    try:
        WritePipe(WritePipeConfig(format=fmt)).write(OxiData.from_table(table), ctx)
    except RunCancelled as exc:
        return int(getattr(exc, "exit_code", 1))
    except Exception as exc:
        report(verb, exc)
        return 1
    return 0


def parquet_rows(steps: list[dict[str, Any]]) -> int | None:
    """The row count from the Parquet footers, when the input is one read_parquet step."""
    if len(steps) != 1 or steps[0]["name"] != "read_parquet":
        return None
    import pyarrow.parquet as pq

    from oxiflow.errors import DataError
    from oxiflow.oxi import StepContext
    from oxiflow.oxis.files.common import expand_paths

    ctx = StepContext(step_id="read_parquet", oxi_name="read_parquet", run_id="oxi-count", base_dir=Path.cwd())
    try:
        files = expand_paths(steps[0]["config"]["path"], ctx, (".parquet", ".parq", ".pq"))
        return sum(pq.read_metadata(f).num_rows for f in files)
    except (DataError, OSError, ValueError):  # unreadable footer: the scan reports it properly
        return None


def count_rows(verb: str, plan: Plan) -> int | None:
    """Stream the plan (sources only, nothing written) and count the rows of its last step."""
    from oxiflow.engine.local import RunOptions, run_plan
    from oxiflow.pipe.plan import report

    result = run_plan(plan, RunOptions())
    if result.error is not None:
        report(verb, result.error)
        return None
    last = plan.steps[-1].id
    return next(s.rows_out for s in result.steps if s.step_id == last)
