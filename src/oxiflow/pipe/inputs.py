"""Open a file named on the command line with the source oxi its format calls for.

Verbs, ``oxi profile`` and ``oxi diff`` all take the same inputs (``orders.csv``,
``data/*.parquet``, ``warehouse.duckdb::orders``, ``-`` for stdin); this module picks the reader by
extension (or ``--input-format``) and runs it outside a pipeline, so the CLI reads exactly what a
pipeline step with the same config would read.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oxiflow.errors import DataError

if TYPE_CHECKING:
    from oxiflow.data import OxiData
    from oxiflow.oxi import ScanSQL, Source, StepContext

# extension (after dropping .gz/.zst) -> format name; format name -> source oxi
EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".tab": "csv",
    ".txt": "csv",
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".parq": "parquet",
    ".pq": "parquet",
    ".arrow": "arrow",
    ".arrows": "arrow",
    ".ipc": "arrow",
    ".feather": "arrow",
    ".avro": "avro",
    ".duckdb": "duckdb",
    ".ddb": "duckdb",
}
READERS = {
    "csv": "read_csv",
    "json": "read_json",
    "jsonl": "read_json",
    "parquet": "read_parquet",
    "arrow": "read_arrow",
    "avro": "read_avro",
    "duckdb": "read_duckdb",
}
WRITERS = {
    "csv": "write_csv",
    "json": "write_json",
    "jsonl": "write_json",
    "parquet": "write_parquet",
    "arrow": "write_arrow",
    "avro": "write_avro",
}
_COMPRESSION = (".gz", ".gzip", ".zst", ".zstd")


def format_of(path: str, explicit: str | None = None) -> str:
    """The format of ``path``: ``explicit`` when given, else from its extension."""
    if explicit:
        fmt = explicit.lower()
        if fmt not in READERS:
            raise DataError(f"unknown format {explicit!r}", hint=f"use one of: {', '.join(sorted(READERS))}")
        return fmt
    name = Path(path.rstrip("/")).name.lower()
    for comp in _COMPRESSION:
        if name.endswith(comp):
            name = name[: -len(comp)]
    suffix = Path(name).suffix
    if suffix in EXTENSIONS:
        return EXTENSIONS[suffix]
    folder = Path(path)
    if folder.is_dir():  # a dataset folder: the format of its first data file
        for child in sorted(folder.rglob("*")):
            if child.is_file() and not child.name.startswith((".", "_")):
                return format_of(str(child))
    raise DataError(
        f"cannot tell the format of {path!r} from its name",
        file=path,
        hint=f"name it with --input-format / -F (diff: --format-a, --format-b): {', '.join(sorted(READERS))}",
    )


def looks_like_input(text: str) -> bool:
    """Whether a command-line word names an input rather than, say, column names: ``-``, an
    existing path, a glob, ``db.duckdb::table``, or a name with a data format's extension."""
    import glob

    if text == "-" or "::" in text or glob.has_magic(text) or Path(text).exists():
        return True
    try:
        format_of(text)
    except DataError:
        return False
    return True


def source_step(path: str, fmt: str | None = None, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """A pipeline step (``{"name": ..., "config": ...}``) that reads ``path``."""
    if path == "-":  # standard input: read_pipe tells its format by the first bytes
        return {"name": "read_pipe", "config": {**({"format": fmt} if fmt else {}), **(options or {})}}
    # `warehouse.duckdb::schema.table` (or `::table`): a table of a DuckDB database file
    if "::" in path:
        database, _, table = path.rpartition("::")
        if (fmt or EXTENSIONS.get(Path(database).suffix.lower())) == "duckdb":
            return {"name": "read_duckdb", "config": {"database": database, "table": table, **(options or {})}}
    kind = format_of(path, fmt)
    if kind == "duckdb":
        if not (options or {}).get("query"):
            raise DataError(f"{path} is a DuckDB database: name the table to read", file=path, hint=f"{path}::table")
        return {"name": "read_duckdb", "config": {"database": path, **(options or {})}}
    config: dict[str, Any] = {"path": path, **(options or {})}
    return {"name": READERS[kind], "config": config}


def sink_step(path: str, fmt: str | None = None, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """A pipeline step that writes ``path`` in the format its extension (or ``fmt``) names."""
    kind = format_of(path, fmt)
    if kind not in WRITERS:
        raise DataError(f"cannot write format {kind!r}", file=path)
    return {"name": WRITERS[kind], "config": {"path": path, **(options or {})}}


@dataclass
class OpenedInput:
    """A source oxi ready to run outside a pipeline, with the context it runs in."""

    path: str
    oxi_name: str
    source: Source
    ctx: StepContext
    metadata: dict[str, Any] = field(default_factory=dict)

    def scan(self) -> ScanSQL | None:
        """The input as one DuckDB query when the reader offers one (fast paths), else None."""
        return self.source.scan_sql(self.ctx) if self.source.pushdown_ready() else None

    def data(self) -> OxiData:
        """The input as an Arrow stream (every format)."""
        return self.source.read(self.ctx)


def open_input(
    path: str,
    fmt: str | None = None,
    options: dict[str, Any] | None = None,
    *,
    base_dir: Path | None = None,
    memory_limit_mb: int | None = None,
) -> OpenedInput:
    """Build the reader for ``path`` (config validated like a pipeline step's)."""
    return open_step(source_step(path, fmt, options), base_dir=base_dir, memory_limit_mb=memory_limit_mb, path=path)


def open_step(
    step: dict[str, Any],
    *,
    base_dir: Path | None = None,
    memory_limit_mb: int | None = None,
    path: str | None = None,
) -> OpenedInput:
    """Build the source oxi of a step dict (``source_step``'s, or a verb's)."""
    from pydantic import ValidationError

    from oxiflow.engine.local import new_run_id
    from oxiflow.oxi import Source, StepContext
    from oxiflow.registry import default_registry

    config_dict = step["config"]
    path = path or str(config_dict.get("path") or config_dict.get("database") or step["name"])
    spec = default_registry().get(step["name"])
    try:
        config = spec.config.model_validate(config_dict)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise DataError(f"bad options for {step['name']}: {problems}", file=path) from None
    source = spec.factory(config)
    assert isinstance(source, Source)
    ctx = StepContext(
        step_id=step["name"],
        oxi_name=step["name"],
        run_id=new_run_id(),
        base_dir=base_dir or Path.cwd(),
        memory_limit_mb=memory_limit_mb,
    )
    return OpenedInput(path, step["name"], source, ctx)


def spool_stream(con: Any, data: OxiData, table: str) -> None:
    """Copy an Arrow stream into the DuckDB table ``table`` (an SQL name, quoted by the caller) in
    one pass; DuckDB spills to its file, so memory stays bounded. A reader error raised inside the
    stream reaches DuckDB as its own error without file and line: the reader's error is re-raised."""
    import duckdb
    import pyarrow as pa

    failure: list[BaseException] = []

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            yield from data
        except BaseException as exc:
            failure.append(exc)
            raise

    con.register("oxiflow_spool_stream", pa.RecordBatchReader.from_batches(data.schema, batches()))
    try:
        con.execute(f"CREATE TABLE {table} AS SELECT * FROM oxiflow_spool_stream")
    except duckdb.Error:
        if failure:
            raise failure[0] from None
        raise
    finally:
        con.unregister("oxiflow_spool_stream")
