"""read_parquet: files, globs, Hive-partitioned folders, union by name, filename (written by pyarrow,
the independent writer; expected rows hand-checked)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from oxiflow.errors import DataError
from oxiflow.oxi import StepContext
from oxiflow.oxis.files.parquet import ReadParquet, ReadParquetConfig


def read(tmp_path: Path, **cfg: object) -> pa.Table:
    ctx = StepContext("r", "read_parquet", "t", base_dir=tmp_path)
    return ReadParquet(ReadParquetConfig(**cfg)).read(ctx).read_all()  # type: ignore[arg-type]


def test_one_file_keeps_types_and_nulls(tmp_path: Path) -> None:
    table = pa.table(
        {
            "id": pa.array([1, 2, 3], pa.int32()),
            "amount": pa.array([1.5, None, -2.25], pa.float64()),
            "tags": pa.array([["a"], [], None], pa.list_(pa.string())),
            "when": pa.array([0, 86_400_000_000, None], pa.timestamp("us")),
        }
    )
    pq.write_table(table, tmp_path / "in.parquet")
    got = read(tmp_path, path="in.parquet")
    assert got.column("id").type == pa.int32() and got.column("when").type == pa.timestamp("us")
    assert got.to_pylist() == table.to_pylist()


def test_a_glob_of_files_with_different_columns_matches_by_name(tmp_path: Path) -> None:
    pq.write_table(pa.table({"id": [1, 2], "a": ["x", "y"]}), tmp_path / "part-1.parquet")
    pq.write_table(pa.table({"b": [True], "id": [3]}), tmp_path / "part-2.parquet")
    got = read(tmp_path, path="part-*.parquet")
    assert sorted(got.to_pylist(), key=lambda r: r["id"]) == [
        {"id": 1, "a": "x", "b": None},
        {"id": 2, "a": "y", "b": None},
        {"id": 3, "a": None, "b": True},
    ]


def test_a_hive_partitioned_folder_gives_the_partition_columns(tmp_path: Path) -> None:
    for country, ids in (("DE", [1, 2]), ("FR", [3])):
        folder = tmp_path / "ds" / f"country={country}"
        folder.mkdir(parents=True)
        pq.write_table(pa.table({"id": ids}), folder / "data.parquet")
    got = read(tmp_path, path="ds/")
    assert sorted((r["id"], r["country"]) for r in got.to_pylist()) == [(1, "DE"), (2, "DE"), (3, "FR")]
    plain = read(tmp_path, path="ds/", hive_partitioning=False)
    assert plain.column_names == ["id"]


def test_filename_column(tmp_path: Path) -> None:
    pq.write_table(pa.table({"id": [1]}), tmp_path / "a.parquet")
    got = read(tmp_path, path="a.parquet", filename=True)
    assert got.to_pylist() == [{"id": 1, "filename": str(tmp_path / "a.parquet")}]


def test_a_missing_file_and_a_file_that_is_no_parquet(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        read(tmp_path, path="nothere.parquet")
    assert "file not found: nothere.parquet" in str(err.value) and str(tmp_path) in (err.value.hint or "")
    (tmp_path / "fake.parquet").write_text("id,name\n1,a\n")
    with pytest.raises(DataError) as err:
        read(tmp_path, path="fake.parquet")
    assert err.value.context["file"].endswith("fake.parquet")
