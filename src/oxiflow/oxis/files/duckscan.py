"""Streaming scans through DuckDB: a table-function call in, Arrow batches out.

DuckDB's readers are parallel, type-sniffing and bounded in memory; we stream their result
as Arrow batches and turn their errors into DataErrors that name file, line and column.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa

from oxiflow.data import OxiData
from oxiflow.engine.duck import connect
from oxiflow.errors import DataError
from oxiflow.oxi import StepContext

_LINE = re.compile(r"(?:CSV Error on Line|line|Line)[:\s]+(\d+)")
_COLUMN = re.compile(r'column "?([^"\s]+)"?', re.IGNORECASE)
_FILE = re.compile(r"(?:file|File)[: ]+\"?([^\"\n]+?)\"?(?:\n|$|\s+on line)")


def duckdb_data_error(exc: Exception, files: list[str]) -> DataError:
    """Turn a DuckDB reader error into a DataError with file, line and column when it gives them."""
    text = str(exc)
    line_m = _LINE.search(text)
    col_m = _COLUMN.search(text)
    file = next((f for f in files if f in text), files[0] if len(files) == 1 else None)
    first = text.strip().splitlines()
    reason = " ".join(s.strip() for s in first[:6] if s.strip())
    return DataError(
        reason,
        file=file,
        line=int(line_m.group(1)) if line_m else None,
        column=col_m.group(1) if col_m else None,
        hint="fix the record, or set on_error: skip or on_error: dlq to set bad records aside",
    )


def stream_query(
    query: str,
    ctx: StepContext,
    files: list[str],
    *,
    metadata: dict[str, Any] | None = None,
    after: Callable[[Any], None] | None = None,
    on_error: Callable[[DataError], DataError] | None = None,
) -> OxiData:
    """Run ``query`` in a fresh DuckDB and stream its result. ``after(con)`` runs at the end of
    the stream (collecting rejects), before the connection closes; ``on_error`` may refine the
    DataError a reader failure becomes (a reader that can locate the bad line itself)."""

    def translate(exc: Exception) -> BaseException:
        err = translate_scan_error(exc, files)
        if on_error is not None and isinstance(err, DataError):
            err = on_error(err)
        return err

    con = connect(ctx, stream="read")
    query = scan_with_cursor(query, ctx)
    if ctx.limit_rows is not None:
        query = f"SELECT * FROM ({query}) LIMIT {int(ctx.limit_rows)}"
    try:
        reader = con.sql(query).to_arrow_reader(ctx.batch_size)
    except Exception as exc:
        con.close()
        raise translate(exc) from None

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    break
                except Exception as exc:
                    raise translate(exc) from None
                if batch.num_rows:
                    yield batch
            if after is not None:
                after(con)
        finally:
            con.close()

    return OxiData(reader.schema, batches(), metadata)


def scan_with_cursor(query: str, ctx: StepContext) -> str:
    """``query`` with the run's incremental bounds (rows mode) as a WHERE: DuckDB pushes it into the
    scan (row-group pruning on Parquet). A superset of the rows wanted; the engine filters exactly."""
    from oxiflow.engine.duck import ident, literal

    cursor = ctx.cursor
    if cursor is None or cursor.config.mode != "rows":
        return query
    where = cursor.where_sql(ident(cursor.config.cursor), literal)
    return query if where is None else f"SELECT * FROM ({query}) AS _oxi_inc WHERE {where}"


def translate_scan_error(exc: BaseException, files: list[str]) -> BaseException:
    """A DuckDB failure of a scan over ``files`` as the error oxiflow reports (DataError, RunCancelled)."""
    import duckdb

    if isinstance(exc, duckdb.InterruptException):
        from oxiflow.errors import RunCancelled

        return RunCancelled("query interrupted")
    # RuntimeError/OSError: DuckDB's Python bridge and Arrow export fail with these on corrupt input
    if isinstance(exc, duckdb.Error | pa.ArrowException | RuntimeError | OSError):
        return duckdb_data_error(exc, files)
    return exc
