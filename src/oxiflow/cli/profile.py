"""`oxi profile FILE`: per-column statistics."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from oxiflow.cli import output
from oxiflow.cli.options import JsonOpt
from oxiflow.cli.verbs import InputFormatOpt, OptOpt

if TYPE_CHECKING:
    from rich.table import Table


def register(app: typer.Typer) -> None:
    """Add the command(s) of this module to ``app`` (heavy imports stay inside the commands)."""
    app.command("profile")(profile)


def profile(
    file: Annotated[
        str,
        typer.Argument(help="A file, glob or folder of files (one format), db.duckdb::table, or - for stdin."),
    ],
    input_format: InputFormatOpt = None,
    opt: OptOpt = None,
    json_out: JsonOpt = False,
    html: Annotated[
        str | None, typer.Option("--html", metavar="PATH", help="Also write a self-contained HTML report with charts.")
    ] = None,
    top: Annotated[int, typer.Option("--top", min=0, help="Most frequent values per column.")] = 5,
    bins: Annotated[
        int, typer.Option("--bins", min=0, help="Histogram bins for numbers, dates and timestamps (0: none).")
    ] = 10,
    exact_distinct_limit: Annotated[
        int,
        typer.Option(
            "--exact-distinct-limit",
            min=0,
            help="Count distinct values exactly (with exact top values) up to this many; above, estimate.",
        ),
    ] = 100_000,
    memory_limit_mb: Annotated[
        int, typer.Option("--memory-limit-mb", min=64, help="DuckDB memory limit; beyond it, it spills to disk.")
    ] = 1024,
) -> None:
    """Profile a file: per column its type, nulls, distinct values, range, mean/stddev, string
    lengths, top values and a histogram. A table on stdout, JSON with --json, a page with --html.

    Distinct counts are exact up to --exact-distinct-limit values and estimated (HyperLogLog)
    above; the JSON says which (distinct_exact). Nested columns get their type and nulls only.

    Example: oxi profile data/orders.parquet --html orders_profile.html
    """
    import os

    from oxiflow.cli.shell import manners
    from oxiflow.cli.verbs import reader_options, refuse_terminal_stdin
    from oxiflow.errors import DataError, OxiflowError
    from oxiflow.explore.profile import ProfileOptions, profile_input
    from oxiflow.pipe.inputs import source_step

    options = reader_options("profile", opt)
    if file == "-":
        refuse_terminal_stdin("profile")
    try:
        source_step(file, input_format, options)
    except DataError as exc:
        output.fail_usage(str(exc))
    if html and not os.path.isdir(os.path.dirname(os.path.abspath(html))):  # fail before the work, not after
        output.err(f"error: cannot write the HTML report {html}: its folder does not exist")
        raise typer.Exit(1)
    settings = ProfileOptions(
        top=top, bins=bins, exact_distinct_limit=exact_distinct_limit, memory_limit_mb=memory_limit_mb
    )
    with manners("profile") as state:
        try:
            doc = profile_input(file, input_format, settings, options)
        except OxiflowError as exc:
            state.check()  # Ctrl-C during a query comes back as the query's error
            output.err(f"error: {exc}")
            raise typer.Exit(exc.exit_code) from None
        if html:
            _write_html(doc, html)
        if json_out:
            output.print_json(doc)
        else:
            print_table(doc)


def _write_html(doc: dict[str, Any], path: str) -> None:
    from pathlib import Path

    from oxiflow.explore.profile_html import render_html

    try:
        Path(path).write_text(render_html(doc), encoding="utf-8")
    except OSError as exc:
        output.err(f"error: cannot write the HTML report {path}: {exc.strerror or exc}")
        raise typer.Exit(1) from None
    output.err(f"wrote {path}")


def print_table(doc: dict[str, Any]) -> None:
    """One row per column, on stdout (rich wraps long cells to the terminal's width)."""
    import sys

    from oxiflow.cli.shell import console as shell_console

    console = shell_console(width=None if sys.stdout.isatty() else 200, highlight=False)
    console.print(f"{doc['path']}: {doc['rows']:,} rows, {len(doc['columns'])} columns ({doc['format']})", markup=False)
    console.print(_table(doc))


def _table(doc: dict[str, Any]) -> Table:
    from rich.table import Table
    from rich.text import Text

    table = Table(show_edge=False, pad_edge=False, header_style="bold")
    for name, justify in [
        ("column", "left"),
        ("type", "left"),
        ("nulls", "right"),
        ("distinct", "right"),
        ("min", "right"),
        ("max", "right"),
        ("mean", "right"),
        ("stddev", "right"),
        ("top values", "left"),
        ("histogram", "left"),
    ]:
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    rows = doc["rows"]
    for c in doc["columns"]:
        distinct = "" if c["distinct"] is None else ("" if c["distinct_exact"] else "≈") + f"{c['distinct']:,}"
        lo, hi = _when(c["min"], c["kind"]), _when(c["max"], c["kind"])
        if lo is None and c["min_length"] is not None:  # binary: its length range
            lo, hi = f"len {c['min_length']}", f"len {c['max_length']}"
        cells = [
            c["name"],
            c["type"],
            f"{c['null_pct']:.1f}%" if c["nulls"] else "0",
            distinct,
            _cell(lo),
            _cell(hi),
            _cell(c["mean"]),
            _cell(c["stddev"]),
            _top(c["top"], rows, c["kind"]),
            sparkline([b["count"] for b in c["histogram"] or []]),
        ]
        table.add_row(*(Text(cell) for cell in cells))  # Text: data is never read as rich markup
    return table


def _cell(value: Any, width: int = 20) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        text = f"{value:,.4f}".rstrip("0").rstrip(".") if abs(value) < 1e12 else f"{value:.4g}"
    elif isinstance(value, int) and not isinstance(value, bool):
        text = f"{value:,}"
    else:
        text = str(value) if value != "" else '""'
    return text if len(text) <= width else text[: width - 1] + "…"


def _when(value: Any, kind: str) -> Any:
    """ISO 8601 date-times with a space instead of the T, which reads better in a table."""
    return value.replace("T", " ", 1) if kind == "temporal" and isinstance(value, str) else value


def _top(top: list[dict[str, Any]] | None, rows: int, kind: str, shown: int = 3) -> str:
    """The first values with their share of the rows (their count when under 1%)."""
    parts = []
    for t in (top or [])[:shown]:
        share = 100 * t["count"] / rows if rows else 0.0
        amount = f"{share:.0f}%" if share >= 1 else f"×{t['count']:,}"
        parts.append(f"{_cell(_when(t['value'], kind), 19)} {amount}")
    return " · ".join(parts)


def sparkline(counts: list[int]) -> str:
    """Counts as one line of block characters, the highest bin full height."""
    if not counts or max(counts) == 0:
        return ""
    blocks = "▁▂▃▄▅▆▇█"
    peak = max(counts)
    return "".join(" " if n == 0 else blocks[min(7, n * 8 // peak if n < peak else 7)] for n in counts)
