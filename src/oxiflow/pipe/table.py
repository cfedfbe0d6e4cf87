"""The terminal view of a stream: an aligned table with types under the names and a row count.

A small renderer of our own rather than rich: it only ever formats a few dozen cells, it must
not squeeze fifty columns into one-character slivers (columns that do not fit are listed by
name below the table instead, as DuckDB's and Polars' shells do), and it keeps ``oxi head``
free of rich's import time. Only the first and last rows are kept while the stream is counted,
so showing a billion-row file costs a scan, not memory.
"""

from __future__ import annotations

import math
import unicodedata
from typing import Any

import pyarrow as pa

from oxiflow.data import OxiData
from oxiflow.oxi import StepContext
from oxiflow.pipe.tail import LastRows

MAX_CELL = 40  # characters a cell may take before it is cut with an ellipsis
GAP = "  "
NULL = "null"


def render_stream(data: OxiData, *, width: int, max_rows: int = 20, ctx: StepContext | None = None) -> tuple[str, int]:
    """Consume ``data``; return the table text and the number of rows in the stream."""
    head_n = max_rows
    head: list[pa.RecordBatch] = []
    held = 0
    tail = LastRows(max_rows // 2)
    for batch in data:
        if ctx is not None:
            ctx.check_cancelled()
        if held < head_n and batch.num_rows:
            part = batch.slice(0, head_n - held)
            head.append(part)
            held += part.num_rows
        tail.add(batch)
    total = tail.seen
    if total <= max_rows:
        shown = [_rows(head, data.schema)]
    else:
        top = math.ceil(max_rows / 2)
        shown = [_rows(head, data.schema)[:top], _rows(tail.result(), data.schema)]
    return render(data.schema, shown, total, width=width), total


def _rows(batches: list[pa.RecordBatch], schema: pa.Schema) -> list[list[str]]:
    if not batches:
        return []
    table = pa.Table.from_batches(batches, schema=schema)
    columns = [[cell(v) for v in col.to_pylist()] for col in table.columns]
    return [list(r) for r in zip(*columns, strict=True)] if columns else [[] for _ in range(table.num_rows)]


def cell(value: Any) -> str:
    """One value as text: nulls as ``null``, control characters escaped, long text cut."""
    if value is None:
        return NULL
    text = "0x" + value.hex() if isinstance(value, bytes) else str(value)
    text = text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return truncate(text, MAX_CELL)


def display_width(text: str) -> int:
    """Terminal columns ``text`` takes: wide (CJK) characters take two, combining marks none."""
    width = 0
    for ch in text:
        if unicodedata.combining(ch):
            continue
        width += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return width


def truncate(text: str, limit: int) -> str:
    if display_width(text) <= limit:
        return text
    out = ""
    for ch in text:
        if display_width(out + ch) > limit - 1:
            break
        out += ch
    return out + "…"


def _pad(text: str, width: int, right: bool) -> str:
    space = " " * max(0, width - display_width(text))
    return space + text if right else text + space


def _numeric(typ: pa.DataType) -> bool:
    return pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_decimal(typ)


def render(schema: pa.Schema, parts: list[list[list[str]]], total: int, *, width: int) -> str:
    """The table: header (names, then types), rule, rows (``parts`` joined by an ellipsis row),
    and a footer with the row count and the columns that did not fit in ``width``."""
    names = [truncate(f.name, MAX_CELL) for f in schema]
    types = [truncate(str(f.type) + ("" if f.nullable else " not null"), MAX_CELL) for f in schema]
    rows = [r for part in parts for r in part]
    widths = [
        max([display_width(names[i]), display_width(types[i]), *(display_width(r[i]) for r in rows)])
        for i in range(len(names))
    ]
    shown: list[int] = []
    used = 0
    for i, w in enumerate(widths):
        need = w + (len(GAP) if shown else 0)
        if shown and used + need > width:
            break
        shown.append(i)
        used += min(need, width)
    if shown and used > width:  # one very wide first column: cut it to the terminal
        widths[shown[0]] = max(1, width)
    right = [_numeric(schema.field(i).type) for i in range(len(names))]

    def line(values: list[str]) -> str:
        cells = [_pad(truncate(values[i], widths[i]), widths[i], right[i]) for i in shown]
        return GAP.join(cells).rstrip()

    out = [line(names), line(types), GAP.join("─" * widths[i] for i in shown)]
    for n, part in enumerate(parts):
        if n:
            out.append(GAP.join(_pad("…", widths[i], right[i]) for i in shown).rstrip())
        out.extend(line(r) for r in part)
    ncols = len(names)
    footer = f"{total:,} row{'s' if total != 1 else ''} × {ncols} column{'s' if ncols != 1 else ''}"
    if len(parts) > 1:
        footer += f" (showing the first {len(parts[0])} and last {len(parts[1])})"
    out.append(truncate(footer, max(width, 20)))
    hidden = [schema.field(i).name for i in range(ncols) if i not in shown]
    if hidden:
        out.append(truncate(f"{len(hidden)} more column(s): " + ", ".join(hidden), max(width, 20)))
    return "\n".join(out) + "\n"
