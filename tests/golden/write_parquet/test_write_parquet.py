"""write_parquet: compression, row_group_size, Hive partition_by (oracle: pyarrow.parquet metadata)."""

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from oxiflow.data import OxiData
from oxiflow.errors import DataError
from oxiflow.oxi import StepContext
from oxiflow.oxis.files.parquet import ReadParquet, ReadParquetConfig, WriteParquet, WriteParquetConfig

N = 10_000
TABLE = pa.table({"id": pa.array(range(N), pa.int64()), "k": [f"p{i % 3}" for i in range(N)]})


def ctx(tmp_path: Path) -> StepContext:
    return StepContext("w", "write_parquet", "t", base_dir=tmp_path)


@pytest.mark.parametrize("codec", ["zstd", "snappy", "gzip", "none"])
def test_compression_and_row_groups(tmp_path: Path, codec: str) -> None:
    cfg = WriteParquetConfig(path="x.parquet", compression=codec, row_group_size=2048)
    WriteParquet(cfg).write(OxiData.from_table(TABLE), ctx(tmp_path))
    meta = pq.ParquetFile(tmp_path / "x.parquet").metadata
    assert meta.num_rows == N
    assert meta.num_row_groups >= 5
    assert max(meta.row_group(i).num_rows for i in range(meta.num_row_groups)) <= 2048
    assert meta.row_group(0).column(0).compression == ("UNCOMPRESSED" if codec == "none" else codec.upper())
    assert pq.read_table(tmp_path / "x.parquet").equals(TABLE)


def test_partition_by_round_trip(tmp_path: Path) -> None:
    WriteParquet(WriteParquetConfig(path="ds", partition_by=["k"])).write(OxiData.from_table(TABLE), ctx(tmp_path))
    assert sorted(p.name for p in (tmp_path / "ds").iterdir()) == ["k=p0", "k=p1", "k=p2"]
    got = ReadParquet(ReadParquetConfig(path="ds")).read(ctx(tmp_path)).read_all()
    assert sorted(got.select(["id", "k"]).to_pylist(), key=lambda r: r["id"]) == TABLE.to_pylist()


def test_partition_by_unknown_column(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown column"):
        WriteParquet(WriteParquetConfig(path="ds", partition_by=["nope"])).write(
            OxiData.from_table(TABLE), ctx(tmp_path)
        )
    assert not (tmp_path / "ds").exists()
