"""Streaming scans through DuckDB: a table-function call in, Arrow batches out.

DuckDB's readers are parallel, type-sniffing and bounded in memory; we stream their result
as Arrow batches and turn their errors into DataErrors that name file, line and column.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from oxiflow.data import OxiData
from oxiflow.engine.duck import connect
from oxiflow.errors import DataError
from oxiflow.oxi import StepContext

if TYPE_CHECKING:
    import pyarrow as pa

_LINE = re.compile(r"(?:CSV Error on Line|line|Line)[:\s]+(\d+)")
_COLUMN = re.compile(r'column "?([^"\s]+)"?', re.IGNORECASE)
_FILE = re.compile(r"(?:file|File)[: ]+\"?([^\"\n]+?)\"?(?:\n|$|\s+on line)")
# DuckDB quotes the statement an error points into ("LINE 1: CREATE TEMP VIEW ... ^^^"): oxiflow's own
# SQL, not the user's data, and it would make a pushed-down chain's error differ from the streamed one's
_QUERY_CONTEXT = re.compile(r"\n\s*LINE \d+:.*", re.S)


def duckdb_data_error(exc: Exception, files: list[str]) -> DataError:
    """Turn a DuckDB reader error into a DataError with file, line and column when it gives them."""
    text = _QUERY_CONTEXT.sub("", str(exc))
    if "CSV Error on Line" in text:
        return _csv_record_error(text, files)
    line_m = _LINE.search(text)
    col_m = _COLUMN.search(text)
    file = next((f for f in files if f in text), files[0] if len(files) == 1 else None)
    first = text.strip().splitlines()
    reason = " ".join(s.strip() for s in first[:6] if s.strip())
    hint = "fix the record, or set on_error: skip or on_error: dlq to set bad records aside"
    if "Error when sniffing file" in text or "detect the CSV parsing dialect" in text:
        # no record was read at all: on_error (which sets records aside) cannot help, whatever it is set to
        sniffed = _SNIFFED_FILE.search(text)
        file = sniffed.group(1) if sniffed else file
        reason = "no delimiter, quote and header setting reads the sampled rows of this file consistently"
        hint = (
            "the file could not be decoded as CSV at all, so on_error (skip/dlq sets bad records aside) does "
            "not apply: check that it is a CSV file and its encoding, or give delimiter, quote and header"
        )
        line_m = col_m = None
    return DataError(
        reason,
        file=file,
        line=int(line_m.group(1)) if line_m else None,
        column=col_m.group(1) if col_m else None,
        hint=hint,
    )


_SNIFFED_FILE = re.compile(r'Error when sniffing file "([^"]+)"')
_CSV_FILE = re.compile(r"^\s*file = (.+)$", re.MULTILINE)
_CSV_RECORD = re.compile(r"CSV Error on Line: (\d+)\n")
_FIELDS = re.compile(r"Expected Number of Columns: (\d+) Found: (\d+)")
_CONVERT = re.compile(
    r'Error when converting column "([^"]+)"\. Could not convert string "(.*)" to \'?([^\']+?)\'?$', re.S
)


def csv_reason(text: str) -> tuple[str, str | None]:
    """What DuckDB's CSV reader says is wrong with a record, in words; and the column it names."""
    text = text.strip()
    if fields := _FIELDS.search(text):
        return f"expected {fields.group(1)} fields, found {fields.group(2)}", None
    if "unterminated quote" in text:
        return "a quoted value is never closed: unterminated quote", None
    if conv := _CONVERT.search(text):
        return f"cannot convert {conv.group(2)!r} to {conv.group(3)}", conv.group(1)
    return text.splitlines()[0] if text else "malformed record", None


def _csv_record_error(text: str, files: list[str]) -> DataError:
    """DuckDB's CSV reader error (record number, the record, what is wrong, a settings dump) as a
    DataError: what is wrong in words, file, the record number (``record_number``; read_csv turns it
    into the file line), the column where DuckDB names it, and the record itself (``record``)."""
    m = _CSV_RECORD.search(text)
    record_no = int(m.group(1)) if m else None
    block = text[m.end() :] if m else ""
    for stop in ("\nPossible fixes:", "\nPossible solutions:", "\n\nColumn ", "\n\n  file ="):
        block = block.split(stop)[0]
    block = block.removeprefix("Original Line: ")
    # the record may span lines (an unterminated quote runs to the end of the file): the reason is the
    # last non-empty line of the block, the record what comes before it
    lines = block.rstrip().split("\n")
    reason_text = lines[-1].strip() if lines else "malformed record"
    record = "\n".join(lines[:-1]).strip("\r\n")
    file_m = _CSV_FILE.search(text)
    file = file_m.group(1).strip() if file_m else (files[0] if len(files) == 1 else None)
    reason, column = csv_reason(reason_text)
    hint = "fix the record, or set on_error: skip or on_error: dlq to set bad records aside"
    if "unterminated" in reason:
        hint += "; if the quotes are part of the values, set quote: ''"
    elif column is not None and "auto-detected" in text:
        hint += f" (the type was sniffed from a sample: set columns: {{{column}: VARCHAR}} or a larger sample_size)"
    shown = record.split("\n")[0]
    if len(shown) > 200:
        shown = shown[:200] + "..."
    return DataError(
        f"malformed CSV record ({reason}): {shown}",
        file=file,
        line=record_no,
        column=column,
        hint=hint,
        record_number=record_no,
        record=record,
    )


def stream_query(
    query: str,
    ctx: StepContext,
    files: list[str],
    *,
    metadata: dict[str, Any] | None = None,
    after: Callable[[Any], None] | None = None,
    on_error: Callable[[DataError], DataError] | None = None,
    check: Callable[[Any], None] | None = None,
) -> OxiData:
    """Run ``query`` in a fresh DuckDB and stream its result. ``after(con)`` runs at the end of
    the stream (collecting rejects), before the connection closes; ``on_error`` may refine the
    DataError a reader failure becomes (a reader that can locate the bad line itself); ``check(rel)``
    may look at the result's columns and types before anything is read, and raise."""

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
        rel = con.sql(query)
        if check is not None:
            check(rel)
        reader = rel.to_arrow_reader(ctx.batch_size)
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

    # an interrupt (the run stopping: a timeout, another step's failure) reaches a streamed scan as an
    # Arrow error carrying DuckDB's message: it is a cancellation, not a data error of this step
    if isinstance(exc, duckdb.InterruptException) or "INTERRUPT Error" in str(exc):
        from oxiflow.errors import RunCancelled

        return RunCancelled("query interrupted")
    # RuntimeError/OSError: DuckDB's Python bridge and Arrow export fail with these on corrupt input
    import pyarrow as pa

    if isinstance(exc, duckdb.Error | pa.ArrowException | RuntimeError | OSError):
        return duckdb_data_error(exc, files)
    return exc
