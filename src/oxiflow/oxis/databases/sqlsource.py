"""The shared body of the SQL sources (read_postgres, read_mysql, read_sqlite; read_duckdb uses its
partitioning and options too).

A source reads ``table`` or ``query`` as one stream of Arrow batches over a server-side cursor
(never ``fetchall``), so memory stays bounded by the batch size. With ``partition_on`` and
``partitions: N`` it first asks the database for ``min``/``max`` of that column, cuts the range
into N equal half-open ranges (the last one closed), and reads them at once on N connections;
batches from the partitions interleave through a bounded queue (no order across partitions).
"""

from __future__ import annotations

import datetime as dt
import itertools
import queue
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from pydantic import model_validator

from oxiflow.errors import ConfigError, RunCancelled
from oxiflow.incremental import IncrementalConfig
from oxiflow.oxi import OxiConfig, StepContext

if TYPE_CHECKING:
    import pyarrow as pa


class SqlSourceConfig(OxiConfig):
    table: str | None = None
    """A table or view, optionally schema-qualified (`analytics.orders`)."""
    query: str | None = None
    """A SELECT to run instead of `table` (read-only is up to the database user's rights)."""
    chunk_size: int | None = None
    """Rows per Arrow batch (default: the pipeline's batch size)."""
    partition_on: str | None = None
    """An integer, date or timestamp column to split the read on (with `partitions`)."""
    partitions: int = 1
    """How many range reads to run at once, each on its own connection (needs `partition_on`)."""
    incremental: IncrementalConfig | None = None
    """Read only rows new since the last run, by a cursor column (the bound is pushed into the query).
    See docs/incremental.md."""

    @model_validator(mode="after")
    def _check(self) -> SqlSourceConfig:
        if (self.table is None) == (self.query is None):
            raise ValueError("give exactly one of `table` or `query`")
        check_read_options(self.chunk_size, self.partition_on, self.partitions, self.incremental)
        return self


def check_read_options(
    chunk_size: int | None, partition_on: str | None, partitions: int, incremental: IncrementalConfig | None
) -> None:
    """ValueErrors (config errors at validate time) for the read options every database source shares
    (read_postgres, read_mysql, read_sqlite, read_duckdb)."""
    if partitions < 1:
        raise ValueError("`partitions` must be at least 1")
    if partitions > 1 and not partition_on:
        raise ValueError("`partitions` > 1 needs `partition_on` (an integer or timestamp column)")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError("`chunk_size` must be at least 1")
    if incremental is not None and incremental.mode != "rows":
        raise ValueError("database sources take `incremental.mode: rows` only")


def incremental_query(base: str, ctx: StepContext, quote: Callable[[str], str], *, text_dates: bool = False) -> str:
    """``base`` with the run's incremental bounds as a WHERE (a superset: the engine filters exactly)."""
    cursor = ctx.cursor
    if cursor is None or cursor.config.mode != "rows":
        return base
    where = cursor.where_sql(quote(cursor.config.cursor), sql_literal, text_dates=text_dates)
    return base if where is None else f"SELECT * FROM ({base}) AS _oxi_inc WHERE {where}"


def sql_literal(value: Any) -> str:
    """A JSON bound as a standard SQL literal (numbers bare, the rest quoted text the database casts)."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


Bound = int | dt.date | dt.datetime


def ranges(lo: Bound, hi: Bound, n: int) -> list[tuple[Bound, Bound, bool]]:
    """``[lo, hi]`` cut into at most ``n`` ranges ``(start, end, last)``: ``start <= x < end``, the
    last one ``start <= x <= end``. Works for ints, dates and datetimes."""
    if isinstance(lo, dt.datetime) and isinstance(hi, dt.datetime):
        span = hi - lo
        cuts: list[Any] = [lo + span * i / n for i in range(n)] + [hi]
    elif isinstance(lo, dt.date) and isinstance(hi, dt.date) and not isinstance(lo, dt.datetime):
        days = (hi - lo).days
        cuts = [*sorted({lo + dt.timedelta(days=days * i // n) for i in range(n)}), hi]
    elif isinstance(lo, int) and isinstance(hi, int):
        cuts = [*sorted({lo + (hi - lo) * i // n for i in range(n)}), hi]
    else:
        raise ConfigError(f"`partition_on` needs an integer, date or timestamp column (its min/max are {lo!r}, {hi!r})")
    out = [(a, b, False) for a, b in itertools.pairwise(cuts) if a < b]
    if not out:
        return [(lo, hi, True)]
    a, b, _ = out[-1]
    out[-1] = (a, b, True)
    return out


def range_where(column: str, lo: Bound, hi: Bound, last: bool, literal: Callable[[Bound], str]) -> str:
    if last:  # the last range also takes the rows where the column is NULL, so none is lost
        return f"({column} >= {literal(lo)} AND {column} <= {literal(hi)}) OR {column} IS NULL"
    return f"{column} >= {literal(lo)} AND {column} < {literal(hi)}"


def minmax_sql(base: str, column: str) -> str:
    """One row: the smallest and largest value of the (quoted) ``column`` over ``base``."""
    return f"SELECT min({column}), max({column}) FROM ({base}) AS _oxi"


def partition_queries(
    base: str,
    column: str,
    partitions: int,
    minmax: Callable[[str], tuple[Any, Any] | None],
    literal: Callable[[Bound], str],
) -> list[str]:
    """``base`` split into range queries on the (quoted) ``column``; ``minmax`` runs a SELECT of
    one row. An empty result (min is NULL) is read as one query."""
    row = minmax(minmax_sql(base, column))
    lo, hi = row if row else (None, None)
    if lo is None or hi is None:
        return [base]
    return [
        f"SELECT * FROM ({base}) AS _oxi WHERE {range_where(column, a, b, last, literal)}"
        for a, b, last in ranges(lo, hi, partitions)
    ]


def interleave(
    readers: list[Callable[[], Iterator[pa.RecordBatch]]], ctx: StepContext, depth: int = 2
) -> Iterator[pa.RecordBatch]:
    """Run each reader on its own thread; yield their batches as they come (bounded: ``depth``
    batches per reader wait at most). Stops the others when one fails or the consumer leaves."""
    if len(readers) == 1:
        yield from readers[0]()
        return
    q: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth * len(readers))
    stop = threading.Event()

    def put(item: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run(reader: Callable[[], Iterator[pa.RecordBatch]]) -> None:
        try:
            for batch in reader():
                if not put(("batch", batch)):
                    return
            put(("done", None))
        except BaseException as exc:
            put(("error", exc))

    threads = [
        threading.Thread(target=run, args=(r,), daemon=True, name=f"{ctx.step_id}-part{i}")
        for i, r in enumerate(readers)
    ]
    for t in threads:
        t.start()
    done = 0
    try:
        while done < len(readers):
            if ctx.cancel.is_set():
                raise RunCancelled("read cancelled", step=ctx.step_id)
            try:
                kind, value = q.get(timeout=0.1)
            except queue.Empty:
                continue
            if kind == "batch":
                yield value
            elif kind == "done":
                done += 1
            else:
                raise value
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=5)
