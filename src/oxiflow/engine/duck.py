"""DuckDB connections configured from a step's context: memory budget, spill folder, interrupt.

Every step that uses DuckDB gets its own in-memory database from :func:`connect`, so a
``timeout_seconds`` can ``interrupt()`` exactly that step's query, and ``max_memory_mb`` (or the
pipeline's ``memory_limit_mb``) becomes DuckDB's ``memory_limit`` with spilling to disk.
"""

from __future__ import annotations

import contextlib
import tempfile
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

    from oxiflow.errors import DataError
    from oxiflow.oxi import StepContext


# A scan streamed out as Arrow needs a few buffers per thread, but at DuckDB's default limit (80%
# of RAM) its buffer pool grows with the input (CSV -> Parquet: 500 MB at 5M rows vs 180 MB at
# 500k). 112 MB per core keeps it flat (255 MB at 5M rows, 128 MB/core: 260-300 MB) for ~0.1 s
# at 5M rows, and leaves room for compressed CSV (~30 MB blocks, which ran out of memory at 64 MB
# per core). Measurements: benchmarks/README.md.
SCAN_MB_PER_CORE = 112


def connect(
    ctx: StepContext | None = None,
    database: str = ":memory:",
    *,
    stream: Literal["read", "write"] | None = None,
    **extra: Any,
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection for one step.

    ``stream="read"``: a scan streamed out as Arrow; its memory is capped when the step has no
    budget of its own. ``stream="write"``: a COPY draining one Arrow stream; it gets half the
    cores, since more threads only contend with the reader feeding it (on 2 cores: faster, and
    150 MB less). Other connections (joins, aggregations) keep DuckDB's defaults.
    """
    import os

    import duckdb

    cores = os.cpu_count() or 1
    config: dict[str, Any] = {"temp_directory": tempfile.gettempdir() + "/oxiflow-duckdb-spill"}
    if ctx is not None and ctx.memory_limit_mb:
        config["memory_limit"] = f"{ctx.memory_limit_mb}MB"
    elif stream == "read":
        config["memory_limit"] = f"{SCAN_MB_PER_CORE * max(2, cores)}MB"
    if stream == "write":
        config["threads"] = max(1, cores // 2)
    config.update(extra)
    con = duckdb.connect(database, config=config)
    # DuckDB draws a progress bar on stdout once a query runs past 2 s, into the data we write
    # there; a session setting (connect() refuses it as a global one), so each connection sets it
    con.execute("SET enable_progress_bar = false")
    if ctx is not None:
        # a weak reference: a bound method would keep the connection alive as long as the
        # context (and any traceback holding it), which nanobind reports as a leak at exit
        ref = weakref.ref(con)
        ctx.on_interrupt(lambda: _interrupt(ref()))
    return con


def _interrupt(con: duckdb.DuckDBPyConnection | None) -> None:
    if con is not None:
        con.interrupt()


def literal(value: Any) -> str:
    """A SQL literal for a config value (strings, numbers, bools, lists, dicts as structs)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{literal(str(k))}: {literal(v)}" for k, v in value.items()) + "}"
    return "'" + str(value).replace("'", "''") + "'"


def ident(name: str) -> str:
    """A quoted identifier (DuckDB's own rule: double quotes, doubled inside)."""
    return '"' + name.replace('"', '""') + '"'


def options(pairs: Iterable[tuple[str, Any]]) -> str:
    """``key = literal`` pairs for a table function call, skipping unset values."""
    return ", ".join(f"{k} = {literal(v)}" for k, v in pairs if v is not None)


def unimportable_columns(schema: pa.Schema) -> list[str]:
    """The columns of ``schema`` whose Arrow type DuckDB cannot take in (a dense union, float16, a month
    interval, depending on the DuckDB version), each as ``name (type)``: asked after a write of an Arrow
    stream failed, to say which column to cast instead of DuckDB's "Unsupported Internal Arrow Type"."""
    import duckdb
    import pyarrow as pa

    def probes(f: pa.Field) -> list[pa.Table]:
        tables = [pa.schema([f]).empty_table()]
        try:  # null values too: some conversions (a dictionary of structs) fail only on a value
            tables.append(pa.table({f.name: pa.nulls(2, f.type)}))
        except pa.ArrowException:
            pass
        return tables

    bad = []
    con = duckdb.connect()
    try:
        for f in schema:
            try:
                for table in probes(f):
                    con.register("oxiflow_probe", table)
                    con.execute("CREATE TEMP TABLE oxiflow_probed AS SELECT * FROM oxiflow_probe")
                    con.execute("DROP TABLE oxiflow_probed")
                    con.unregister("oxiflow_probe")
            except (duckdb.Error, pa.ArrowException):
                bad.append(f"{f.name} ({f.type})")
                # an internal error can invalidate the database for good: the next column gets a new one
                with contextlib.suppress(duckdb.Error):
                    con.close()
                con = duckdb.connect()
    finally:
        con.close()
    return bad


def unimportable_error(schema: pa.Schema, what: str) -> DataError | None:
    """After a DuckDB write of an Arrow stream with ``schema`` failed: a DataError naming the columns DuckDB
    cannot take, when there are such (``what``: the target, for the message); else None."""
    from oxiflow.errors import DataError

    bad = unimportable_columns(schema)
    if not bad:
        return None
    return DataError(
        f"DuckDB, which writes {what}, cannot take the Arrow type of column(s) {', '.join(bad)}",
        hint="cast them first (a `cast` or `sql` step), e.g. to string or to a wider type",
    )
