"""read_parquet / write_parquet through DuckDB (parallel, streaming, Hive partitioning)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from oxiflow.data import OxiData
from oxiflow.engine.duck import ident, literal
from oxiflow.errors import PathEscapeError
from oxiflow.oxi import PushedQuery, ScanSQL, Sink, Source, StepContext, check_inside, oxi
from oxiflow.oxis.databases.dispositions import (
    LOAD_ID_COLUMN,
    DispositionConfig,
    MergeOptions,
    Scd2Options,
    check_disposition,
    load_time,
)
from oxiflow.oxis.files.common import FileSinkConfig, FileSourceConfig, atomic_output, expand_paths
from oxiflow.oxis.files.duckcopy import copy_out
from oxiflow.oxis.files.duckscan import stream_query, translate_scan_error

if TYPE_CHECKING:
    from oxiflow.oxis.files.datasets import History


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

    pushdown_counts = True  # the footers hold the row counts
    # columnar: one column reads without the others, and min/max/null counts come from the footers, so
    # a check of the rows before a pushed-down write (validate) takes contract test's shortcuts
    narrow_scans = True
    metadata_stats = True

    def read(self, ctx: StepContext) -> OxiData:
        scan = self.scan_sql(ctx)
        return stream_query(scan.sql, ctx, scan.files)

    def pushdown_ready(self) -> bool:
        return True

    def scan_sql(self, ctx: StepContext) -> ScanSQL:
        cfg = self.config
        files = [str(p) for p in expand_paths(cfg.path, ctx, (".parquet", ".parq", ".pq"))]
        ctx.metadata.update(path=files[0] if len(files) == 1 else files, files=len(files))
        query = (
            f"SELECT * FROM read_parquet({literal(files)}, hive_partitioning = {literal(cfg.hive_partitioning)}, "
            f"union_by_name = {literal(cfg.union_by_name and len(files) > 1)}, filename = {literal(cfg.filename)})"
        )
        count = f"SELECT coalesce(sum(num_rows), 0) FROM parquet_file_metadata({literal(files)})"
        return ScanSQL(query, files, count, lambda exc: translate_scan_error(exc, files))


class WriteParquetConfig(FileSinkConfig):
    compression: Literal["zstd", "snappy", "gzip", "lz4", "brotli", "none"] = "zstd"
    """Column compression codec."""
    compression_level: int | None = None
    """Codec level (zstd: 1-22)."""
    row_group_size: int = Field(122_880, gt=0)
    """Rows per row group (DuckDB works in vectors of 2,048 rows: smaller sizes round up to that)."""
    partition_by: list[str] | None = None
    """Write a Hive-style folder tree (`col=value/...`) by these columns; `path` is then a folder."""
    write_disposition: Literal["replace", "append", "merge", "delete_insert", "scd2"] = "replace"
    """`replace` rewrites the output; on a dataset folder `append` adds files, `delete_insert` replaces the
    `partition_by` partitions present in the load, `merge` upserts on `primary_key`, `scd2` keeps a history of
    versions per `primary_key` (docs/dispositions.md)."""
    primary_key: list[str] | None = None
    """Key column(s) for `merge` and `scd2` (required there)."""
    merge: MergeOptions | None = None
    """`merge` options: `dedup_sort`, `hard_delete`."""
    scd2: Scd2Options | None = None
    """`scd2` options: `full_snapshot`, `load_time`, `dedup_sort`, `hard_delete`."""
    load_id_column: str | None = LOAD_ID_COLUMN
    """Dataset dispositions (`append`, `merge`, `delete_insert`, `scd2`): column holding the id of the load
    that wrote each row (scd2: that opened each version), as in tables; `null`: none. `replace` writes the
    input's columns only."""

    @model_validator(mode="after")
    def _check_disposition(self) -> WriteParquetConfig:
        check_disposition(self.write_disposition, self.primary_key, self.partition_by, self.merge, self.scd2)
        if "load_id_column" in self.model_fields_set and self.write_disposition == "replace":
            # replace is also how a file is exported (`oxi write out.parquet`): its output is exactly its
            # input, with no column oxiflow adds; one load is the whole output, so the column would say nothing
            raise ValueError(
                "load_id_column applies to the dataset dispositions (append, merge, delete_insert, scd2), "
                "not replace: a replaced output holds the input's columns only"
            )
        return self

    def history(self, metadata: dict[str, object]) -> History | None:
        """The scd2 settings of one load (its load time fixed now), None for the other dispositions."""
        from oxiflow.oxis.files.datasets import History

        if self.write_disposition != "scd2":
            return None
        # the tables' rule for the load time (scd2.load_time, else the state store's, else now), read
        # through a config that holds only the scd2 options
        when = load_time(DispositionConfig.model_construct(scd2=self.scd2), metadata)
        return History(self.scd2 or Scd2Options(), when, self.load_id_column)


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
        self._write(ctx, data=data)

    def pushdown_ready(self) -> bool:
        return True

    def load_committed(self, load_id: str, ctx: StepContext) -> bool | None:
        cfg = self.config
        if cfg.write_disposition == "replace":
            return None  # atomic_output's marker answers (LoadProtocol.answers)
        from oxiflow.oxis.files.datasets import dataset_load_committed, swaps_whole

        full_snapshot = (cfg.scd2 or Scd2Options()).full_snapshot
        whole = swaps_whole(cfg.write_disposition, cfg.partition_by, full_snapshot)
        return dataset_load_committed(ctx.output_path(cfg.path), load_id, cfg.write_disposition, whole_swap=whole)

    def write_query(self, query: PushedQuery, ctx: StepContext) -> int:
        return self._write(ctx, query=query)

    def _write(self, ctx: StepContext, *, data: OxiData | None = None, query: PushedQuery | None = None) -> int:
        cfg = self.config
        target = ctx.output_path(cfg.path)
        codec = "uncompressed" if cfg.compression == "none" else cfg.compression
        opts = [f"FORMAT parquet, COMPRESSION {codec}, ROW_GROUP_SIZE {cfg.row_group_size}"]
        if cfg.compression_level is not None:
            opts.append(f"COMPRESSION_LEVEL {cfg.compression_level}")
        if cfg.partition_by:
            opts.append("PARTITION_BY (" + ", ".join(ident(c) for c in cfg.partition_by) + ")")
        if cfg.write_disposition != "replace":
            from oxiflow.oxis.files.datasets import write_dataset

            if cfg.partition_by and data is not None:
                _check_partition_columns(cfg.partition_by, data.schema.names)
            return write_dataset(
                ctx,
                target,
                ", ".join(opts),
                disposition=cfg.write_disposition,
                partition_by=cfg.partition_by,
                primary_key=cfg.primary_key,
                merge=cfg.merge,
                history=cfg.history(ctx.metadata),
                load_id_column=cfg.load_id_column,
                data=data,
                query=query,
            )
        columns: list[str] = []
        with atomic_output(target, ctx, overwrite=cfg.overwrite) as tmp:
            if cfg.partition_by and data is not None:
                _check_partition_columns(cfg.partition_by, data.schema.names)
            rows = copy_out(
                ctx,
                tmp,
                ", ".join(opts),
                data=data,
                query=query,
                columns=columns if cfg.partition_by and data is None else None,
            )
            if cfg.partition_by and data is None:
                _check_partition_columns(cfg.partition_by, columns)
            if cfg.partition_by and tmp.is_dir():
                _check_partition_tree(tmp)
        ctx.metadata.setdefault("rows", rows)
        return rows


def _check_partition_columns(partition_by: list[str], names: list[str]) -> None:
    missing = [c for c in partition_by if c not in names]
    if missing:
        from oxiflow.errors import DataError

        raise DataError(f"partition_by names unknown column(s) {missing}; the data has {names}")


def _check_partition_tree(root: object) -> None:
    """Partition values come from data: make sure none of them wrote outside the folder."""
    from pathlib import Path

    base = Path(str(root))
    for p in base.rglob("*"):
        try:
            check_inside(base, p)
        except PathEscapeError:
            raise PathEscapeError(f"a partition value would write outside {base}: {p}") from None
