"""write_parquet append / delete_insert / merge on a (Hive-partitioned) dataset folder: hand-checked
contents after two or three loads, read back with DuckDB, on both paths (pushed down and streamed)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oxiflow.config.load import load_pipeline
from oxiflow.data import OxiData
from oxiflow.engine.local import RunResult, run_plan
from oxiflow.errors import ConfigError
from oxiflow.oxi import OxiConfig, Source, StepContext, oxi
from oxiflow.registry import default_registry

_counter = itertools.count()
PUSHDOWN = pytest.mark.parametrize("pushdown", [True, False], ids=["pushdown", "stream"])


class RowsThenFailConfig(OxiConfig):
    rows: int = 10


@oxi("golden_wp_rows_then_fail", kind="source", config=RowsThenFailConfig, summary="test: rows, then a failure")
class RowsThenFail(Source):
    config: RowsThenFailConfig

    def read(self, ctx: StepContext) -> OxiData:
        schema = pa.schema([("day", pa.string()), ("id", pa.int64())])

        def batches() -> Iterator[pa.RecordBatch]:
            yield pa.record_batch(
                [pa.array(["d9"] * self.config.rows), pa.array(range(self.config.rows))], schema=schema
            )
            raise ValueError("source broke half way")

        return OxiData(schema, batches())


default_registry().register(RowsThenFail)


def _load(folder: Path, rows: list[dict[str, Any]], sink: str, pushdown: bool, schema: pa.Schema | None = None):
    n = next(_counter)
    src = folder / f"load{n}.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), src)
    path = folder / f"pipeline{n}.yaml"
    path.write_text(
        f"settings: {{pushdown: {str(pushdown).lower()}}}\n"
        "pipeline:\n"
        f"  - name: read_parquet\n    config: {{path: {src.name}}}\n"
        f"  - name: write_parquet\n    id: sink\n    config: {sink}\n",
        encoding="utf-8",
    )
    result = run_plan(load_pipeline(path))
    assert result.status == "ok", result.error
    assert next(s for s in result.steps if s.step_id == "sink").pushdown is pushdown
    return result


def _read(dataset: Path, columns: str, order: str) -> list[tuple]:
    return duckdb.sql(
        f"select {columns} from read_parquet('{dataset}/**/*.parquet', hive_partitioning = true, "
        f"union_by_name = true, hive_types_autocast = false) order by {order}"
    ).fetchall()


def _files(dataset: Path) -> list[str]:
    return sorted(str(p.relative_to(dataset)) for p in dataset.rglob("*") if p.is_file())


def _no_temp_left(folder: Path) -> None:
    assert [p.name for p in folder.iterdir() if ".oxitmp-" in p.name] == []


DAYS = pa.schema([("day", pa.string()), ("id", pa.int64())])


# -- append --------------------------------------------------------------------------------------
@PUSHDOWN
def test_append_adds_one_file_per_partition_per_load(tmp_path: Path, pushdown: bool) -> None:
    ds = tmp_path / "ds"
    sink = "{path: ds, write_disposition: append, partition_by: [day]}"
    r1 = _load(tmp_path, [{"day": "d1", "id": 1}, {"day": "d2", "id": 2}], sink, pushdown, DAYS)
    r2 = _load(tmp_path, [{"day": "d1", "id": 3}], sink, pushdown, DAYS)
    assert _read(ds, "day, id", "id") == [("d1", 1), ("d2", 2), ("d1", 3)]
    assert _files(ds) == sorted(
        [
            f"day=d1/part-{r1.run_id}-0.parquet",
            f"day=d1/part-{r2.run_id}-0.parquet",
            f"day=d2/part-{r1.run_id}-0.parquet",
        ]
    )
    assert r2.metadata["sink"]["rows"] == 1 and r2.metadata["sink"]["load_id"] == r2.run_id
    _no_temp_left(tmp_path)


def test_append_without_partitions_and_a_failed_load_adds_nothing(tmp_path: Path, write_pipeline) -> None:
    ds = tmp_path / "ds"
    r1 = _load(tmp_path, [{"day": "d1", "id": 1}], "{path: ds, write_disposition: append}", False, DAYS)
    assert _files(ds) == [f"part-{r1.run_id}.parquet"]
    path = write_pipeline(
        "pipeline:\n  - name: golden_wp_rows_then_fail\n"
        "  - name: write_parquet\n    config: {path: ds, write_disposition: append, partition_by: [day]}\n"
    )
    r = run_plan(load_pipeline(path))
    assert r.status == "failed" and "source broke half way" in str(r.error)
    assert _files(ds) == [f"part-{r1.run_id}.parquet"]  # no visible partial file
    _no_temp_left(tmp_path)


# -- delete_insert -------------------------------------------------------------------------------
@PUSHDOWN
def test_delete_insert_replaces_exactly_the_loaded_partitions(tmp_path: Path, pushdown: bool) -> None:
    ds = tmp_path / "ds"
    sink = "{path: ds, write_disposition: delete_insert, partition_by: [day]}"
    r1 = _load(tmp_path, [{"day": "d1", "id": i} for i in (1, 2, 3)] + [{"day": "d2", "id": 4}], sink, pushdown, DAYS)
    backfill = [{"day": "d1", "id": 1}, {"day": "d1", "id": 5}, {"day": None, "id": 7}]
    expected = [("d1", 1), ("d1", 5), ("d2", 4), (None, 7)]
    b1 = _load(tmp_path, backfill, sink, pushdown, DAYS)
    assert _read(ds, "day, id", "day nulls last, id") == expected
    b2 = _load(tmp_path, backfill, sink, pushdown, DAYS)  # the same backfill again: the same dataset
    assert _read(ds, "day, id", "day nulls last, id") == expected
    assert b1.run_id != b2.run_id
    assert _files(ds) == [
        f"day=__HIVE_DEFAULT_PARTITION__/part-{b2.run_id}-0.parquet",
        f"day=d1/part-{b2.run_id}-0.parquet",
        f"day=d2/part-{r1.run_id}-0.parquet",  # absent from the backfill: untouched
    ]
    _no_temp_left(tmp_path)
    _no_temp_left(ds)


# -- merge ---------------------------------------------------------------------------------------
ORDERS = pa.schema(
    [("region", pa.string()), ("id", pa.int64()), ("v", pa.string()), ("ts", pa.int64()), ("gone", pa.bool_())]
)


@PUSHDOWN
@pytest.mark.parametrize("partitioned", [True, False], ids=["partitioned", "flat"])
def test_merge_rewrites_affected_partitions(tmp_path: Path, pushdown: bool, partitioned: bool) -> None:
    ds = tmp_path / "ds"
    parts = ", partition_by: [region]" if partitioned else ""
    sink = (
        f"{{path: ds, write_disposition: merge, primary_key: [region, id]{parts}, "
        "merge: {dedup_sort: {column: ts, order: desc}, hard_delete: gone}}"
    )
    r1 = _load(
        tmp_path,
        [
            {"region": "eu", "id": 1, "v": "a", "ts": 1},
            {"region": "eu", "id": 2, "v": None, "ts": 1},
            {"region": "us", "id": 1, "v": "u", "ts": 1},
        ],
        sink,
        pushdown,
        ORDERS,
    )
    _load(
        tmp_path,
        [
            {"region": "eu", "id": 2, "v": "b", "ts": 3},  # NULL -> value, and the highest ts wins
            {"region": "eu", "id": 2, "v": "stale", "ts": 2},
            {"region": "eu", "id": 1, "v": "a", "ts": 1, "gone": True},  # hard delete
            {"region": "eu", "id": 3, "v": "c", "ts": 1},
        ],
        sink,
        pushdown,
        ORDERS,
    )
    # a later load with a new column: schema growth
    grown = pa.schema([*ORDERS, pa.field("note", pa.string())])
    _load(tmp_path, [{"region": "eu", "id": 3, "v": "c2", "ts": 5, "note": "n"}], sink, pushdown, grown)
    assert _read(ds, "region, id, v, ts, note", "region, id") == [
        ("eu", 2, "b", 3, None),
        ("eu", 3, "c2", 5, "n"),
        ("us", 1, "u", 1, None),
    ]
    if partitioned:
        # `us` was in no later load: its file is the first load's
        assert [f for f in _files(ds) if f.startswith("region=us")] == [f"region=us/part-{r1.run_id}-0.parquet"]
    else:
        assert len(_files(ds)) == 1
    _no_temp_left(tmp_path)


def test_merge_deleting_every_row_of_a_partition_removes_it(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    sink = "{path: ds, write_disposition: merge, primary_key: [id], partition_by: [region], merge: {hard_delete: gone}}"
    _load(tmp_path, [{"region": "eu", "id": 1, "v": "a"}, {"region": "us", "id": 2, "v": "b"}], sink, True, ORDERS)
    _load(tmp_path, [{"region": "eu", "id": 1, "gone": True}], sink, True, ORDERS)
    assert _read(ds, "region, id", "id") == [("us", 2)]
    assert not (ds / "region=eu").exists()


# -- errors --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("write_disposition: scd2, primary_key: [id]", "scd2 is not available for Parquet datasets"),
        ("write_disposition: merge", "write_disposition merge needs primary_key"),
        ("write_disposition: delete_insert", "write_disposition delete_insert needs partition_by"),
        ("write_disposition: append, merge: {hard_delete: x}", "`merge` options apply to write_disposition merge"),
    ],
)
def test_config_errors_at_validate_time(write_pipeline, config: str, message: str) -> None:
    path = write_pipeline(
        "pipeline:\n  - name: read_parquet\n    config: {path: x.parquet}\n"
        f"  - name: write_parquet\n    config: {{path: ds, {config}}}\n"
    )
    with pytest.raises(ConfigError) as exc:
        load_pipeline(path)
    assert message in str(exc.value)


def test_a_file_in_place_of_the_dataset_is_an_error(tmp_path: Path, write_pipeline) -> None:
    pq.write_table(pa.table({"id": [1]}), tmp_path / "in.parquet")
    pq.write_table(pa.table({"id": [0]}), tmp_path / "out.parquet")
    path = write_pipeline(
        "pipeline:\n  - name: read_parquet\n    config: {path: in.parquet}\n"
        "  - name: write_parquet\n    config: {path: out.parquet, write_disposition: append}\n"
    )
    r: RunResult = run_plan(load_pipeline(path))
    assert r.status == "failed"
    assert "is a file; write_disposition append adds to a dataset folder" in str(r.error)
    assert pq.read_table(tmp_path / "out.parquet").to_pylist() == [{"id": 0}]


# -- property: a partitioned merge equals a dict by key -------------------------------------------
LOAD = st.lists(
    st.tuples(
        st.sampled_from(["eu", "us", "jp"]),
        st.integers(0, 5),
        st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),
        st.booleans(),
    ),
    max_size=10,
)


@settings(max_examples=20, deadline=None)
@given(loads=st.lists(LOAD, min_size=1, max_size=3), pushdown=st.booleans())
def test_merge_matches_a_dict_oracle(tmp_path_factory: pytest.TempPathFactory, loads, pushdown: bool) -> None:
    folder = tmp_path_factory.mktemp("prop")
    schema = pa.schema([("region", pa.string()), ("id", pa.int64()), ("v", pa.int64()), ("gone", pa.bool_())])
    sink = (
        "{path: ds, write_disposition: merge, primary_key: [region, id], partition_by: [region], "
        "merge: {hard_delete: gone}}"
    )
    oracle: dict[tuple[str, int], int | None] = {}
    for load in loads:
        _load(folder, [{"region": r, "id": k, "v": v, "gone": g} for r, k, v, g in load], sink, pushdown, schema)
        for (r, k), (v, g) in {(r, k): (v, g) for r, k, v, g in load}.items():  # the last row per key wins
            if g:
                oracle.pop((r, k), None)
            else:
                oracle[(r, k)] = v
    ds = folder / "ds"
    got = _read(ds, "region, id, v", "region, id") if list(ds.rglob("*.parquet")) else []
    assert got == sorted((r, k, v) for (r, k), v in oracle.items())
