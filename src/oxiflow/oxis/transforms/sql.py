"""sql: a DuckDB query over the step's inputs, each visible as a table named by its step id.

Inputs are registered as Arrow streams, never materialised: DuckDB pulls batches as the query
needs them and spills to disk past the step's memory limit. Every input arrives through its own
bounded queue from another thread, so DuckDB may pull from them in any order (a join reads its
build side first). The helpers here are shared with the relational oxis.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pydantic import Field

from oxiflow.data import OxiData
from oxiflow.engine.duck import connect, ident
from oxiflow.errors import RunCancelled, StepError
from oxiflow.oxi import OxiConfig, StepContext, Transform, oxi

if TYPE_CHECKING:  # a pushed-down sql step never needs Arrow: imported where batches flow
    import pyarrow as pa

_CONSUMED = "already been consumed"


def step_error(ctx: StepContext, message: str, hint: str | None = None) -> StepError:
    return StepError(message, step=ctx.step_id, hint=hint)


def duck_error(exc: BaseException, ctx: StepContext, what: str) -> Exception:
    """A DuckDB failure as an error that names the step and carries DuckDB's own message."""
    import duckdb

    if isinstance(exc, duckdb.InterruptException) or ctx.cancel.is_set():
        return RunCancelled("query interrupted", step=ctx.step_id)
    if isinstance(exc, RunCancelled):  # an upstream failure surfacing through the Arrow scan
        return exc
    text = str(exc).strip()
    hint = None
    if _CONSUMED in text:
        text = text.split(".")[0]
        hint = (
            "an input is a one-shot stream and can be scanned once; to use it twice, "
            "read it through a CTE: WITH t AS MATERIALIZED (SELECT * FROM step_id) ..."
        )
    elif isinstance(exc, duckdb.BinderException | duckdb.CatalogException | duckdb.ParserException):
        hint = "check the SQL and the column names (`oxiflow explain` shows every step's schema)"
    return step_error(ctx, f"{what} failed: {text}", hint)


def check_columns(ctx: StepContext, names: list[str], schema: pa.Schema, role: str = "column") -> None:
    """Raise a step error for the first name not in ``schema``, with a did-you-mean."""
    known = schema.names
    for name in names:
        if name not in known:
            match = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean {match[0]!r}?" if match else f"columns: {', '.join(known)}"
            raise step_error(ctx, f"unknown {role} {name!r}", hint)


def conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """Put ``schema`` (field metadata, nullability, exact types) back on a batch DuckDB produced."""
    import pyarrow as pa

    if batch.schema.names != schema.names:
        return batch
    if batch.schema.types == schema.types:
        return pa.RecordBatch.from_arrays(batch.columns, schema=schema)
    try:
        return batch.cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return batch


def stream_sql(
    query: str,
    tables: dict[str, pa.RecordBatchReader],
    ctx: StepContext,
    *,
    what: str = "query",
    schema: pa.Schema | None = None,
    on_end: Any = None,
) -> OxiData:
    """Run ``query`` over ``tables`` (registered as streams) in the step's DuckDB and stream the
    result in ``ctx.batch_size`` batches. ``schema`` (when the result has the same columns) is put
    back on every batch; ``on_end(rows_out)`` runs once the result is exhausted."""
    con = connect(ctx)
    error: Exception | None = None
    try:
        for name, table in tables.items():
            con.register(name, table)
        reader = con.sql(query).to_arrow_reader(ctx.batch_size)
    except Exception as exc:
        error = duck_error(exc, ctx, what)
    if error is not None:
        # raised outside the except block and without locals: a traceback that kept the
        # connection alive would outlive the run (nanobind reports it as a leak at exit)
        con.close()
        del con, tables
        raise error
    out_schema = reader.schema
    if schema is not None and out_schema.names == schema.names:
        out_schema = schema

    def batches() -> Iterator[pa.RecordBatch]:
        rows = 0
        try:
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    break
                except Exception as exc:
                    raise duck_error(exc, ctx, what) from None
                if batch.num_rows:
                    rows += batch.num_rows
                    yield conform(batch, out_schema)
            if on_end is not None:
                on_end(rows)
        finally:
            con.close()

    return OxiData(out_schema, batches())


class SqlConfig(OxiConfig):
    query: str = Field(min_length=1)
    """A DuckDB SELECT. Each input is a table named by its step id (the ids in the step's
    `inputs:`); a step with one input can also call it `input`."""
    tables: dict[str, str] = Field(default_factory=dict)
    """Extra table names for inputs: step id -> name (for ids that are awkward in SQL)."""


def table_names(ctx: StepContext, count: int, aliases: dict[str, str]) -> list[list[str]]:
    """The table names of each input, in order."""
    ids = ctx.input_ids if len(ctx.input_ids) == count else [f"input{i + 1}" for i in range(count)]
    unknown = [k for k in aliases if k not in ids]
    if unknown:
        match = difflib.get_close_matches(unknown[0], ids, n=1)
        raise step_error(
            ctx,
            f"`tables` names {unknown[0]!r}, which is not an input",
            f"did you mean {match[0]!r}?" if match else None,
        )
    names = [[i] + ([aliases[i]] if i in aliases else []) for i in ids]
    if count == 1 and "input" not in names[0]:
        names[0].append("input")
    return names


@oxi(
    "sql",
    kind="transform",
    config=SqlConfig,
    summary="Run a DuckDB SQL query over one or more inputs (joins, aggregations, windows).",
    example=(
        "- name: sql\n  inputs: [orders, customers]\n  config:\n    query: |\n"
        "      select o.*, c.country from orders o join customers c using (customer_id)"
    ),
    min_inputs=1,
    max_inputs=None,
    reshapes=True,
)
class Sql(Transform):
    config: SqlConfig

    def transform(self, inputs: list[OxiData], ctx: StepContext) -> OxiData:
        query = self.config.query.strip().rstrip(";")
        if ctx.limit_rows is not None:
            # explain: the inputs are empty, but the query may read files of its own
            query = f"SELECT * FROM ({query}) LIMIT {int(ctx.limit_rows)}"
        tables: dict[str, pa.RecordBatchReader] = {}
        for data, names in zip(inputs, table_names(ctx, len(inputs), self.config.tables), strict=True):
            reader = data.to_reader()
            for name in names:
                tables[name] = reader  # aliases share the one stream
        return stream_sql(query, tables, ctx)

    def pushdown_ready(self) -> bool:
        return True

    def pushdown_sql(self, input_view: str, ctx: StepContext) -> tuple[str, list[tuple[str, str]]]:
        names = table_names(ctx, 1, self.config.tables)[0]
        views = [(name, f"SELECT * FROM {ident(input_view)}") for name in names if name != input_view]
        return self.config.query.strip().rstrip(";"), views
