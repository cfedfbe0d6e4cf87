"""read_json / write_json: JSON Lines and JSON arrays through DuckDB, nested data as Arrow structs/lists."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from oxiflow.data import OxiData
from oxiflow.engine.duck import literal, options
from oxiflow.errors import DataError
from oxiflow.oxi import ScanSQL, Source, StepContext, oxi
from oxiflow.oxis.files import jsonlines
from oxiflow.oxis.files.common import FileSinkConfig, FileSourceConfig, OnError, expand_paths
from oxiflow.oxis.files.duckcopy import CopySink
from oxiflow.oxis.files.duckscan import stream_query, translate_scan_error

Compression = Literal["auto", "none", "gzip", "zstd"]


class ReadJsonConfig(FileSourceConfig):
    format: Literal["auto", "newline_delimited", "array"] = "auto"
    """`newline_delimited` (JSON Lines, one object per line), `array` (one JSON array of objects), or `auto`."""
    compression: Compression = "auto"
    """Compression; `auto` goes by the extension (`.gz`, `.zst`)."""
    columns: dict[str, str] | None = None
    """Column name -> DuckDB type, to fix types instead of inferring them."""
    sample_size: int = 20_480
    """Records sampled to infer the schema (-1: all of them)."""
    union_by_name: bool = True
    """With several files, match columns by name."""
    maximum_object_size: int = Field(16 * 2**20, gt=0)
    """Largest single JSON record in bytes."""


@oxi(
    "read_json",
    kind="source",
    config=ReadJsonConfig,
    summary="Read JSON Lines or JSON arrays (globs, gzip/zstd); nested objects become Arrow structs and lists.",
    example="- name: read_json\n  config:\n    path: events/*.jsonl.gz\n    on_error: dlq",
)
class ReadJson(Source):
    config: ReadJsonConfig
    metadata_keys: ClassVar[tuple[str, ...]] = ("path", "files", "files_new")

    def read(self, ctx: StepContext) -> OxiData:
        cfg = self.config
        files, layouts = self._files(ctx)
        lines_files = [f for f in files if layouts[f] == "lines"]
        lenient = cfg.on_error != OnError.fail and ctx.limit_rows != 0
        if not lenient or not lines_files:
            return _scan(files, cfg, ctx, layouts)
        return _scan_filtered(files, cfg, ctx, layouts)

    def pushdown_ready(self) -> bool:
        return self.config.on_error == OnError.fail

    def scan_sql(self, ctx: StepContext) -> ScanSQL:
        cfg = self.config
        files, layouts = self._files(ctx)

        def translate(exc: BaseException) -> BaseException:
            err = translate_scan_error(exc, files)
            return _locate(err, files, cfg, layouts) if isinstance(err, DataError) else err

        return ScanSQL(_query(files, cfg), files, translate=translate)

    def _files(self, ctx: StepContext) -> tuple[list[str], dict[str, Literal["lines", "document"]]]:
        """The files, how each is laid out (array documents are checked whole first); reports them."""
        cfg = self.config
        files = [str(p) for p in expand_paths(cfg.path, ctx, (".json", ".jsonl", ".ndjson"))]
        ctx.metadata.update(path=files[0] if len(files) == 1 else files, files=len(files))
        ctx.bytes_read = sum(Path(f).stat().st_size for f in files)
        layouts = {f: _layout(f, cfg) for f in files}
        for f, layout in layouts.items():
            if layout == "document":
                jsonlines.check_document(f, cfg.compression, cfg.on_error)
        return files, layouts


def _layout(path: str, cfg: ReadJsonConfig) -> Literal["lines", "document"]:
    """How to validate a file: line by line (NDJSON) or as one document."""
    if cfg.format == "newline_delimited":
        return "lines"
    if cfg.format == "array":
        return "document"
    first = jsonlines.first_char(path, cfg.compression)
    if first == "":
        return "lines"  # an empty file: zero records
    if first == "{" and not jsonlines.is_single_line(path, cfg.compression):
        return "lines"  # several lines starting with an object: JSON Lines (or one pretty-printed object)
    return "document"


def _scan_options(cfg: ReadJsonConfig, fmt: str, compression: str | None) -> str:
    return options(
        [
            ("format", fmt),
            ("compression", compression),
            ("columns", cfg.columns),
            ("sample_size", cfg.sample_size),
            ("union_by_name", cfg.union_by_name),
            ("maximum_object_size", cfg.maximum_object_size),
        ]
    )


def _duck_compression(cfg: ReadJsonConfig) -> str | None:
    return None if cfg.compression == "auto" else cfg.compression


def _query(files: list[str], cfg: ReadJsonConfig) -> str:
    # `auto` stays auto for DuckDB: a multi-line file starting with `{` may be one pretty-printed object
    return f"SELECT * FROM read_json({literal(files)}, {_scan_options(cfg, cfg.format, _duck_compression(cfg))})"


def _scan(files: list[str], cfg: ReadJsonConfig, ctx: StepContext, layouts: Mapping[str, str]) -> OxiData:
    return stream_query(_query(files, cfg), ctx, files, on_error=lambda exc: _locate(exc, files, cfg, layouts))


def _locate(exc: DataError, files: list[str], cfg: ReadJsonConfig, layouts: Mapping[str, str]) -> DataError:
    """DuckDB names the file but not always the line: find the first bad NDJSON line ourselves."""
    file = exc.context.get("file")
    candidates = [str(file)] if file in layouts else files
    for f in candidates:
        if layouts.get(f) != "lines":
            continue
        found = jsonlines.first_bad_line(f, cfg.compression)
        if found is not None:
            line, reason, _raw, column = found
            return DataError(
                jsonlines.at(reason, line, column),
                file=f,
                line=line,
                column=column,
                hint="fix the record, or set on_error: skip or on_error: dlq to set bad records aside",
            )
    return exc


def _scan_filtered(files: list[str], cfg: ReadJsonConfig, ctx: StepContext, layouts: Mapping[str, str]) -> OxiData:
    """skip/dlq for JSON Lines: copy the valid lines to a scratch file (streaming), let DuckDB read that.

    DuckDB's ignore_errors turns a broken line into a row of nulls; a strict line pass first gives
    exact rejects with their line numbers and raw text, and the copy keeps memory bounded.
    """
    scratch = Path(tempfile.mkdtemp(prefix="oxiflow-json-"))
    try:
        inputs: list[str] = []
        for i, f in enumerate(files):
            if layouts[f] != "lines":
                inputs.append(f)
                continue
            out = scratch / f"{i}.jsonl"

            def on_bad(line: int, reason: str, raw: str, f: str = f) -> None:
                ctx.reject()
                if cfg.on_error == OnError.dlq and ctx.dlq is not None:
                    ctx.dlq.put(step=ctx.step_id, oxi=ctx.oxi_name, reason=reason, raw=raw, file=f, line=line)

            jsonlines.filter_lines(f, cfg.compression, out, on_bad)
            inputs.append(str(out))
        fmt = "newline_delimited" if all(layouts[f] == "lines" for f in files) else cfg.format
        # scratch copies are plain text; original documents keep their compression (auto-detected)
        compression = None if any(layouts[f] == "lines" for f in files) else _duck_compression(cfg)
        query = f"SELECT * FROM read_json({literal(inputs)}, {_scan_options(cfg, fmt, compression)})"
        data = stream_query(query, ctx, files, after=lambda _con: shutil.rmtree(scratch, ignore_errors=True))
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return data


class WriteJsonConfig(FileSinkConfig):
    format: Literal["newline_delimited", "array"] = "newline_delimited"
    """`newline_delimited` (JSON Lines) or `array` (one JSON array)."""
    compression: Compression = "auto"
    """Compression; `auto` goes by the extension (`.gz`, `.zst`)."""


@oxi(
    "write_json",
    kind="sink",
    config=WriteJsonConfig,
    summary="Write JSON Lines (default) or a JSON array, optionally gzip/zstd, atomically.",
    example="- name: write_json\n  config:\n    path: out/events.jsonl",
)
class WriteJson(CopySink):
    config: WriteJsonConfig

    def copy_options(self, target: Path) -> str:
        cfg = self.config
        compression = jsonlines.compression_of(str(target), cfg.compression)
        opts: list[tuple[str, Any]] = [("FORMAT", "json"), ("COMPRESSION", compression)]
        if cfg.format == "array":
            opts.append(("ARRAY", True))
        return ", ".join(f"{k} {literal(v)}" for k, v in opts)
