"""The shell verbs: `oxi cat a.csv | oxi filter 'x > 1' | oxi write b.parquet` (issue 3).

Every verb builds a small pipeline of the registered oxis (a source per input, the verb's
transform, ``write_pipe`` or a file sink) and runs it with the local engine: the same code as
a pipeline step, no logic written twice. Between processes data travels as an Arrow IPC stream
(``oxiflow.pipe.stdio``); on a terminal the output is a table. See docs/shell.md.

Only typer is imported here; everything heavy is imported inside the commands (fast --help).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

FilesArg = Annotated[
    list[Path] | None,
    typer.Argument(
        help="Input files, globs or folders (format from the extension); none or `-`: stdin.", show_default=False
    ),
]
FormatOpt = Annotated[
    str | None,
    typer.Option(
        "--format",
        "-f",
        help="Output format: arrow, csv, jsonl, parquet, table (default: table on a terminal, else arrow).",
    ),
]
InputFormatOpt = Annotated[
    str | None,
    typer.Option(
        "--input-format", "-F", help="Input format when the extension (or stdin's first bytes) should not decide."
    ),
]
OptOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--opt", "-o", help="Reader option KEY=VALUE (the reader oxi's config; JSON values), e.g. -o header=false."
    ),
]
VerboseOpt = Annotated[bool, typer.Option("--verbose", help="Print a one-line summary on stderr.")]
OUT_FORMATS = ("arrow", "csv", "jsonl", "parquet", "table")


# -- helpers -------------------------------------------------------------------------------------------
def _fail(verb: str, message: str) -> NoReturn:
    sys.stderr.write(f"oxi {verb}: error: {message}\n")
    raise typer.Exit(2)


def _pairs(verb: str, text: str, what: str) -> dict[str, str]:
    """``a=b,c=d`` -> {a: b, c: d}; commas inside parentheses stay (``DECIMAL(10,2)``)."""
    out: dict[str, str] = {}
    for part in split_top(text):
        if "=" not in part:
            _fail(verb, f"expected {what}, got {part!r}")
        key, value = part.split("=", 1)
        if not key.strip() or not value.strip():
            _fail(verb, f"expected {what}, got {part!r}")
        out[key.strip()] = value.strip()
    return out


def split_top(text: str) -> list[str]:
    """Split on commas that are not inside parentheses or quotes."""
    parts: list[str] = []
    depth, quote, start = 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def reader_options(verb: str, pairs: list[str] | None) -> dict[str, Any]:
    """``-o KEY=VALUE`` pairs as a reader config (values are JSON when they parse as JSON)."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            _fail(verb, f"--opt expects KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def _paths(files: list[Path] | None) -> list[str]:
    return [str(f) for f in files] if files else ["-"]


def refuse_terminal_stdin(verb: str) -> None:
    """Stdin as input, but it is a terminal: exit 2 at once instead of waiting for typing."""
    if os.isatty(sys.stdin.fileno()):
        _fail(verb, "no input: give a FILE, or pipe data in (e.g. `oxi cat data.csv | oxi " + verb + " ...`)")


def _source(verb: str, path: str, fmt: str | None, opts: dict[str, Any], step_id: str | None = None) -> dict[str, Any]:
    from oxiflow.errors import DataError
    from oxiflow.pipe.inputs import source_step

    if path == "-":
        refuse_terminal_stdin(verb)
    try:
        step = source_step(path, fmt, opts)
    except DataError as exc:
        _fail(verb, str(exc))
    if step_id:
        step["id"] = step_id
    return step


def _inputs(
    verb: str, paths: list[str], fmt: str | None, opts: dict[str, Any], step_id: str = "input"
) -> list[dict[str, Any]]:
    """Source steps for ``paths``: one reader for files of one format (it handles globs and lists),
    else one per path joined by an SQL ``UNION ALL BY NAME`` (the last step has id ``step_id``)."""
    from oxiflow.engine.duck import ident

    steps = [_source(verb, p, fmt, opts) for p in paths]
    names = {s["name"] for s in steps}
    if len(steps) == 1 or (len(names) == 1 and "read_pipe" not in names):
        merged = steps[0]
        if len(steps) > 1:
            merged["config"]["path"] = [s["config"]["path"] for s in steps]
        merged["id"] = step_id
        return [merged]
    ids = [f"{step_id}_{i + 1}" for i in range(len(steps))]
    for s, i in zip(steps, ids, strict=True):
        s["id"] = i
    query = " UNION ALL BY NAME ".join(f"SELECT * FROM {ident(i)}" for i in ids)
    return [*steps, {"name": "sql", "id": step_id, "inputs": ids, "config": {"query": query}}]


