"""parse_csv / parse_json: text payloads to Arrow rows.

After ``read_file`` the planner fuses them into one streaming DuckDB scan (``scan_file``); on
any other text (``read_stdin``, a read_file whose text is also used elsewhere) they parse in
Python: CSV streams record by record, JSON parses the whole document (it is one value).
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import AliasChoices, Field

from oxiflow.data import OxiData
from oxiflow.errors import DataError
from oxiflow.oxi import OxiConfig, StepContext, Transform, oxi
from oxiflow.oxis.oxide.common import JSON_SHAPE, iter_lines, require_text
from oxiflow.oxis.oxide.files import ReadFile, ReadFileConfig, resolve_input

log = logging.getLogger("oxiflow.oxis.parse")

# -- CSV ---------------------------------------------------------------------------------------


class ParseCsvConfig(OxiConfig):
    headers: bool = Field(True, validation_alias=AliasChoices("headers", "include_headers"))
    """The first record holds column names (alias `include_headers`); otherwise columns are `column_1..n`."""
    delimiter: str = Field(",", min_length=1, max_length=1)
    """Field separator."""
    quote_char: str = Field('"', min_length=1, max_length=1)
    """Quote character."""
    escape_char: str | None = Field(None, min_length=1, max_length=1)
    """Escape character inside quotes; unset: a doubled quote is a literal quote."""
    skip_rows: int = Field(0, ge=0)
    """Lines to skip before the header (or the first record)."""
    trim_whitespace: bool = True
    """Strip spaces around values and column names."""


def _dedupe(names: list[str]) -> list[str]:
    """Blank names become `column_N`; repeated names get `_1`, `_2` ... (as DuckDB does)."""
    out: list[str] = []
    seen: set[str] = set()
    for i, name in enumerate(names, 1):
        base = name or f"column_{i}"
        candidate, n = base, 0
        while candidate in seen:
            n += 1
            candidate = f"{base}_{n}"
        seen.add(candidate)
        out.append(candidate)
    return out


def _csv_schema(names: list[str]) -> pa.Schema:
    return pa.schema([pa.field(n, pa.string()) for n in names])


@oxi(
    "parse_csv",
    kind="transform",
    config=ParseCsvConfig,
    summary="CSV text to rows of text columns (named by the header, or column_1..n).",
    example="- name: parse_csv\n  config:\n    headers: true\n    delimiter: ','",
    reshapes=True,
)
class ParseCsv(Transform):
    config: ParseCsvConfig

    def transform(self, inputs: list[OxiData], ctx: StepContext) -> OxiData:
        data = inputs[0]
        require_text(data, ctx)
        cfg = self.config
        where = data.metadata.get("path", "<input>")
        lines = iter_lines(data.iter_text())
        for _ in range(cfg.skip_rows):
            if next(lines, None) is None:
                break
        reader = csv.reader(
            lines,
            delimiter=cfg.delimiter,
            quotechar=cfg.quote_char,
            escapechar=cfg.escape_char,
            doublequote=True,
            strict=True,
        )

        def records() -> Iterator[tuple[int, list[str]]]:
            while True:
                try:
                    rec = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:
                    raise self._error(f"malformed CSV: {exc}", where, reader.line_num + cfg.skip_rows, ctx) from None
                if rec:  # blank lines carry no record
                    yield reader.line_num + cfg.skip_rows, rec

        recs = records()
        first = next(recs, None)
        if first is None:
            return OxiData(pa.schema([]), [], _meta(data))
        if cfg.headers:
            names = _dedupe([n.strip() if cfg.trim_whitespace else n for n in first[1]])
            pending: list[tuple[int, list[str]]] = []
        else:
            names = [f"column_{i}" for i in range(1, len(first[1]) + 1)]
            pending = [first]
        schema = _csv_schema(names)
        width = len(names)
        trim = cfg.trim_whitespace

        def batches() -> Iterator[pa.RecordBatch]:
            cols: list[list[str | None]] = [[] for _ in names]
            count = 0
            for line, rec in _chain(pending, recs):
                if len(rec) != width:
                    raise self._error(f"expected {width} fields, found {len(rec)}", where, line, ctx)
                for col, value in zip(cols, rec, strict=True):
                    if trim:
                        value = value.strip()
                    col.append(value or None)
                count += 1
                if count >= ctx.batch_size:
                    yield pa.record_batch([pa.array(c, pa.string()) for c in cols], schema=schema)
                    cols, count = [[] for _ in names], 0
            if count:
                yield pa.record_batch([pa.array(c, pa.string()) for c in cols], schema=schema)

        return OxiData(schema, batches(), _meta(data))

    @staticmethod
    def _error(reason: str, where: str, line: int, ctx: StepContext) -> DataError:
        return DataError(reason, file=where, line=line, step=ctx.step_id, hint="fix the record or the CSV options")

    def scan_file(self, reader_config: ReadFileConfig, ctx: StepContext) -> OxiData:
        """read_file + parse_csv as one DuckDB read_csv: parallel, streaming, bounded memory."""
        from oxiflow.engine.duck import literal, options
        from oxiflow.oxis.files.duckscan import stream_query

        cfg = self.config
        path, meta = resolve_input(reader_config, ctx)
        encoding = {"utf-8": "utf-8", "utf-16": "utf-16", "iso8859-1": "latin-1"}.get(meta["encoding"])
        if encoding is None or not meta["size"]:  # empty, a pipe, or DuckDB cannot decode it: parse in Python
            return self.transform([ReadFile(reader_config).read(ctx)], ctx)
        # Every dialect option is explicit: DuckDB's sniffer would otherwise guess `skip`, comments
        # and quoting from a sample, and may take a late line for the header.
        opts = options(
            [
                ("delim", cfg.delimiter),
                ("header", cfg.headers),
                ("quote", cfg.quote_char),
                ("escape", cfg.escape_char or cfg.quote_char),
                ("comment", ""),
                ("skip", cfg.skip_rows),
                ("encoding", encoding),
                ("all_varchar", True),  # the same text columns as the unfused parser
                ("strict_mode", True),
                ("null_padding", False),
                ("compression", "none"),
            ]
        )
        query = f"SELECT * FROM read_csv({literal(str(path))}, {opts})"
        try:
            scanned = stream_query(query, ctx, [str(path)])
        except DataError:
            # DuckDB's sniffer rejected the file before reading a row (it names no line): the
            # Python parser reports the exact line and column.
            return self.transform([ReadFile(reader_config).read(ctx)], ctx)
        ctx.bytes_read = meta["size"]
        ctx.metadata.update(meta)
        if cfg.headers:
            names = _dedupe([n.strip() if cfg.trim_whitespace else n for n in scanned.schema.names])
        else:
            names = [f"column_{i}" for i in range(1, len(scanned.schema) + 1)]
        schema = _csv_schema(names)
        trim = cfg.trim_whitespace

        def batches() -> Iterator[pa.RecordBatch]:
            import pyarrow.compute as pc

            for batch in scanned:
                cols = []
                for col in batch.columns:
                    col = col.cast(pa.string())
                    if trim:
                        col = pc.utf8_trim_whitespace(col)
                        col = pc.if_else(pc.equal(col, ""), pa.scalar(None, pa.string()), col)
                    cols.append(col)
                yield pa.record_batch(cols, schema=schema)

        return OxiData(schema, batches(), meta)


def _chain(
    first: list[tuple[int, list[str]]], rest: Iterator[tuple[int, list[str]]]
) -> Iterator[tuple[int, list[str]]]:
    yield from first
    yield from rest


def _meta(data: OxiData) -> dict[str, Any]:
    return {k: v for k, v in data.metadata.items() if k not in (JSON_SHAPE, "encoding")}


# -- JSON --------------------------------------------------------------------------------------


class ParseJsonConfig(OxiConfig):
    strict: bool = True
    """Standard JSON only; `false` also allows comments, trailing commas and NaN/Infinity."""
    allow_comments: bool = False
    """Accept `// ...` and `/* ... */` comments."""
    allow_trailing_commas: bool = False
    """Accept a comma before `]` or `}`."""

    @property
    def lenient(self) -> bool:
        return not self.strict or self.allow_comments or self.allow_trailing_commas


def strip_extensions(text: str, comments: bool, commas: bool) -> str:
    """Blank out comments and trailing commas outside strings, keeping every line and column in
    place so error positions still point at the original text."""
    out = list(text)
    i, n = 0, len(text)
    last_comma: int | None = None  # a comma seen with only whitespace/comments after it
    while i < n:
        ch = text[i]
        if ch == '"':
            last_comma = None
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            i += 1
            continue
        if comments and ch == "/" and i + 1 < n and text[i + 1] in "/*":
            end = text.find("\n", i) if text[i + 1] == "/" else text.find("*/", i + 2)
            end = n if end < 0 else (end if text[i + 1] == "/" else end + 2)
            for j in range(i, end):
                if out[j] != "\n":
                    out[j] = " "
            i = end
            continue
        if ch == ",":
            last_comma = i
        elif ch in "]}":
            if commas and last_comma is not None:
                out[last_comma] = " "
            last_comma = None
        elif not ch.isspace():
            last_comma = None
        i += 1
    return "".join(out)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_document(text: str, cfg: ParseJsonConfig, where: str, step: str | None) -> tuple[Any, str]:
    """Parse a JSON document (or JSON Lines). Returns the value and its shape."""
    if not cfg.strict or cfg.allow_comments or cfg.allow_trailing_commas:
        text = strip_extensions(text, cfg.allow_comments or not cfg.strict, cfg.allow_trailing_commas or not cfg.strict)
    kwargs: dict[str, Any] = {} if not cfg.strict else {"parse_constant": _reject_constant}
    try:
        value = json.loads(text, **kwargs)
    except json.JSONDecodeError as exc:
        if exc.msg != "Extra data":
            raise _json_error(exc.msg, where, exc.lineno, exc.colno, step) from None
        return _parse_lines(text, kwargs, where, step), "array"
    except ValueError as exc:
        raise _json_error(str(exc), where, None, None, step) from None
    return value, _shape(value)


def _parse_lines(text: str, kwargs: dict[str, Any], where: str, step: str | None) -> list[Any]:
    """Several values one after another: JSON Lines."""
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line, **kwargs))
        except json.JSONDecodeError as exc:
            raise _json_error(exc.msg, where, lineno, exc.colno, step) from None
        except ValueError as exc:  # NaN / Infinity under strict: refused by parse_constant
            raise _json_error(str(exc), where, lineno, None, step) from None
    return out


def _shape(value: Any) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array" if all(isinstance(v, dict) for v in value) else "values"
    return "value"


def _json_error(reason: str, where: str, line: int | None, column: int | None, step: str | None) -> DataError:
    return DataError(
        f"invalid JSON: {reason}",
        file=where,
        line=line,
        column=column,
        step=step,
        hint="fix the document, or set strict: false to allow comments and trailing commas",
    )


def document_table(value: Any, shape: str, where: str) -> pa.Table:
    """A JSON value as rows: objects are rows, anything else is a row with a `value` column."""
    if shape in ("object", "value"):
        value = [value]
    rows = value if shape in ("array", "object") else [{"value": v} for v in value]
    if not rows:
        return pa.table({})
    try:
        arr = pa.array(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as exc:
        raise DataError(
            f"the JSON values do not fit one column type: {exc}",
            file=where,
            hint="make every record use the same type for a key (e.g. all numbers or all strings)",
        ) from None
    return pa.Table.from_batches([pa.RecordBatch.from_struct_array(arr)])


@oxi(
    "parse_json",
    kind="transform",
    config=ParseJsonConfig,
    summary="JSON or JSON Lines text to rows: an array of objects is rows, one object is one row.",
    example="- name: parse_json\n  config:\n    strict: true",
    reshapes=True,
)
class ParseJson(Transform):
    config: ParseJsonConfig

    def transform(self, inputs: list[OxiData], ctx: StepContext) -> OxiData:
        data = inputs[0]
        require_text(data, ctx)
        meta = _meta(data)
        where = str(meta.get("path", "<input>"))
        text = data.read_text()  # a JSON document is one value: it is parsed whole
        if not text.strip():
            return OxiData(pa.schema([]), [], meta)
        value, shape = parse_document(text, self.config, where, ctx.step_id)
        del text
        table = document_table(value, shape, where)
        meta[JSON_SHAPE] = shape
        return OxiData(table.schema, table.to_batches(max_chunksize=ctx.batch_size), meta)

    def scan_file(self, reader_config: ReadFileConfig, ctx: StepContext) -> OxiData:
        """read_file + parse_json as one DuckDB read_json (JSON Lines or a top-level array).

        Same answers as the unfused parser: DuckDB's JSON reader is lenient (trailing commas, NaN and
        Infinity) and turns a key whose values mix types into a JSON-text column, so the records it could
        have been lenient with are checked with Python's parser first, and a document with such a key is
        parsed by Python after all (which says which key)."""
        from oxiflow.engine.duck import literal
        from oxiflow.oxis.files.duckscan import stream_query

        path, meta = resolve_input(reader_config, ctx)
        shape = _peek_shape(path) if meta["size"] else None
        if self.config.lenient or meta.get("encoding") != "utf-8" or shape not in ("array", "object"):
            # DuckDB has no comments/trailing commas, other encodings or bare scalars: parse in Python.
            return self.transform([ReadFile(reader_config).read(ctx)], ctx)
        ctx.metadata.update(meta)
        ctx.bytes_read = meta["size"]
        fmt = "array" if shape == "array" else "auto"
        query = f"SELECT * FROM read_json({literal(str(path))}, format = {literal(fmt)})"
        try:
            scanned = stream_query(query, ctx, [str(path)], check=_refuse_json_columns)
        except _MixedTypes as mixed:
            if path.stat().st_size > PYTHON_PARSE_MAX_BYTES:
                raise DataError(
                    f"the JSON values of {mixed.column!r} do not fit one column type",
                    file=str(path),
                    step=ctx.step_id,
                    hint="make every record use the same type for a key (e.g. all numbers or all strings)",
                ) from None
            return self.transform([ReadFile(reader_config).read(ctx)], ctx)  # says which values clash
        except DataError as exc:
            raise self._locate(path, exc, ctx) from None
        if shape == "array" and scanned.schema.names == ["json"]:
            return self.transform([ReadFile(reader_config).read(ctx)], ctx)  # an array of scalars
        strict_check = ctx.limit_rows != 0  # explain probes the schema only

        def batches() -> Iterator[pa.RecordBatch]:
            try:
                if strict_check:
                    self._check_strict(path, fmt, ctx)
                yield from scanned
            except DataError as exc:
                raise self._locate(path, exc, ctx) from None

        return OxiData(
            scanned.schema, batches(), {**meta, JSON_SHAPE: shape if shape == "array" else _object_or_lines(path)}
        )

    def _check_strict(self, path: Path, fmt: str, ctx: StepContext) -> None:
        """Parse with Python every record DuckDB may have been lenient with (a comma before a closing
        bracket, NaN, Infinity, comments): DuckDB picks them out, so the pass stays fast and streaming."""
        from oxiflow.engine.duck import connect, literal

        suspect = r"'(,\s*[\]}])|nan|inf|/[/*]'"
        query = (
            f"SELECT json::VARCHAR FROM read_json_objects({literal(str(path))}, format = {literal(fmt)}) "
            f"WHERE regexp_matches(json::VARCHAR, {suspect}, 'i')"
        )
        con = connect(ctx)
        try:
            reader = con.sql(query).to_arrow_reader(1024)
            for batch in reader:
                for record in batch.column(0).to_pylist():
                    try:
                        json.loads(record, parse_constant=_reject_constant)
                    except ValueError as exc:
                        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
                        shown = record if len(record) <= 120 else record[:120] + "..."
                        raise _json_error(f"{reason} in record {shown}", str(path), None, None, ctx.step_id) from None
        except DataError:
            raise
        except Exception as exc:  # DuckDB could not split the records: the scan itself reports that
            log.debug("strict JSON pre-check of %s skipped: %s", path, exc)
        finally:
            con.close()

    def _locate(self, path: Path, exc: DataError, ctx: StepContext) -> DataError:
        """DuckDB reports a byte offset inside a record; Python's parser gives line and column."""
        if path.stat().st_size > PYTHON_PARSE_MAX_BYTES:
            exc.context.setdefault("step", ctx.step_id)
            return exc
        try:
            parse_document(path.read_text(encoding="utf-8-sig"), self.config, str(path), ctx.step_id)
        except DataError as located:
            return located
        exc.context.setdefault("step", ctx.step_id)
        return exc


