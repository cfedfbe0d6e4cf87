"""read_csv / write_csv: delimited text through DuckDB's parallel CSV reader and writer."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from oxiflow.data import OxiData
from oxiflow.engine.duck import literal, options
from oxiflow.oxi import ScanSQL, Source, StepContext, oxi
from oxiflow.oxis.files.common import FileSinkConfig, FileSourceConfig, OnError, expand_paths
from oxiflow.oxis.files.duckcopy import CopySink
from oxiflow.oxis.files.duckscan import stream_query, translate_scan_error


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

    def read(self, ctx: StepContext) -> OxiData:
        return scan_csv(self.config, ctx)

    def pushdown_ready(self) -> bool:
        return self.config.on_error == OnError.fail

    def scan_sql(self, ctx: StepContext) -> ScanSQL:
        files, query = _csv_query(self.config, ctx)
        return ScanSQL(query, files, translate=lambda exc: translate_scan_error(exc, files))


def _csv_query(cfg: ReadCsvConfig, ctx: StepContext) -> tuple[list[str], str]:
    """The files and the DuckDB scan of them; reports path, files and bytes read."""
    files = [str(p) for p in expand_paths(cfg.path, ctx, (".csv", ".tsv", ".txt"))]
    opts = csv_scan_options(cfg)
    # matching columns by name only matters across files, and costs a pass over the header of
    # each (about 40 ms at start-up); DuckDB also cannot keep a rejects table with it on
    if len(files) == 1 or cfg.on_error != OnError.fail:
        opts = [(k, False if k == "union_by_name" else v) for k, v in opts]
    if cfg.on_error != OnError.fail:
        opts += [("ignore_errors", True), ("store_rejects", True)]
    ctx.metadata.update(path=files[0] if len(files) == 1 else files, files=len(files))
    ctx.bytes_read = sum(_size(f) for f in files)
    return files, f"SELECT * FROM read_csv({literal(files)}, {options(opts)})"


def scan_csv(cfg: ReadCsvConfig, ctx: StepContext) -> OxiData:
    files, query = _csv_query(cfg, ctx)
    lenient = cfg.on_error != OnError.fail

    def collect_rejects(con: Any) -> None:
        if not lenient:
            return
        rows = con.sql(
            "SELECT s.file_path, e.line, e.column_name, e.error_type, e.csv_line, e.error_message "
            "FROM reject_errors e JOIN reject_scans s USING (scan_id, file_id) ORDER BY s.file_path, e.line"
        ).fetchall()
        seen_lines: set[tuple[str, int]] = set()
        for file_path, line, column, _etype, raw, message in rows:
            key = (file_path, line)
            if key in seen_lines:  # one record may break several rules; count it once
                continue
            seen_lines.add(key)
            ctx.reject()
            if cfg.on_error == OnError.dlq and ctx.dlq is not None:
                ctx.dlq.put(
                    step=ctx.step_id,
                    oxi=ctx.oxi_name,
                    reason=str(message).strip().splitlines()[0],
                    raw=raw,
                    file=file_path,
                    line=int(line) if line is not None else None,
                    column=column,
                )

    return stream_query(query, ctx, files, after=collect_rejects)


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

    def copy_options(self, target: Path) -> str:
        cfg = self.config
        compression: str = cfg.compression
        if compression == "auto":
            compression = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd"}.get(target.suffix, "none")
        pairs = [
            ("delimiter", cfg.delimiter),
            ("header", cfg.header),
            ("quote", cfg.quote),
            ("compression", compression),
        ]
        return "FORMAT csv, " + ", ".join(f"{k} {literal(v)}" for k, v in pairs)
