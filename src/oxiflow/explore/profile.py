"""Per-column statistics of a file (``oxi profile``), computed by DuckDB in two scans.

1. One ungrouped aggregate: rows; per column the non-null count, ``approx_count_distinct``
   (HyperLogLog), min/max, mean and sample stddev (numbers), length range (strings, binary),
   the equi-width bin edges (``equi_width_bins`` over min/max: numbers, dates, timestamps) and
   ``approx_top_k`` candidates for the most frequent values.
2. One ``GROUP BY GROUPING SETS``: the value counts of every column estimated to have at most
   ``exact_distinct_limit`` distinct values (its exact distinct count and exact top values), the
   exact counts of the other columns' candidates, and the bin counts. DuckDB's hash aggregate
   spills to disk past the memory limit, so memory stays bounded whatever the data.

When the reader offers a DuckDB scan (Parquet, CSV, JSON), both queries run on it, so DuckDB
reads only the columns it needs and parses in parallel. Other inputs (Arrow IPC, Avro, readers
with ``on_error: skip|dlq``) are streamed once into a table of a temporary DuckDB database file
(on disk, deleted afterwards) that both queries then read.

Nested columns (struct, list, map, union) get their type and null count only.
"""

from __future__ import annotations

import datetime as dt
import math
import tempfile
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oxiflow.engine.duck import connect, ident

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

    from oxiflow.pipe.inputs import OpenedInput

PROFILE_VERSION = 1
DEFAULT_MEMORY_MB = 1024

_INTS = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT"}
_INTS |= {"UHUGEINT"}
_FLOATS = {"FLOAT", "DOUBLE"}
_TIMES = {"TIME", "TIME WITH TIME ZONE", "TIME_NS", "INTERVAL"}


@dataclass(frozen=True)
class ProfileOptions:
    """What to compute; the defaults are the CLI's."""

    top: int = 5
    """Most frequent values to report per column (0: none)."""
    bins: int = 10
    """Histogram bins for numbers, dates and timestamps (DuckDB rounds the edges to nice values)."""
    exact_distinct_limit: int = 100_000
    """Up to this many distinct values (estimated first), count them exactly; above, keep the estimate."""
    memory_limit_mb: int = DEFAULT_MEMORY_MB
    """DuckDB's memory limit for the profile (it spills to disk beyond it)."""


@dataclass
class _Column:
    name: str
    duck_type: str
    arrow_type: str
    kind: str  # number, temporal, time, string, boolean, binary, nested, other
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def sql(self) -> str:
        return ident(self.name)

    @property
    def is_float(self) -> bool:
        return self.duck_type in _FLOATS

    @property
    def zoned(self) -> bool:
        """Values with a time zone: DuckDB hands them to Python only through pytz, which we do not
        require, so they travel as text and are parsed back (``value``)."""
        return self.duck_type in ("TIMESTAMP WITH TIME ZONE", "TIME WITH TIME ZONE")

    def out(self, expr: str, list_of: bool = False) -> str:
        """``expr`` (values of this column) in a form Python can receive."""
        return f"CAST({expr} AS VARCHAR{'[]' if list_of else ''})" if self.zoned else expr

    def value(self, v: Any) -> Any:
        if self.zoned and isinstance(v, str):
            parse = dt.datetime if self.duck_type.startswith("TIMESTAMP") else dt.time
            return parse.fromisoformat(v)
        return v

    @property
    def has_top(self) -> bool:
        """Whether top values make sense (not for nested values nor binary blobs)."""
        return self.kind not in ("nested", "binary")

    @property
    def binned(self) -> bool:
        return self.kind in ("number", "temporal")

    def bin_expr(self) -> tuple[str, str]:
        """The expression the histogram bins, and its type (equi_width_bins takes neither
        TIMESTAMP WITH TIME ZONE nor DECIMAL histograms against its DOUBLE edges)."""
        if self.duck_type.startswith("TIMESTAMP WITH TIME ZONE"):
            return f"CAST({self.sql} AS TIMESTAMP)", "TIMESTAMP"
        if self.duck_type.startswith("DECIMAL"):
            return f"CAST({self.sql} AS DOUBLE)", "DOUBLE"
        return self.sql, self.duck_type