# Above this size the fused parser does not fall back on Python's parser (which holds the whole
# document in memory) to locate an error or to name the key whose values mix types.
PYTHON_PARSE_MAX_BYTES = 256 << 20


class _MixedTypes(Exception):
    def __init__(self, column: str) -> None:
        super().__init__(column)
        self.column = column


def _refuse_json_columns(rel: Any) -> None:
    """DuckDB reads a key whose values mix types (`1` and `"1"`) as JSON text: not what parse_json does."""
    for name, typ in zip(rel.columns, rel.types, strict=True):
        if _holds_json(typ):
            raise _MixedTypes(name)


def _holds_json(typ: Any) -> bool:
    if str(typ) == "JSON":
        return True
    if typ.id in ("struct", "list", "map", "array", "union"):
        return any(_holds_json(child) for _, child in typ.children)
    return False


def _peek_shape(path: Path) -> str | None:
    with path.open("rb") as fh:
        head = fh.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"["):
        return "array"
    if head.startswith(b"{"):
        return "object"
    return None


def _object_or_lines(path: Path) -> str:
    """A file starting with `{` is one object, or JSON Lines when another value follows the
    first: scan only to the end of the first value."""
    depth, in_str, esc = 0, False, False
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 16):
            for i, b in enumerate(chunk):
                if in_str:
                    if esc:
                        esc = False
                    elif b == 0x5C:
                        esc = True
                    elif b == 0x22:
                        in_str = False
                elif b == 0x22:
                    in_str = True
                elif b in (0x7B, 0x5B):
                    depth += 1
                elif b in (0x7D, 0x5D):
                    depth -= 1
                    if depth == 0:
                        rest = chunk[i + 1 :] + fh.read(4096)
                        return "array" if rest.strip() else "object"
    return "object"
