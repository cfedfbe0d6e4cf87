"""read_parquet / write_parquet through DuckDB (parallel, streaming, Hive partitioning)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from oxiflow.data import OxiData
from oxiflow.engine.duck import connect, ident, literal
from oxiflow.errors import PathEscapeError
from oxiflow.oxi import Sink, Source, StepContext, check_inside, oxi
from oxiflow.oxis.files.common import FileSinkConfig, FileSourceConfig, atomic_output, expand_paths
from oxiflow.oxis.files.duckscan import stream_query


class ReadParquetConfig(FileSourceConfig):
    hive_partitioning: bool = True
    """Read `key=value` folder names as columns."""
    union_by_name: bool = True
    """With several files, match columns by name."""
    filename: bool = False
    """Add a `filename` column with the source file of each row."""


@oxi(
    "read_parquet",
    kind="source",
    config=ReadParquetConfig,
    summary="Read Parquet files, globs and Hive-partitioned folders.",
    example="- name: read_parquet\n  config:\n    path: warehouse/orders/",
)
class ReadParquet(Source):
    config: ReadParquetConfig

    def read(self, ctx: StepContext) -> OxiData:
        cfg = self.config
        files = [str(p) for p in expand_paths(cfg.path, ctx, (".parquet", ".parq", ".pq"))]
        ctx.metadata.update(path=files[0] if len(files) == 1 else files, files=len(files))
        query = (
            f"SELECT * FROM read_parquet({literal(files)}, hive_partitioning = {literal(cfg.hive_partitioning)}, "
            f"union_by_name = {literal(cfg.union_by_name)}, filename = {literal(cfg.filename)})"
        )
        return stream_query(query, ctx, files)


class WriteParquetConfig(FileSinkConfig):
    compression: Literal["zstd", "snappy", "gzip", "lz4", "brotli", "none"] = "zstd"
    """Column compression codec."""
    compression_level: int | None = None
    """Codec level (zstd: 1-22)."""
    row_group_size: int = Field(122_880, gt=0)
    """Rows per row group (DuckDB works in vectors of 2,048 rows: smaller sizes round up to that)."""
    partition_by: list[str] | None = None
    """Write a Hive-style folder tree (`col=value/...`) by these columns; `path` is then a folder."""


@oxi(
    "write_parquet",
    kind="sink",
    config=WriteParquetConfig,
    summary="Write Parquet (zstd by default), optionally Hive-partitioned, atomically.",
    example="- name: write_parquet\n  config:\n    path: out/orders\n    partition_by: [order_date]",
)
class WriteParquet(Sink):
    config: WriteParquetConfig

    def write(self, data: OxiData, ctx: StepContext) -> None:
        cfg = self.config
        target = ctx.output_path(cfg.path)
        codec = "uncompressed" if cfg.compression == "none" else cfg.compression
        opts = [f"FORMAT parquet, COMPRESSION {codec}, ROW_GROUP_SIZE {cfg.row_group_size}"]
        if cfg.compression_level is not None:
            opts.append(f"COMPRESSION_LEVEL {cfg.compression_level}")
        if cfg.partition_by:
            missing = [c for c in cfg.partition_by if c not in data.schema.names]
            if missing:
                from oxiflow.errors import DataError

                raise DataError(f"partition_by names unknown column(s) {missing}; the data has {data.schema.names}")
            opts.append("PARTITION_BY (" + ", ".join(ident(c) for c in cfg.partition_by) + ")")
        with atomic_output(target, ctx, overwrite=cfg.overwrite) as tmp:
            con = connect(ctx, stream="write")
            try:
                con.register("input_stream", data.to_reader())
                con.execute(f"COPY input_stream TO {literal(str(tmp))} ({', '.join(opts)})")
            finally:
                con.close()
            if cfg.partition_by and tmp.is_dir():
                _check_partition_tree(tmp)


def _check_partition_tree(root: object) -> None:
    """Partition values come from data: make sure none of them wrote outside the folder."""
    from pathlib import Path

    base = Path(str(root))
    for p in base.rglob("*"):
        try:
            check_inside(base, p)
        except PathEscapeError:
            raise PathEscapeError(f"a partition value would write outside {base}: {p}") from None