def kind_of(duck_type: str) -> str:
    """The profile kind of a DuckDB type: which statistics apply."""
    t = duck_type.upper()
    if t.endswith("]") or t.startswith(("STRUCT", "MAP", "UNION")):
        return "nested"
    if t in _INTS or t in _FLOATS or t.startswith("DECIMAL"):
        return "number"
    if t == "DATE" or t.startswith("TIMESTAMP"):
        return "temporal"
    if t in _TIMES:
        return "time"
    if t in ("VARCHAR", "JSON") or t.startswith("ENUM"):
        return "string"
    if t == "BOOLEAN":
        return "boolean"
    if t == "BLOB":
        return "binary"
    return "other"


class _Select:
    """A SELECT list built expression by expression; ``add`` returns the result's position."""

    def __init__(self) -> None:
        self.exprs: list[str] = []

    def add(self, expr: str) -> int:
        self.exprs.append(expr)
        return len(self.exprs) - 1

    def sql(self) -> str:
        return ", ".join(self.exprs)


def profile_input(
    path: str,
    fmt: str | None = None,
    options: ProfileOptions | None = None,
    reader_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The profile document of the input ``path`` -- file(s), ``db.duckdb::table`` or ``-`` for
    stdin, as the shell verbs take them (raises DataError on unreadable input)."""
    from oxiflow.pipe.inputs import open_input

    opts = options or ProfileOptions()
    opened = open_input(path, fmt, reader_options, memory_limit_mb=opts.memory_limit_mb)
    with tempfile.TemporaryDirectory(prefix="oxiflow-profile-") as tmp:
        con, source, method, arrow_schema = _prepare(opened, Path(tmp))
        try:
            columns, rows = profile_relation(con, source, opts, arrow_schema=arrow_schema)
        except Exception as exc:
            raise _translate(exc, opened, method) from None
        finally:
            con.close()
    return {
        "profile_version": PROFILE_VERSION,
        "path": path,
        "format": _format_name(opened, path, fmt),
        "rows": rows,
        "method": method,
        "options": {"top": opts.top, "bins": opts.bins, "exact_distinct_limit": opts.exact_distinct_limit},
        "columns": columns,
    }


def _format_name(opened: OpenedInput, path: str, fmt: str | None) -> str:
    """The input's format: stdin's as detected from its first bytes, a table's ``duckdb``."""
    from oxiflow.pipe.inputs import format_of

    if opened.oxi_name == "read_pipe":
        return str(opened.ctx.metadata.get("format", "auto"))
    if opened.oxi_name == "read_duckdb":
        return "duckdb"
    return format_of(path, fmt)


def _prepare(opened: OpenedInput, tmp: Path) -> tuple[duckdb.DuckDBPyConnection, str, str, pa.Schema | None]:
    """A connection and the relation to profile in it: the reader's scan itself, or a spool table."""
    from oxiflow.pipe.inputs import spool_stream

    scan = opened.scan()
    if scan is not None:
        return _connect(opened, ":memory:"), f"({scan.sql})", "scan", None
    con = _connect(opened, str(tmp / "spool.duckdb"))
    try:
        data = opened.data()
        spool_stream(con, data, "spool")
    except Exception as exc:
        con.close()
        raise _translate(exc, opened, "spool") from None
    except BaseException:  # Ctrl-C: close and go
        con.close()
        raise
    return con, "spool", "spool", data.schema


def _connect(opened: OpenedInput, database: str) -> duckdb.DuckDBPyConnection:
    import contextlib

    import duckdb

    con = connect(opened.ctx, database)
    # stable, zone-independent output for TIMESTAMP WITH TIME ZONE; without the ICU extension
    # DuckDB has no session time zone to set, and such values are UTC anyway
    with contextlib.suppress(duckdb.Error):
        con.execute("SET TimeZone = 'UTC'")
    return con


def _translate(exc: Exception, opened: OpenedInput, method: str) -> BaseException:
    """A failure of the profile queries as the error the reader would raise (file, line)."""
    import duckdb

    from oxiflow.errors import OxiflowError
    from oxiflow.oxis.files.duckscan import translate_scan_error

    # our own queries failing to bind is a bug to report as is, not a problem of the data
    if isinstance(exc, OxiflowError | duckdb.BinderException | duckdb.ParserException | duckdb.CatalogException):
        return exc
    if method == "scan":
        scan = opened.scan()
        if scan is not None and scan.translate is not None:
            return scan.translate(exc)
    return translate_scan_error(exc, [opened.path])


def profile_relation(
    con: duckdb.DuckDBPyConnection,
    source: str,
    options: ProfileOptions,
    *,
    arrow_schema: pa.Schema | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """Profile ``source`` (a table name or a parenthesised SELECT) on ``con``: (columns, rows)."""
    described = con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()
    if arrow_schema is None:
        arrow_schema = con.sql(f"SELECT * FROM {source} LIMIT 0").to_arrow_table().schema
    arrow_types = {f.name: str(f.type) for f in arrow_schema}
    cols = [_Column(name, typ, arrow_types.get(name, typ), kind_of(typ)) for name, typ, *_ in described]
    rows = _basics(con, source, cols, options)
    _groups(con, source, cols, options)
    return [_document(c, rows) for c in cols], rows


def _basics(con: duckdb.DuckDBPyConnection, source: str, cols: list[_Column], options: ProfileOptions) -> int:
    """Scan 1: counts, distinct estimates, ranges, moments, lengths, bin edges, top-value candidates."""
    q = _Select()
    rows_at = q.add("count(*)")
    slots: list[dict[str, int]] = []
    for c in cols:
        s: dict[str, int] = {"count": q.add(f"count({c.sql})")}
        if c.kind != "nested":
            s["approx_distinct"] = q.add(f"approx_count_distinct({c.sql})")
        if c.kind in ("number", "temporal", "time", "string"):
            s["min"] = q.add(c.out(f"min({c.sql})"))
            s["max"] = q.add(c.out(f"max({c.sql})"))
        if c.kind == "number":
            s["mean"] = q.add(f"avg({c.sql})")
            s["stddev"] = q.add(f"stddev_samp({c.sql})")
        if c.is_float:
            s["non_finite"] = q.add(f"count(*) FILTER (WHERE NOT isfinite({c.sql}))")
        if c.kind in ("string", "binary"):
            length = f"length(CAST({c.sql} AS VARCHAR))" if c.kind == "string" else f"octet_length({c.sql})"
            s["min_length"] = q.add(f"min({length})")
            s["max_length"] = q.add(f"max({length})")
        if c.binned and options.bins > 0:
            expr, _ = c.bin_expr()
            finite = f" FILTER (WHERE isfinite({c.sql}))" if c.is_float else ""
            lo, hi = f"min({expr}){finite}", f"max({expr}){finite}"
            # nice (rounded) edges for numbers; for times DuckDB's nice widths overshoot the range by months
            nice = "true" if c.kind == "number" else "false"
            s["edges"] = q.add(f"equi_width_bins({lo}, {hi}, {options.bins}, {nice})")
            s["bin_min"] = q.add(lo)
        if c.has_top and options.top > 0:
            # candidates for columns with too many values to count them all (known only after this scan)
            s["candidates"] = q.add(c.out(f"approx_top_k({c.sql}, {options.top})", list_of=True))
        slots.append(s)
    row = con.execute(f"SELECT {q.sql()} FROM {source}").fetchone()
    assert row is not None
    for c, s in zip(cols, slots, strict=True):
        c.stats.update({key: row[i] for key, i in s.items()})
        c.stats["edges"] = _dedupe(c.stats.get("edges"))
    return int(row[rows_at])


@dataclass
class _Key:
    """One grouping set of scan 2: a column's values, its top-value candidates, or its bin numbers."""

    column: _Column
    role: str  # values, candidates, bins
    expr: str


def _groups(con: duckdb.DuckDBPyConnection, source: str, cols: list[_Column], options: ProfileOptions) -> None:
    """Scan 2, one GROUP BY GROUPING SETS: the value counts of each column with at most
    ``exact_distinct_limit`` distinct values (exact distinct count and top values), the counts of
    the other columns' top-value candidates, and the bin counts. DuckDB's hash aggregate spills
    to disk, so memory stays bounded by its limit whatever the number of groups."""
    keys: list[_Key] = []
    params: list[Any] = []

    def param(value: Any, typ: str) -> str:
        params.append(value)
        return f"CAST(${len(params)} AS {typ})"

    for c in cols:
        approx = c.stats.get("approx_distinct")
        if c.kind == "nested" or not c.stats["count"] or approx is None:
            continue
        if approx <= options.exact_distinct_limit:
            keys.append(_Key(c, "values", c.out(c.sql)))
        elif c.stats.get("candidates"):
            listed = ", ".join(param(v, c.duck_type) for v in c.stats["candidates"])
            keys.append(_Key(c, "candidates", f"CASE WHEN {c.sql} IN ({listed}) THEN {c.out(c.sql)} END"))
        edges = c.stats["edges"]
        if edges:
            expr, typ = c.bin_expr()
            skip = f"{c.sql} IS NULL" + (f" OR NOT isfinite({c.sql})" if c.is_float else "")
            # bin i holds (edge[i-1], edge[i]]: DuckDB's histogram(x, edges) convention
            whens = " ".join(f"WHEN {expr} <= {param(e, typ)} THEN {i}" for i, e in enumerate(edges[:-1]))
            keys.append(_Key(c, "bins", f"CASE WHEN {skip} THEN NULL {whens} ELSE {len(edges) - 1} END"))
    if not keys:
        return
    names = [f"k{i}" for i in range(len(keys))]
    set_id = " ".join(f"WHEN GROUPING({k}) = 0 THEN {i}" for i, k in enumerate(names))
    is_null = " ".join(f"WHEN {i} THEN {k} IS NULL" for i, k in enumerate(names))
    # rows kept per set: the top values, or every bin (nice edges may be a few more than asked for)
    limit = max([options.top, 1, *(len(k.column.stats["edges"]) for k in keys if k.role == "bins")])
    sql = f"""
        WITH k AS (SELECT {", ".join(f"{key.expr} AS {n}" for key, n in zip(keys, names, strict=True))} FROM {source}),
        g AS (
            SELECT CASE {set_id} END AS s, {", ".join(names)}, count(*) AS n
            FROM k GROUP BY GROUPING SETS ({", ".join(f"({n})" for n in names)})
        ),
        v AS (SELECT * FROM g WHERE NOT (CASE s {is_null} END)),
        r AS (
            SELECT *, row_number() OVER (PARTITION BY s ORDER BY n DESC, {", ".join(names)}) AS rank,
                   count(*) OVER (PARTITION BY s) AS groups
            FROM v
        )
        SELECT s, groups, n, {", ".join(names)} FROM r WHERE rank <= {limit} ORDER BY s, rank
    """
    found: dict[int, list[tuple[Any, int]]] = {}
    distinct: dict[int, int] = {}
    for set_no, groups, n, *values in con.execute(sql, params).fetchall():
        found.setdefault(set_no, []).append((values[set_no], int(n)))
        distinct[set_no] = int(groups)
    for i, key in enumerate(keys):
        c, counted = key.column, found.get(i, [])
        if key.role == "values":
            c.stats["distinct"] = distinct.get(i, 0)
            if options.top > 0 and c.has_top:
                c.stats["top"] = counted[: options.top]
        elif key.role == "candidates":
            c.stats["top"] = counted[: options.top]
            c.stats["top_exact"] = False
        else:
            c.stats["bin_counts"] = dict(counted)


def _dedupe(edges: list[Any] | None) -> list[Any]:
    """Bin edges in order, once each (nice edges of a narrow date range repeat)."""
    out: list[Any] = []
    for e in edges or []:
        if not out or e > out[-1]:
            out.append(e)
    return out


def _document(c: _Column, rows: int) -> dict[str, Any]:
    """One column's entry: every key always present (null when it does not apply)."""
    s = c.stats
    count = int(s["count"])
    nulls = rows - count
    exact = "distinct" in s
    distinct = s["distinct"] if exact else s.get("approx_distinct")
    if count == 0 and c.kind != "nested":
        distinct, exact = 0, True
    top = s.get("top")
    return {
        "name": c.name,
        "type": c.arrow_type,
        "duckdb_type": c.duck_type,
        "kind": c.kind,
        "count": count,
        "nulls": nulls,
        "null_pct": round(100.0 * nulls / rows, 4) if rows else 0.0,
        "distinct": None if c.kind == "nested" else int(distinct or 0),
        "distinct_exact": None if c.kind == "nested" else exact,
        "min": plain(c.value(s.get("min"))),
        "max": plain(c.value(s.get("max"))),
        "mean": plain(s.get("mean")),
        "stddev": plain(s.get("stddev")),
        "min_length": s.get("min_length"),
        "max_length": s.get("max_length"),
        "non_finite": s.get("non_finite"),
        "top": None if top is None else [{"value": plain(c.value(v)), "count": n} for v, n in top],
        "top_exact": None if top is None else s.get("top_exact", True),
        "histogram": _bins(s),
    }


def _bins(s: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Bins as (lower, upper, count); the first starts at the minimum, bin i ends at edge i."""
    counts = s.get("bin_counts")
    edges = s.get("edges")
    if counts is None or not edges:
        return None
    bins = []
    lower = s.get("bin_min")
    for i, edge in enumerate(edges):
        bins.append({"lower": plain(lower), "upper": plain(edge), "count": counts.get(i, 0)})
        lower = edge
    return bins


def plain(value: Any) -> Any:
    """A JSON-ready value: numbers stay numbers, times become ISO 8601 text, decimals exact text,
    NaN and infinities their names."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    return str(value)
