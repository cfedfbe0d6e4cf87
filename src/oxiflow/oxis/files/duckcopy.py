"""COPY ... TO through DuckDB: the one way the file sinks write, from a stream or a pushed-down query."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from oxiflow.data import OxiData
from oxiflow.engine.duck import connect, literal, unimportable_error
from oxiflow.oxi import PushedQuery, Sink, StepContext
from oxiflow.oxis.files.common import atomic_output


class CopySink(Sink):
    """A file sink written by one DuckDB ``COPY``, from the stream or from a pushed-down query.

    Subclasses give the ``COPY`` options for the target; writing is atomic (temporary name,
    rename on success) and reports ``rows``.
    """

    config: Any

    def copy_options(self, target: Path) -> str:
        raise NotImplementedError

    def write(self, data: OxiData, ctx: StepContext) -> None:
        self._copy(ctx, data=data)

    def pushdown_ready(self) -> bool:
        return True

    def write_query(self, query: PushedQuery, ctx: StepContext) -> int:
        return self._copy(ctx, query=query)

    def _copy(self, ctx: StepContext, *, data: OxiData | None = None, query: PushedQuery | None = None) -> int:
        target = ctx.output_path(self.config.path)
        with atomic_output(target, ctx, overwrite=self.config.overwrite) as tmp:
            rows = copy_out(ctx, tmp, self.copy_options(target), data=data, query=query)
        ctx.metadata["rows"] = rows
        return rows


def copy_out(
    ctx: StepContext,
    tmp: Path,
    copy_options: str,
    *,
    data: OxiData | None = None,
    query: PushedQuery | None = None,
    columns: list[str] | None = None,
) -> int:
    """COPY ``data`` (an Arrow stream) or ``query`` (on a connection it prepared) to ``tmp``; the row count.

    A stream gets a writer connection (half the cores: the reader feeding it needs the rest);
    a query is the whole pipeline in one statement and gets every core, with the scan's memory cap.
    ``columns``, when given, is filled with the names of the written columns (partition checks).
    """
    import duckdb

    con = connect(ctx, stream="write" if data is not None else "read")
    try:
        if data is not None:
            source = "input_stream"
        else:
            assert query is not None
            query.prepare(con)
            source = f"({query.sql})"
        if columns is not None:
            columns.extend(con.sql(f"SELECT * FROM {source} LIMIT 0").columns if data is None else data.schema.names)
        try:
            if data is not None:
                con.register("input_stream", data.to_reader())
            row = con.execute(f"COPY {source} TO {literal(str(tmp))} ({copy_options})").fetchall()
        except Exception as exc:
            if data is None or isinstance(exc, duckdb.InterruptException):
                raise  # a pushed-down query: the engine tells reader errors from the sink's
            import pyarrow as pa  # (a stream is Arrow: loaded already; a pushed-down run never imports it)

            if not isinstance(exc, duckdb.Error | pa.ArrowException):
                raise
            fmt = copy_options.split(",", 1)[0].replace("FORMAT", "").strip().strip("'")
            if (unfit := unimportable_error(data.schema, f"{fmt} files")) is None:
                raise
            raise unfit from None
        return int(row[0][0]) if row else 0
    finally:
        con.close()