def _sink(verb: str, fmt: str | None) -> dict[str, Any]:
    if fmt is not None and fmt not in OUT_FORMATS:
        _fail(verb, f"unknown --format {fmt!r} (use one of: {', '.join(OUT_FORMATS)})")
    return {"name": "write_pipe", "config": {"format": fmt or "auto"}}


def _run(verb: str, steps: list[dict[str, Any]], verbose: bool = False) -> NoReturn:
    from oxiflow.pipe.plan import VerbError, plan_steps, run_steps

    try:
        plan = plan_steps(verb, steps)
    except VerbError as exc:
        _fail(verb, str(exc))
    raise typer.Exit(run_steps(verb, plan, verbose=verbose).exit_code)


def _pipe(
    verb: str,
    middle: list[dict[str, Any]],
    files: list[Path] | None,
    fmt: str | None,
    input_format: str | None,
    opt: list[str] | None,
    verbose: bool,
) -> NoReturn:
    sink = _sink(verb, fmt)
    steps = _inputs(verb, _paths(files), input_format, reader_options(verb, opt))
    _run(verb, [*steps, *middle, sink], verbose)


# -- the verbs -----------------------------------------------------------------------------------------
def cat(
    files: FilesArg = None,
    fmt: FormatOpt = None,
    input_format: InputFormatOpt = None,
    opt: OptOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Read files (any supported format, globs, `-` for stdin) and write them to stdout.

    Example: oxi cat 'data/orders-*.csv' | oxi write orders.parquet
    """
    _pipe("cat", [], files, fmt, input_format, opt, verbose)


def head(
    files: FilesArg = None,
    n: Annotated[int, typer.Option("-n", "--rows", min=0, help="How many rows.")] = 10,
    fmt: FormatOpt = None,
    input_format: InputFormatOpt = None,
    opt: OptOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """The first rows.

    Example: oxi head -n 5 orders.parquet
    """
    _pipe("head", [{"name": "limit", "config": {"n": n}}], files, fmt, input_format, opt, verbose)


def tail(
    files: FilesArg = None,
    n: Annotated[int, typer.Option("-n", "--rows", min=0, help="How many rows.")] = 10,
    fmt: FormatOpt = None,
    input_format: InputFormatOpt = None,
    opt: OptOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """The last rows (only those are kept in memory).

    Example: oxi tail -n 5 orders.csv
    """
    _pipe("tail", [{"name": "tail", "config": {"n": n}}], files, fmt, input_format, opt, verbose)


def filter_(
    expr: Annotated[str, typer.Argument(help="A DuckDB boolean expression over the columns.")],
    files: FilesArg = None,
    fmt: FormatOpt = None,
    input_format: InputFormatOpt = None,
    opt: OptOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Keep the rows where EXPR is true.

    Example: oxi cat orders.csv | oxi filter "amount > 100 and status <> 'cancelled'"
    """
    _pipe("filter", [{"name": "filter", "config": {"expr": expr}}], files, fmt, input_format, opt, verbose)


def select(
    columns: Annotated[str | None, typer.Argument(help="Columns to keep, in order: a,b,c.", show_default=False)] = None,
    files: FilesArg = None,
    exclude: Annotated[str | None, typer.Option("--exclude", "-x", help="Columns to drop: a,b.")] = None,
    fmt: FormatOpt = None,
    input_format: InputFormatOpt = None,
    opt: OptOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Keep (and reorder) columns, or drop some with --exclude, or both (--exclude applies after
    COLUMNS). With --exclude, a first argument that names an input is a FILE.

    Example: oxi select order_id,amount orders.parquet
    """
    from oxiflow.pipe.inputs import looks_like_input

    paths = list(files or [])
    if exclude is not None and columns is not None and looks_like_input(columns):
        paths.insert(0, Path(columns))  # `oxi select -x c orders.csv`: no COLUMNS, all FILEs
        columns = None
    if columns is None and exclude is None:
        _fail("select", "give the columns to keep (a,b,c) or --exclude a,b")
    config: dict[str, Any] = {}
    if columns is not None:
        config["columns"] = split_top(columns)
    if exclude is not None:
        config["exclude"] = split_top(exclude)
    _pipe("select", [{"name": "select", "config": config}], paths or None, fmt, input_format, opt, verbose)


def rename(
    mapping: Annotated[str, typer.Argument(help="OLD=NEW[,OLD=NEW...]")],
    files: FilesArg = None,
    fmt: FormatOpt = None,
    input_format: InputFormatOpt = None,
    opt: OptOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Rename columns (types and field metadata are kept).

    Example: oxi rename cust_id=customer_id,amt=amount orders.csv
    """
    columns = _pairs("rename", mapping, "OLD=NEW")
    _pipe("rename", [{"name": "rename", "config": {"columns": columns}}], files, fmt, input_format, opt, verbose)


def cast(
    spec: Annotated[str, typer.Argument(help="COLUMN=TYPE[,COLUMN=TYPE...] (DuckDB types).")],
    files: FilesArg = None,
    on_error: Annotated[
        str, typer.Option("--on-error", help="A value that does not convert: fail, null or skip.")
    ] = "fail",
    fmt: FormatOpt = None,
    input_format: InputFormatOpt = None,
    opt: OptOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Convert columns to other types.

    Example: oxi cast 'amount=DECIMAL(10,2),created_at=TIMESTAMP' orders.csv
    """
    columns = _pairs("cast", spec, "COLUMN=TYPE")
    step = {"name": "cast", "config": {"columns": columns, "on_error": on_error}}
    _pipe("cast", [step], files, fmt, input_format, opt, verbose)


def derive(
    spec: Annotated[str, typer.Argument(help="NAME=EXPR (a DuckDB expression over the row).")],
    files: FilesArg = None,
    more: Annotated[list[str] | None, typer.Option("--and", "-e", help="Another NAME=EXPR (repeatable).")] = None,
    fmt: FormatOpt = None,
    input_format: InputFormatOpt = None,
    opt: OptOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Add or replace columns computed by SQL expressions.

    Example: oxi derive 'total=quantity * amount' -e 'day=created_at::date' orders.parquet
    """
    columns: dict[str, str] = {}
    for item in [spec, *(more or [])]:
        name, sep, expr = item.partition("=")
        if not sep or not name.strip() or not expr.strip():
            _fail("derive", f"expected NAME=EXPR, got {item!r}")
        columns[name.strip()] = expr.strip()
    _pipe("derive", [{"name": "derive", "config": {"columns": columns}}], files, fmt, input_format, opt, verbose)


def dedupe(
    files: FilesArg = None,
    keys: Annotated[str | None, typer.Option("--keys", "-k", help="Key columns a,b (default: all columns).")] = None,
    keep: Annotated[str, typer.Option("--keep", help="first or last row of each key.")] = "first",
    order_by: Annotated[
        str | None, typer.Option("--order-by", help="Column(s) deciding first/last: 'updated_at desc'.")
    ] = None,
    fmt: FormatOpt = None,
    input_format: InputFormatOpt = None,
    opt: OptOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Keep one row per key.

    Example: oxi dedupe --keys order_id --keep last --order-by updated_at orders.csv
    """
    config: dict[str, Any] = {"keep": keep}
    if keys:
        config["keys"] = split_top(keys)
    if order_by:
        config["order_by"] = split_top(order_by)
    _pipe("dedupe", [{"name": "dedupe", "config": config}], files, fmt, input_format, opt, verbose)


def sort(
    by: Annotated[str, typer.Argument(help="Columns, each optionally `desc` / `nulls first`: 'amount desc,id'.")],
    files: FilesArg = None,
    fmt: FormatOpt = None,
    input_format: InputFormatOpt = None,
    opt: OptOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Sort the whole stream (spills to disk when large).

    Example: oxi sort 'amount desc,order_id' orders.parquet
    """
    _pipe("sort", [{"name": "sort", "config": {"by": split_top(by)}}], files, fmt, input_format, opt, verbose)


def sql(
    query: Annotated[str, typer.Argument(help="A DuckDB SELECT; the input is the table `input`.")],
    files: FilesArg = None,
    inputs: Annotated[
        list[str] | None, typer.Option("--input", "-i", help="A named input NAME=PATH (repeatable; PATH `-` is stdin).")
    ] = None,
    fmt: FormatOpt = None,
    input_format: InputFormatOpt = None,
    opt: OptOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Run SQL over the input (`input`) or several named inputs.

    `input` is the FILEs, else stdin; with -i inputs and no FILE, stdin is `input` only when the
    query reads `input`.

    Example: oxi sql -i o=orders.csv -i c=customers.jsonl 'select * from o join c using (customer_id)'
    """
    from oxiflow.pipe.sqlrefs import materialize, reads, table_refs

    named = _named("sql", inputs)
    refs = table_refs(query)
    # never alias a lone -i input as `input` (the sql oxi's rule for one input): stdin is `input`
    stdin = not named or ("input" not in named and reads(query, "input", refs))
    steps, ids = _named_inputs("sql", files, named, input_format, opt, stdin=stdin)
    # an input is a one-shot stream: one the query reads twice goes through a MATERIALIZED CTE
    twice = {name: f"{name}__stream" for name in ids if refs is not None and refs[name.lower()] > 1}
    for s in steps:
        if s.get("id") in twice:
            s["id"] = twice[s["id"]]
    ids = [twice.get(i, i) for i in ids]
    middle = [{"name": "sql", "inputs": ids, "config": {"query": materialize(query, twice)}}]
    _run("sql", [*steps, *middle, _sink("sql", fmt)], verbose)


def _named(verb: str, inputs: list[str] | None) -> dict[str, str]:
    return _pairs(verb, ",".join(inputs), "NAME=PATH") if inputs else {}


def _named_inputs(
    verb: str,
    files: list[Path] | None,
    named: dict[str, str],
    fmt: str | None,
    opt: list[str] | None,
    *,
    stdin: bool,
) -> tuple[list[dict[str, Any]], list[str]]:
    """The source steps of ``input`` (the FILEs, else stdin when ``stdin``) and of each named input."""
    opts = reader_options(verb, opt)
    steps: list[dict[str, Any]] = []
    ids: list[str] = []
    if files or stdin:
        steps += _inputs(verb, _paths(files), fmt, opts)
        ids.append("input")
    for name, path in named.items():
        steps += _inputs(verb, [path], fmt, opts, step_id=name)
        ids.append(name)
    if sum(1 for s in steps if s["name"] == "read_pipe") > 1:
        _fail(verb, "stdin can be only one input")
    return steps, ids


def write(
    path: Annotated[Path, typer.Argument(help="The file to write (format from the extension).")],
    fmt: Annotated[
        str | None, typer.Option("--format", "-f", help="File format when the extension does not say.")
    ] = None,
    input_format: InputFormatOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Write stdin to a file, atomically (temporary name, renamed when complete).

    Example: oxi cat orders.csv | oxi filter 'amount > 0' | oxi write clean.parquet
    """
    _run("write", [*_inputs("write", ["-"], input_format, {}), _file_sink("write", str(path), fmt)], verbose)


def _file_sink(verb: str, path: str, fmt: str | None) -> dict[str, Any]:
    from oxiflow.errors import DataError
    from oxiflow.pipe.inputs import sink_step

    try:
        return sink_step(path, fmt)
    except DataError as exc:
        _fail(verb, str(exc))


def convert(
    src: Annotated[Path, typer.Argument(help="Input file, glob or folder.")],
    dst: Annotated[Path, typer.Argument(help="Output file (format from the extension).")],
    fmt: Annotated[
        str | None, typer.Option("--format", "-f", help="Output format when the extension does not say.")
    ] = None,
    input_format: InputFormatOpt = None,
    opt: OptOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Convert a file from one format to another.

    Example: oxi convert orders.csv orders.parquet
    """
    steps = _inputs("convert", [str(src)], input_format, reader_options("convert", opt))
    _run("convert", [*steps, _file_sink("convert", str(dst), fmt)], verbose)


def step(
    name: Annotated[str, typer.Argument(help="A registered oxi (see `oxi plugins list`).")],
    files: FilesArg = None,
    config: Annotated[str, typer.Option("--config", "-c", help="The oxi's config as JSON.")] = "{}",
    inputs: Annotated[
        list[str] | None,
        typer.Option("--input", "-i", help="A named input NAME=PATH (repeatable), for multi-input oxis."),
    ] = None,
    fmt: FormatOpt = None,
    input_format: InputFormatOpt = None,
    opt: OptOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Run any registered oxi (built-in or third-party) as a verb: a source writes its rows, a
    transform reads the inputs (stdin by default), a sink consumes them.

    Example: oxi cat orders.csv | oxi step dedupe --config '{"keys": ["order_id"], "keep": "last"}'
    """
    from oxiflow.registry import PluginLoadError, UnknownOxiError, default_registry

    try:
        spec = default_registry().get(name)
    except UnknownOxiError as exc:
        _fail("step", f"{exc} (see `oxi plugins list`)")
    except PluginLoadError as exc:
        _fail("step", str(exc))
    try:
        cfg = json.loads(config)
    except json.JSONDecodeError as exc:
        _fail("step", f"--config is not valid JSON: {exc}")
    if not isinstance(cfg, dict):
        _fail("step", "--config must be a JSON object")
    this: dict[str, Any] = {"name": name, "id": name, "config": cfg}
    if spec.kind == "source":
        if files or inputs:
            _fail("step", f"{name} is a source: it takes no inputs")
        _run("step", [this, _sink("step", fmt)], verbose)
    named = _named("step", inputs)
    # the oxi's config decides what it reads: with -i inputs, stdin only when named (`-`)
    steps, ids = _named_inputs("step", files, named, input_format, opt, stdin=not named)
    this["inputs"] = ids
    tail_steps = [] if spec.kind == "sink" else [_sink("step", fmt)]
    _run("step", [*steps, this, *tail_steps], verbose)


def schema(
    files: FilesArg = None,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")] = False,
    fmt: FormatOpt = None,
    input_format: InputFormatOpt = None,
    opt: OptOpt = None,
) -> None:
    """The Arrow schema: names, types, nullability, field metadata (reads no rows).

    Example: oxi schema orders.parquet --json
    """
    from oxiflow.cli.shell import manners
    from oxiflow.pipe.info import emit_table, probe_schema, schema_json, schema_table
    from oxiflow.pipe.plan import VerbError, VerbFailed, plan_steps

    out_format = _sink("schema", fmt)["config"]["format"]
    steps = _inputs("schema", _paths(files), input_format, reader_options("schema", opt))
    with manners("schema"):
        try:
            arrow_schema = probe_schema("schema", plan_steps("schema", steps))
            if json_out:
                sys.stdout.write(json.dumps(schema_json(arrow_schema), indent=2) + "\n")
            else:
                emit_table("schema", schema_table(arrow_schema), out_format)
        except VerbError as exc:
            _fail("schema", str(exc))
        except VerbFailed as exc:
            raise typer.Exit(exc.exit_code) from None


def count(
    files: FilesArg = None,
    json_out: Annotated[bool, typer.Option("--json", help='Print {"rows": N}.')] = False,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            "-f",
            help="Output the count as a one-row table `rows` in this format: arrow, csv, jsonl, parquet, "
            "table (default: the bare number).",
        ),
    ] = None,
    input_format: InputFormatOpt = None,
    opt: OptOpt = None,
) -> None:
    """Count rows (Parquet: from the file footers, without a scan).

    Example: oxi count 'data/*.parquet'
    """
    from oxiflow.cli.shell import manners
    from oxiflow.pipe.info import count_rows, emit_table, metadata_rows
    from oxiflow.pipe.plan import VerbError, VerbFailed, plan_steps

    out_format = _sink("count", fmt)["config"]["format"] if fmt is not None else None
    if out_format is not None and json_out:
        _fail("count", "give --json or --format, not both")
    steps = _inputs("count", _paths(files), input_format, reader_options("count", opt))
    with manners("count"):
        try:
            rows = metadata_rows(steps)
            if rows is None:
                rows = count_rows("count", plan_steps("count", steps))
            if out_format is not None:
                import pyarrow as pa

                emit_table("count", pa.table({"rows": pa.array([rows], pa.int64())}), out_format)
            else:
                sys.stdout.write((json.dumps({"rows": rows}) if json_out else str(rows)) + "\n")
        except VerbError as exc:
            _fail("count", str(exc))
        except VerbFailed as exc:
            raise typer.Exit(exc.exit_code) from None


VERBS: dict[str, Callable[..., None]] = {
    "cat": cat,
    "head": head,
    "tail": tail,
    "schema": schema,
    "count": count,
    "sql": sql,
    "filter": filter_,
    "select": select,
    "rename": rename,
    "cast": cast,
    "derive": derive,
    "dedupe": dedupe,
    "sort": sort,
    "write": write,
    "convert": convert,
    "step": step,
}


def register(app: typer.Typer) -> None:
    """Add the command(s) of this module to ``app`` (heavy imports stay inside the commands)."""
    for name, fn in VERBS.items():
        app.command(name, rich_help_panel="Shell verbs")(fn)
