"""read_csv / write_csv: delimited text through DuckDB's parallel CSV reader and writer."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from oxiflow.data import OxiData
from oxiflow.engine.duck import ident, literal, options
from oxiflow.errors import DataError
from oxiflow.oxi import PushedQuery, ScanSQL, Source, StepContext, oxi
from oxiflow.oxis.files.common import FileSinkConfig, FileSourceConfig, OnError, atomic_output, expand_paths
from oxiflow.oxis.files.csvdialect import Dialect, check_dialect, field_index, file_lines, open_text
from oxiflow.oxis.files.duckcopy import CopySink, copy_out
from oxiflow.oxis.files.duckscan import csv_reason, stream_query, translate_scan_error

if TYPE_CHECKING:  # a pushed-down read (one DuckDB COPY) never needs Arrow: imported where batches flow
    import pyarrow as pa

log = logging.getLogger("oxiflow.oxis.read_csv")


class ReadCsvConfig(FileSourceConfig):
    delimiter: str | None = None
    """Field separator; sniffed when unset (`,`, `;`, tab, `|`)."""
    header: bool | None = None
    """Whether the first row holds column names; sniffed when unset."""
    quote: str | None = None
    """Quote character (default `\"`)."""
    escape: str | None = None
    """Escape character inside quotes (default: the quote doubled)."""
    encoding: Literal["utf-8", "utf-16", "latin-1"] = "utf-8"
    """Text encoding of the file."""
    skip_rows: int = Field(0, ge=0)
    """Lines to skip before the header."""
    compression: Literal["auto", "none", "gzip", "zstd"] = "auto"
    """Compression; `auto` goes by the extension (`.gz`, `.zst`)."""
    columns: dict[str, str] | None = None
    """Column name -> DuckDB type, to fix types instead of sniffing them."""
    null_values: list[str] | None = None
    """Strings read as null (default: the empty field)."""
    all_varchar: bool = False
    """Read every column as text (no type inference)."""
    sample_size: int = 20_480
    """Rows sampled to sniff the dialect and types (-1: the whole file)."""
    union_by_name: bool = True
    """With several files, match columns by name (files may differ in columns)."""
    filename: bool = False
    """Add a `filename` column with the source file of each row."""


def csv_scan_options(cfg: ReadCsvConfig) -> list[tuple[str, Any]]:
    return [
        ("delim", cfg.delimiter),
        ("header", cfg.header),
        ("quote", cfg.quote),
        ("escape", cfg.escape),
        ("encoding", cfg.encoding if cfg.encoding != "utf-8" else None),
        ("skip", cfg.skip_rows or None),
        ("compression", cfg.compression if cfg.compression != "auto" else None),
        ("columns", cfg.columns),
        ("nullstr", cfg.null_values),
        ("all_varchar", cfg.all_varchar or None),
        ("sample_size", cfg.sample_size),
        ("union_by_name", cfg.union_by_name),
        ("filename", cfg.filename or None),
    ]


@oxi(
    "read_csv",
    kind="source",
    config=ReadCsvConfig,
    summary="Read CSV/TSV files (globs, folders, gzip/zstd) as typed Arrow batches.",
    example="- name: read_csv\n  config:\n    path: data/orders*.csv\n    on_error: dlq",
)
class ReadCsv(Source):
    config: ReadCsvConfig
    metadata_keys: ClassVar[tuple[str, ...]] = ("path", "files", "files_new", "dialect_repaired")

    def read(self, ctx: StepContext) -> OxiData:
        return scan_csv(self.config, ctx)

    def pushdown_ready(self) -> bool:
        return self.config.on_error == OnError.fail

    def scan_sql(self, ctx: StepContext) -> ScanSQL:
        cfg = self.config
        files, query, dialect = _csv_query(cfg, ctx)

        def translate(exc: BaseException) -> BaseException:
            err = translate_scan_error(exc, files)
            return refine_error(err, cfg, dialect, files) if isinstance(err, DataError) else err

        return ScanSQL(query, files, translate=translate)


def _csv_query(cfg: ReadCsvConfig, ctx: StepContext) -> tuple[list[str], str, Dialect | None]:
    """The files, the DuckDB scan of them and the dialect checked on the first; reports path, files
    and bytes read."""
    files = [str(p) for p in expand_paths(cfg.path, ctx, (".csv", ".tsv", ".txt"))]
    opts = csv_scan_options(cfg)
    # matching columns by name only matters across files, and costs a pass over the header of
    # each (about 40 ms at start-up); DuckDB also cannot keep a rejects table with it on
    if len(files) == 1 or cfg.on_error != OnError.fail:
        opts = [(k, False if k == "union_by_name" else v) for k, v in opts]
    lenient = [("ignore_errors", True), ("store_rejects", True)] if cfg.on_error != OnError.fail else []
    dialect = _checked_dialect(cfg, ctx, files[0], opts + lenient)
    if dialect is not None and dialect.pinned:
        # the sniffer was fooled by malformed rows (csvdialect.py): read with the repaired dialect,
        # and the same one for every file of a glob
        opts = dialect.scan_options(cfg)
        ctx.metadata["dialect_repaired"] = dialect.reason
        for note in dialect.notes:
            log.warning("step %s: %s: %s", ctx.step_id, files[0], note)
    elif dialect is not None and len(files) == 1:
        opts = dialect.scan_options(cfg)  # what DuckDB would sniff again: read with it (sniffing twice costs ~40 ms)
    ctx.metadata.update(path=files[0] if len(files) == 1 else files, files=len(files))
    ctx.bytes_read = sum(_size(f) for f in files)
    return files, f"SELECT * FROM read_csv({literal(files)}, {options(opts + lenient)})", dialect


def _checked_dialect(cfg: ReadCsvConfig, ctx: StepContext, path: str, opts: list[tuple[str, Any]]) -> Dialect | None:
    from oxiflow.engine.duck import connect

    sniff_opts = [(k, v) for k, v in opts if k not in ("union_by_name", "filename")]
    con = connect(ctx)
    try:
        return check_dialect(con, path, cfg, sniff_opts)
    except Exception as exc:
        err = translate_scan_error(exc, [path])
        raise (refine_error(err, cfg, None, [path]) if isinstance(err, DataError) else err) from None
    finally:
        con.close()


def scan_csv(cfg: ReadCsvConfig, ctx: StepContext) -> OxiData:
    files, query, dialect = _csv_query(cfg, ctx)

    def refine(err: DataError) -> DataError:
        return refine_error(err, cfg, dialect, files)

    if cfg.on_error == OnError.fail:
        return stream_query(query, ctx, files, on_error=refine)
    rejects = _Rejects(cfg, ctx, dialect)
    main = stream_query(query, ctx, files, after=rejects.collect, on_error=refine)

    def batches() -> Iterator[pa.RecordBatch]:
        yield from main
        # A value whose quote is never closed runs to the end of the file, so DuckDB rejects the rest of
        # the file as one record: set aside only its first line, and read on from the next one.
        while rejects.tails and dialect is not None:
            file, line = rejects.tails.pop(0)
            yield from _read_tail(file, line, cfg, ctx, dialect, rejects, main.schema)

    return main.with_batches(batches(), main.schema)


class _Rejects:
    """Collects the records DuckDB set aside (counted, dead-lettered) with their file lines."""

    def __init__(self, cfg: ReadCsvConfig, ctx: StepContext, dialect: Dialect | None) -> None:
        self.cfg, self.ctx, self.dialect = cfg, ctx, dialect
        self.tails: list[tuple[str, int]] = []  # (file, line of a record whose quote never closes)
        self.seen: set[tuple[str, int]] = set()

    def collect(self, con: Any, origin: dict[str, tuple[str, int]] | None = None) -> None:
        """``origin``: scanned file -> (the file it was cut from, lines before its first record line)."""
        rows = con.sql(
            "SELECT s.file_path, e.line, e.column_name, e.error_type, e.csv_line, e.error_message "
            "FROM reject_errors e JOIN reject_scans s USING (scan_id, file_id) ORDER BY s.file_path, e.line"
        ).fetchall()
        quote = self.dialect.quote if self.dialect is not None else '"'
        by_file: dict[str, list[int]] = {}
        for file_path, line, *_ in rows:
            if line is not None:
                by_file.setdefault(file_path, []).append(int(line))
        lines = {f: file_lines(f, self._cfg_for(f, origin), quote, records) for f, records in by_file.items()}
        for file_path, record, column, etype, raw, message in rows:
            source, offset = (origin or {}).get(file_path, (file_path, 0))
            line = None if record is None else lines[file_path].get(int(record), int(record)) + offset
            if (source, line or -1) in self.seen:  # one record may break several rules; count it once
                continue
            self.seen.add((source, line or -1))
            text = str(raw or "").lstrip("\r\n")
            first, _, rest = text.partition("\n")
            reason = str(message).strip().splitlines()[0]  # DuckDB's words: dead-letter tooling matches on them
            if etype == "UNQUOTED VALUE" and "unterminated" in csv_reason(reason)[0] and line is not None:
                text = first.rstrip("\r")
                if rest.strip():
                    self.tails.append((source, line))
            self.ctx.reject()
            if self.cfg.on_error == OnError.dlq and self.ctx.dlq is not None:
                self.ctx.dlq.put(
                    step=self.ctx.step_id,
                    oxi=self.ctx.oxi_name,
                    reason=reason,
                    raw=text,
                    file=source,
                    line=line,
                    column=column,
                )

    def _cfg_for(self, path: str, origin: dict[str, tuple[str, int]] | None) -> ReadCsvConfig:
        # a cut-off tail is a plain UTF-8 file
        return self.cfg.model_copy(update={"encoding": "utf-8", "compression": "none"}) if origin else self.cfg


def _read_tail(
    file: str,
    line: int,
    cfg: ReadCsvConfig,
    ctx: StepContext,
    dialect: Dialect,
    rejects: _Rejects,
    schema: pa.Schema,
) -> Iterator[pa.RecordBatch]:
    """The records after ``line`` of ``file`` (with its header line in front), read with the dialect."""
    import shutil
    import tempfile

    scratch = Path(tempfile.mkdtemp(prefix="oxiflow-csv-"))
    try:
        tail = scratch / "tail.csv"
        header_line = dialect.skip + 1  # the lines skipped (configured or sniffed), then the header
        with open_text(file, cfg) as src, tail.open("w", encoding="utf-8", newline="") as out:
            for number, text in enumerate(src, start=1):
                if (dialect.header and number == header_line) or number > line:
                    out.write(text)
        opts = [(k, v) for k, v in dialect.scan_options(cfg) if k not in ("skip", "encoding", "compression")]
        opts += [("ignore_errors", True), ("store_rejects", True)]
        query = f"SELECT * FROM read_csv({literal(str(tail))}, {options(opts)})"
        if cfg.filename:
            query = f"SELECT * REPLACE ({literal(file)} AS filename) FROM ({query})"
        offset = line - (1 if dialect.header else 0)
        data = stream_query(query, ctx, [file], after=lambda con: rejects.collect(con, {str(tail): (file, offset)}))
        for batch in data:
            yield _conform(batch, schema)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """A tail's batch in the main scan's schema (by name; a column it lacks is null)."""
    import pyarrow as pa

    if batch.schema.equals(schema):
        return batch
    cols = [
        batch.column(f.name).cast(f.type) if f.name in batch.schema.names else pa.nulls(batch.num_rows, f.type)
        for f in schema
    ]
    return pa.record_batch(cols, schema=schema)


def refine_error(err: DataError, cfg: ReadCsvConfig, dialect: Dialect | None, files: list[str]) -> DataError:
    """DuckDB numbers CSV records: name the file line instead, and the column where it can be told."""
    record = err.context.get("record_number")
    file = err.context.get("file")
    if record is None or file is None:
        return err
    quote = dialect.quote if dialect is not None else '"'
    err.context["line"] = file_lines(str(file), cfg, quote, [int(record)]).get(int(record), int(record))
    raw = str(err.context.get("record") or "")
    if err.context.get("column") is None and dialect is not None and raw:
        names = list(dialect.columns)
        if "unterminated" in err.message:
            index = field_index(raw.splitlines()[0] if raw else "", dialect.delimiter, dialect.quote)
            err.context["column"] = names[index] if index < len(names) else index + 1
        elif "fields, found" in err.message:
            err.context["column"] = len(names) + 1  # the first field beyond the header's
    column = err.context.get("column")
    if cfg.columns and column in cfg.columns and err.hint:  # the type is the config's, not a sniffed one
        err.hint = err.hint.split(" (the type was sniffed")[0]
    if dialect is not None and dialect.pinned and dialect.reason:
        err.hint = (err.hint or "") + f"; read with a repaired dialect: {dialect.reason}"
    return err


def _size(path: str) -> int:
    import os

    try:
        return os.path.getsize(path)
    except OSError:
        return 0


class WriteCsvConfig(FileSinkConfig):
    delimiter: str = ","
    """Field separator."""
    header: bool = True
    """Write a header row."""
    quote: str = '"'
    """Quote character."""
    quote_style: Literal["minimal", "all", "non_numeric", "none"] = "minimal"
    """`minimal` quotes values that need it (holding the delimiter, a quote or a line end); `all` quotes
    every value; `non_numeric` every value of a column that is not a number; `none` quotes nothing (a
    value holding the delimiter or a line end then makes the file unreadable)."""
    null_value: str = ""
    """How a null is written (an empty field by default; `NA`, `\\N` ...)."""
    encoding: Literal["utf-8", "utf-8-sig", "utf-16", "latin-1"] = "utf-8"
    """Text encoding of the file (`utf-8-sig`: with a byte order mark, as Excel likes it). DuckDB writes
    UTF-8; other encodings are re-encoded while writing, and a value the encoding cannot hold is an error."""
    compression: Literal["auto", "none", "gzip", "zstd"] = "auto"
    """Compression; `auto` goes by the extension."""


@oxi(
    "write_csv",
    kind="sink",
    config=WriteCsvConfig,
    summary="Write CSV/TSV (optionally gzip/zstd), atomically.",
    example="- name: write_csv\n  config:\n    path: out/orders.csv",
)
class WriteCsv(CopySink):
    config: WriteCsvConfig
    _numeric: list[str] | None = None  # quote_style non_numeric: the columns left unquoted

    def write(self, data: OxiData, ctx: StepContext) -> None:
        self._numeric = [f.name for f in data.schema if _is_numeric(f.type)]
        super().write(data, ctx)

    def pushdown_ready(self) -> bool:
        return self.config.quote_style != "non_numeric"  # it needs the column types of the stream

    def compression(self, target: Path) -> str:
        compression: str = self.config.compression
        if compression == "auto":
            compression = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd"}.get(target.suffix, "none")
        return compression

    def copy_options(self, target: Path) -> str:
        cfg = self.config
        plain = cfg.encoding != "utf-8"  # re-encoded (and compressed) afterwards: DuckDB writes plain UTF-8
        pairs: list[tuple[str, Any]] = [
            ("delimiter", cfg.delimiter),
            ("header", cfg.header),
            ("quote", "" if cfg.quote_style == "none" else cfg.quote),
            ("nullstr", cfg.null_value),
            ("compression", "none" if plain else self.compression(target)),
        ]
        out = "FORMAT csv, " + ", ".join(f"{k} {literal(v)}" for k, v in pairs)
        if cfg.quote_style == "all":
            out += ", FORCE_QUOTE *"
        elif cfg.quote_style == "non_numeric":
            quoted = [n for n in (self._columns or []) if n not in (self._numeric or [])]
            if quoted:
                out += ", FORCE_QUOTE (" + ", ".join(ident(n) for n in quoted) + ")"
        return out

    _columns: list[str] | None = None

    def _copy(self, ctx: StepContext, *, data: OxiData | None = None, query: PushedQuery | None = None) -> int:
        cfg = self.config
        if data is not None:
            self._columns = data.schema.names
        if cfg.encoding == "utf-8":
            return super()._copy(ctx, data=data, query=query)
        target = ctx.output_path(cfg.path)
        with atomic_output(target, ctx, overwrite=cfg.overwrite) as tmp:
            utf8 = tmp.with_name(tmp.name + ".utf8")
            try:
                rows = copy_out(ctx, utf8, self.copy_options(target), data=data, query=query)
                _reencode(utf8, tmp, cfg.encoding, self.compression(target), ctx)
            finally:
                utf8.unlink(missing_ok=True)
        ctx.metadata["rows"] = rows
        return rows


def _is_numeric(typ: pa.DataType) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_decimal(typ))


def _reencode(src: Path, dest: Path, encoding: str, compression: str, ctx: StepContext) -> None:
    """Copy a UTF-8 file to ``dest`` in ``encoding`` (and compressed), streaming, line by line."""
    import codecs
    import gzip

    with src.open("r", encoding="utf-8", newline="") as fh, dest.open("wb") as raw:
        out: Any = raw
        if compression == "gzip":
            out = gzip.GzipFile(fileobj=raw, mode="wb")
        elif compression == "zstd":
            import zstandard

            out = zstandard.ZstdCompressor().stream_writer(raw, closefd=False)
        encoder = codecs.getincrementalencoder(encoding)()
        try:
            for number, line in enumerate(fh, start=1):
                ctx.check_cancelled()
                try:
                    out.write(encoder.encode(line))
                except UnicodeEncodeError as exc:
                    raise DataError(
                        f"cannot write {exc.object[exc.start : exc.end]!r} in {encoding} (line {number} of the output)",
                        step=ctx.step_id,
                        hint="choose an encoding that can hold the text, e.g. utf-8",
                    ) from None
            out.write(encoder.encode("", final=True))
        finally:
            if out is not raw:
                out.close()
