"""`oxi diff A B --key COLS`: rows only in A, only in B, and changed."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from oxiflow.cli.options import JsonOpt

if TYPE_CHECKING:
    from oxiflow.explore.diff import DiffResult


def _names(values: list[str] | None) -> list[str]:
    """`--key a,b` and `--key a --key b` alike."""
    return [name.strip() for value in values or [] for name in value.split(",") if name.strip()]


def diff(
    a: Annotated[
        str,
        typer.Argument(
            metavar="A", help="Input A: a file, glob or folder (any format), db.duckdb::table, or - for stdin."
        ),
    ],
    b: Annotated[str, typer.Argument(metavar="B", help="Input B, compared with A (one of them may be -).")],
    key: Annotated[
        list[str],
        typer.Option("--key", "-k", metavar="COLS", help="Key column(s) that identify a row: --key id or --key a,b."),
    ],
    columns: Annotated[
        list[str] | None,
        typer.Option("--columns", metavar="COLS", help="Compare only these columns (comma-separated)."),
    ] = None,
    ignore: Annotated[
        list[str] | None, typer.Option("--ignore", metavar="COLS", help="Leave these columns out.")
    ] = None,
    tolerance: Annotated[
        float | None, typer.Option("--tolerance", min=0, metavar="X", help="Float/decimal values this close are equal.")
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", metavar="DIR", help="Write only_a, only_b and changed .parquet into this folder."
        ),
    ] = None,
    examples: Annotated[
        int, typer.Option("--examples", min=0, metavar="N", help="Example keys shown per category.")
    ] = 5,
    format_a: Annotated[
        str | None, typer.Option("--format-a", metavar="FMT", help="Format of A when its name does not say.")
    ] = None,
    format_b: Annotated[
        str | None, typer.Option("--format-b", metavar="FMT", help="Format of B when its name does not say.")
    ] = None,
    memory_limit_mb: Annotated[
        int,
        typer.Option("--memory-limit-mb", min=64, metavar="MB", help="DuckDB memory limit; spills to disk past it."),
    ] = 1024,
    json_out: JsonOpt = False,
) -> None:
    """Compare two datasets by key: rows only in A, only in B, and changed (with the changed columns).

    A and B may be of different formats (CSV against Parquet against a DuckDB table); columns are
    matched by name. Exit code: 0 when equal, 1 when they differ, 2 on errors (like diff(1)).

    Example: oxi diff orders.csv warehouse.duckdb::analytics.orders --key order_id --output diff/
    """
    from oxiflow.cli.output import err, print_json
    from oxiflow.cli.shell import manners
    from oxiflow.cli.verbs import refuse_terminal_stdin
    from oxiflow.errors import OxiflowError
    from oxiflow.explore.diff import DiffOptions
    from oxiflow.explore.diff import diff as run_diff

    if a == "-" and b == "-":
        err("error: only one of A and B can be standard input")
        raise typer.Exit(2)
    if "-" in (a, b):
        refuse_terminal_stdin("diff")
    options = DiffOptions(
        key=_names(key),
        columns=_names(columns) or None,
        ignore=_names(ignore),
        tolerance=tolerance,
        examples=examples,
        memory_limit_mb=memory_limit_mb,
        format_a=format_a,
        format_b=format_b,
    )
    with manners("diff") as state:
        try:
            result = run_diff(a, b, options, output)
        except OxiflowError as exc:
            state.check()  # Ctrl-C during a query comes back as the query's error
            # exit 1 means "the inputs differ", so every failure to compare is a 2, as in diff(1)
            err(f"error: {exc}")
            if json_out:
                print_json(exc.to_dict())
            raise typer.Exit(2) from None
        if json_out:
            print_json(result.to_dict())
        elif sys.stdout.isatty():
            _print_table(result)
        else:
            sys.stdout.write(_text(result))
    raise typer.Exit(0 if result.equal else 1)


def _text(r: DiffResult) -> str:
    """The summary as plain lines (stdout is a file or a pipe)."""
    lines = [
        f"A: {r.a.spec} ({r.a.rows:,} rows)",
        f"B: {r.b.spec} ({r.b.rows:,} rows)",
        f"key: {', '.join(r.key)}",
        f"only in A: {r.counts['only_a']:,}",
        f"only in B: {r.counts['only_b']:,}",
        f"changed: {r.counts['changed']:,}",
        f"unchanged: {r.counts['unchanged']:,}",
    ]
    for col, n in r.changed_by_column.items():
        lines.append(f"  changed {col}: {n:,}")
    if r.columns_only_in_a:
        lines.append(f"columns only in A: {', '.join(r.columns_only_in_a)}")
    if r.columns_only_in_b:
        lines.append(f"columns only in B: {', '.join(r.columns_only_in_b)}")
    for col, type_name in r.casts.items():
        lines.append(f"compared as {type_name}: {col} (A {r.a.columns[col]}, B {r.b.columns[col]})")
    for status, label in (("only_a", "only in A"), ("only_b", "only in B"), ("changed", "changed")):
        for ex in r.examples[status]:
            lines.append(f"e.g. {label}: {_key_text(ex)}")
    for status, path in r.outputs.items():
        lines.append(f"wrote {status}: {path}")
    lines.append("equal" if r.equal else "differ")
    return "\n".join(lines) + "\n"


def _key_text(example: dict) -> str:
    text = ", ".join(f"{k}={v!r}" for k, v in example["key"].items())
    if "changed_columns" in example:
        text += f" [{', '.join(example['changed_columns'])}]"
    return text


def _print_table(r: DiffResult) -> None:
    from rich.markup import escape
    from rich.table import Table

    from oxiflow.cli.shell import console as shell_console

    table = Table(title=f"diff by {', '.join(r.key)}: {'equal' if r.equal else 'differ'}", title_justify="left")
    table.add_column("rows")
    table.add_column("count", justify="right")
    table.add_column("examples")
    table.add_row("in A", f"{r.a.rows:,}", escape(r.a.spec))
    table.add_row("in B", f"{r.b.rows:,}", escape(r.b.spec))
    table.add_row("only in A", f"{r.counts['only_a']:,}", escape("; ".join(_key_text(e) for e in r.examples["only_a"])))
    table.add_row("only in B", f"{r.counts['only_b']:,}", escape("; ".join(_key_text(e) for e in r.examples["only_b"])))
    table.add_row("changed", f"{r.counts['changed']:,}", escape("; ".join(_key_text(e) for e in r.examples["changed"])))
    for col, n in r.changed_by_column.items():
        table.add_row(f"  {col}", f"{n:,}", "")
    table.add_row("unchanged", f"{r.counts['unchanged']:,}", "")
    console = shell_console()
    console.print(table)
    notes = []
    if r.columns_only_in_a:
        notes.append(f"columns only in A: {', '.join(r.columns_only_in_a)}")
    if r.columns_only_in_b:
        notes.append(f"columns only in B: {', '.join(r.columns_only_in_b)}")
    notes += [f"{col} compared as {t} (A {r.a.columns[col]}, B {r.b.columns[col]})" for col, t in r.casts.items()]
    notes += [f"wrote {status}: {path}" for status, path in r.outputs.items()]
    for note in notes:
        console.print(note, highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    """Add the command(s) of this module to ``app`` (heavy imports stay inside the commands)."""
    app.command("diff")(diff)
