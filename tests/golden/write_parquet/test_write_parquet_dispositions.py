"""write_parquet append / delete_insert / merge / scd2 on a (Hive-partitioned) dataset folder: hand-checked
contents after two or three loads, read back with DuckDB, on both paths (pushed down and streamed); scd2
histories are also compared with write_duckdb's for the same loads (the oracle: the tables' statements)."""

from __future__ import annotations

import datetime as dt
import itertools
import os
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
    # every row names the load that wrote it, as in tables (docs/dispositions.md, "The load id")
    assert _read(ds, "id, _oxi_load_id", "id") == [(1, r1.run_id), (2, r1.run_id), (3, r2.run_id)]
    assert _files(ds) == sorted(
        [
            f"day=d1/part-{r1.run_id}-0.parquet",
            f"day=d1/part-{r2.run_id}-0.parquet",
            f"day=d2/part-{r1.run_id}-0.parquet",
        ]
    )
    assert r2.metadata["sink"]["rows"] == 1 and r2.metadata["sink"]["load_id"] == r2.run_id
    _no_temp_left(tmp_path)


@PUSHDOWN
def test_load_id_column_renamed_or_left_out_and_an_input_column_of_that_name_replaced(
    tmp_path: Path, pushdown: bool
) -> None:
    copied = pa.schema([("id", pa.int64()), ("_oxi_load_id", pa.string())])  # a copy of an oxiflow table
    r = _load(tmp_path, [{"id": 1, "_oxi_load_id": "old"}], "{path: ds, write_disposition: append}", pushdown, copied)
    assert _read(tmp_path / "ds", "*", "id") == [(1, r.run_id)]
    _load(tmp_path, [{"id": 1}], "{path: plain, write_disposition: append, load_id_column: null}", pushdown)
    assert duckdb.sql(f"SELECT * FROM '{tmp_path / 'plain'}/*.parquet'").columns == ["id"]
    r = _load(tmp_path, [{"id": 2}], "{path: named, write_disposition: append, load_id_column: batch}", pushdown)
    assert _read(tmp_path / "named", "*", "id") == [(2, r.run_id)]
    # replace writes the input's columns only (it is also how `oxi write` exports a file)
    _load(tmp_path, [{"id": 3}], "{path: whole.parquet}", pushdown)
    assert pq.read_table(tmp_path / "whole.parquet").column_names == ["id"]


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
    # the replaced partitions hold the last backfill's rows; d2 keeps the first load's
    loads = [b2.run_id, b2.run_id, r1.run_id, b2.run_id]
    tagged = [(*row, load) for row, load in zip(expected, loads, strict=True)]
    assert _read(ds, "day, id, _oxi_load_id", "day nulls last, id") == tagged
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
    r2 = _load(
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
    r3 = _load(tmp_path, [{"region": "eu", "id": 3, "v": "c2", "ts": 5, "note": "n"}], sink, pushdown, grown)
    assert _read(ds, "region, id, v, ts, note, _oxi_load_id", "region, id") == [
        ("eu", 2, "b", 3, None, r2.run_id),
        ("eu", 3, "c2", 5, "n", r3.run_id),
        ("us", 1, "u", 1, None, r1.run_id),  # a key no later load touched keeps its load id
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


# -- scd2 ----------------------------------------------------------------------------------------
# Three loads of ORDERS: (1) four keys; (2) eu/1 unchanged, eu/2 twice (dedup: the highest ts wins, NULL ->
# value), us/1 hard-deleted, eu/3 new, us/2 absent; (3) a new column, eu/3 changed, us/1 back, only eu/3 and
# us/1 present.
SCD2_LOADS: list[tuple[list[dict[str, Any]], pa.Schema]] = [
    (
        [
            {"region": "eu", "id": 1, "v": "a", "ts": 1},
            {"region": "eu", "id": 2, "v": None, "ts": 1},
            {"region": "us", "id": 1, "v": "u", "ts": 1},
            {"region": "us", "id": 2, "v": "w", "ts": 1},
        ],
        ORDERS,
    ),
    (
        [
            {"region": "eu", "id": 1, "v": "a", "ts": 1},
            {"region": "eu", "id": 2, "v": "b", "ts": 3},
            {"region": "eu", "id": 2, "v": "stale", "ts": 2},
            {"region": "us", "id": 1, "v": "u", "ts": 1, "gone": True},
            {"region": "eu", "id": 3, "v": "c", "ts": 1},
        ],
        ORDERS,
    ),
    (
        [
            {"region": "eu", "id": 3, "v": "c2", "ts": 5, "note": "n"},
            {"region": "us", "id": 1, "v": "u", "ts": 6},
        ],
        pa.schema([*ORDERS, pa.field("note", pa.string())]),
    ),
]
T1, T2, T3 = (dt.datetime(2024, 3, d) for d in (1, 2, 3))


def _scd2_sinks(load: int, partitioned: bool, full_snapshot: bool, load_time: bool = True) -> tuple[str, str]:
    """(write_parquet config, write_duckdb config) for the same scd2 load ``load`` (0-based)."""
    when = f", load_time: '2024-03-0{load + 1} 00:00:00'" if load_time else ""
    common = (
        f"write_disposition: scd2, primary_key: [region, id], scd2: {{dedup_sort: {{column: ts, order: desc}}, "
        f"hard_delete: gone, full_snapshot: {str(full_snapshot).lower()}{when}}}"
    )
    parts = ", partition_by: [region]" if partitioned else ""
    return f"{{path: ds{parts}, {common}}}", f"{{database: oracle.duckdb, table: history, {common}}}"


def _load_both(
    folder: Path, n: int, rows: list[dict[str, Any]], schema: pa.Schema, sinks: tuple[str, str], pushdown: bool
):
    """The same load through write_parquet and write_duckdb: (parquet run, duckdb run)."""
    parquet = _load(folder, rows, sinks[0], pushdown, schema)
    src = folder / f"oracle{n}.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), src)
    path = folder / f"oracle{n}.yaml"
    path.write_text(
        f"pipeline:\n  - name: read_parquet\n    config: {{path: {src.name}}}\n"
        f"  - name: write_duckdb\n    config: {sinks[1]}\n",
        encoding="utf-8",
    )
    oracle = run_plan(load_pipeline(path))
    assert oracle.status == "ok", oracle.error
    return parquet, oracle


def _histories(folder: Path, partitioned: bool, parquet_runs: list[str], oracle_runs: list[str]):
    """(dataset rows, table rows) over the table's columns, load ids replaced by the load's number."""
    con = duckdb.connect(str(folder / "oracle.duckdb"), read_only=True)
    try:
        names = [str(r[0]) for r in con.execute("DESCRIBE history").fetchall()]
        table = con.execute("SELECT * FROM history").fetchall()
    finally:
        con.close()
    scan = (
        f"read_parquet('{folder / 'ds'}/**/*.parquet', hive_partitioning = {str(partitioned).lower()}, "
        "union_by_name = true, hive_types_autocast = false)"
    )
    got = duckdb.sql(f"SELECT * FROM {scan}")
    assert sorted(got.columns) == sorted(names)  # the same columns; only their order may differ
    dataset = duckdb.sql(f"SELECT {', '.join(names)} FROM {scan}").fetchall()
    at = names.index("_oxi_load_id")

    def normal(rows: list[tuple], runs: list[str]) -> list[tuple]:
        return sorted(((*r[:at], runs.index(r[at]), *r[at + 1 :]) for r in rows), key=repr)

    return normal(dataset, parquet_runs), normal(table, oracle_runs)


@PUSHDOWN
@pytest.mark.parametrize("full_snapshot", [True, False], ids=["snapshot", "incremental"])
@pytest.mark.parametrize("partitioned", [True, False], ids=["partitioned", "flat"])
def test_scd2_history_equals_write_duckdb(
    tmp_path: Path, pushdown: bool, partitioned: bool, full_snapshot: bool
) -> None:
    runs: list[tuple[str, str]] = []
    for n, (rows, schema) in enumerate(SCD2_LOADS):
        parquet, oracle = _load_both(tmp_path, n, rows, schema, _scd2_sinks(n, partitioned, full_snapshot), pushdown)
        runs.append((parquet.run_id, oracle.run_id))
    dataset, table = _histories(tmp_path, partitioned, [p for p, _ in runs], [o for _, o in runs])
    assert dataset == table
    # hand-checked: (region, id, v, _valid_from, _valid_to, _is_current) of every version
    got = sorted(_read(tmp_path / "ds", "region, id, v, _valid_from, _valid_to, _is_current", "all"), key=repr)
    us2_closed = T2 if full_snapshot else None  # absent from load 2: closed by a snapshot only
    eu1_closed = T3 if full_snapshot else None  # absent from load 3
    eu2_closed = T3 if full_snapshot else None
    expected = [
        ("eu", 1, "a", T1, eu1_closed, eu1_closed is None),  # unchanged in load 2: no new version
        ("eu", 2, None, T1, T2, False),  # NULL -> value is a change
        ("eu", 2, "b", T2, eu2_closed, eu2_closed is None),  # ts 3 beat "stale" (ts 2)
        ("eu", 3, "c", T2, T3, False),
        ("eu", 3, "c2", T3, None, True),
        ("us", 1, "u", T1, T2, False),  # hard delete: closed, nothing opened
        ("us", 1, "u", T3, None, True),  # back after the delete: a new version
        ("us", 2, "w", T1, us2_closed, us2_closed is None),
    ]
    assert got == sorted(expected, key=repr)
    _no_temp_left(tmp_path)
    _no_temp_left(tmp_path / "ds")


@pytest.mark.parametrize(("full_snapshot", "rewritten"), [(True, {"eu", "us"}), (False, {"eu"})])
def test_scd2_rewrites_the_partitions_it_must(tmp_path: Path, full_snapshot: bool, rewritten: set[str]) -> None:
    """With full_snapshot every partition can hold a key the load closes: all are rewritten (one folder
    swap); without, only the partitions present in the load."""
    sink = _scd2_sinks(0, True, full_snapshot)[0]
    first = _load(tmp_path, SCD2_LOADS[0][0], sink, True, ORDERS)
    second = _load(
        tmp_path, [{"region": "eu", "id": 1, "v": "a2", "ts": 2}], sink.replace("03-01", "03-02"), True, ORDERS
    )
    by_region = {f.split("/")[0].removeprefix("region="): f.split("/")[1] for f in _files(tmp_path / "ds")}
    assert {r for r, f in by_region.items() if second.run_id in f} == rewritten
    assert {r for r, f in by_region.items() if first.run_id in f} == {"eu", "us"} - rewritten


def test_scd2_applying_the_same_load_twice_changes_nothing(tmp_path: Path) -> None:
    """Why a load published but not marked (killed before its marker) needs no undo: with the same load
    time the rerun finds every key at its current hash (or already closed) and changes no version."""
    for partitioned in (True, False):
        folder = tmp_path / str(partitioned)
        folder.mkdir()
        sink = _scd2_sinks(1, partitioned, True)[0]
        _load(folder, SCD2_LOADS[0][0], _scd2_sinks(0, partitioned, True)[0], True, ORDERS)
        _load(folder, SCD2_LOADS[1][0], sink, True, ORDERS)
        columns = "region, id, v, ts, gone, _valid_from, _valid_to, _is_current, _row_hash, _oxi_load_id"
        once = _read(folder / "ds", columns, "all")
        _load(folder, SCD2_LOADS[1][0], sink, False, ORDERS)
        assert _read(folder / "ds", columns, "all") == once


@pytest.mark.parametrize("full_snapshot", [True, False], ids=["whole-folder-swap", "partition-swaps"])
def test_scd2_after_a_kill_between_the_renames_of_a_swap(
    tmp_path: Path, full_snapshot: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kill between "old aside" and "new in" leaves the old data only in the killed run's hidden folder:
    the next write puts it back before reading the history, so no version is lost (without it the
    partition would read as empty), and removes the folder. The state is the one such a kill leaves, made
    by the same renames, an hour old; the write's start is a second earlier than the clock, so putting the
    partition back (which touches the folder) always comes after it, as it can on a busy machine."""
    import time

    from oxiflow.oxis.files import datasets

    monkeypatch.setattr(datasets, "_now", lambda: time.time() - 1)
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    for folder in (clean, killed):
        folder.mkdir()
        _load(folder, SCD2_LOADS[0][0], _scd2_sinks(0, True, full_snapshot)[0], True, ORDERS)
    ds = killed / "ds"
    if full_snapshot:  # atomic_output renamed the whole dataset aside
        ds.rename(killed / ".ds.oxitmp-20240301T000000-000001-old-abcdef")
    else:  # _swap_partitions renamed one partition aside
        aside = killed / ".ds.oxitmp-20240301T000000-000001-abcdef" / "old"
        aside.mkdir(parents=True)
        (ds / "region=eu").rename(aside / "region=eu")
    hour_ago = time.time() - 3600
    for leftover in killed.glob(".ds.oxitmp-*"):
        for p in [*leftover.rglob("*"), leftover]:
            os.utime(p, (hour_ago, hour_ago))
    for folder in (clean, killed):
        _load(folder, SCD2_LOADS[1][0], _scd2_sinks(1, True, full_snapshot)[0], True, ORDERS)
    columns = "region, id, v, ts, gone, _valid_from, _valid_to, _is_current, _row_hash"
    assert _read(killed / "ds", columns, "all") == _read(clean / "ds", columns, "all")
    _no_temp_left(killed)


def test_scd2_default_load_time_is_one_timestamp_per_load(tmp_path: Path) -> None:
    """Without scd2.load_time the versions of one load share the load's start time (UTC); the history
    equals write_duckdb's but for those times."""
    runs: list[tuple[str, str]] = []
    for n, (rows, schema) in enumerate(SCD2_LOADS):
        before = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        p, o = _load_both(tmp_path, n, rows, schema, _scd2_sinks(n, True, True, load_time=False), True)
        after = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        runs.append((p.run_id, o.run_id))
        opened = duckdb.sql(
            f"SELECT DISTINCT _valid_from FROM read_parquet('{tmp_path / 'ds'}/**/*.parquet', union_by_name = true) "
            f"WHERE _oxi_load_id = '{p.run_id}'"
        ).fetchall()
        assert len(opened) == 1 and before <= opened[0][0] <= after
    dataset, table = _histories(tmp_path, True, [p for p, _ in runs], [o for _, o in runs])

    def timeless(rows: list[tuple]) -> list[tuple]:
        # _valid_from, _valid_to -> (the load that opened / closed the version), by their order
        times = sorted({t for r in rows for t in (r[5], r[6]) if t is not None})
        return sorted(((*r[:5], times.index(r[5]), r[6] and times.index(r[6]), *r[7:]) for r in rows), key=repr)

    assert timeless(dataset) == timeless(table)


def test_scd2_input_system_columns_are_replaced(tmp_path: Path) -> None:
    """An input with `_valid_from` / `_is_current` (a copy of a history) gets the sink's own values."""
    schema = pa.schema(
        [("id", pa.int64()), ("v", pa.string()), ("_is_current", pa.bool_()), ("_valid_from", pa.string())]
    )
    sink = "{path: ds, write_disposition: scd2, primary_key: [id], scd2: {load_time: '2024-03-01'}}"
    _load(tmp_path, [{"id": 1, "v": "a", "_is_current": False, "_valid_from": "x"}], sink, True, schema)
    assert _read(tmp_path / "ds", "id, v, _valid_from, _is_current", "id") == [(1, "a", T1, True)]


def test_scd2_on_a_dataset_without_history_is_an_error(tmp_path: Path) -> None:
    _load(
        tmp_path,
        [{"region": "eu", "id": 1, "v": "a"}],
        "{path: ds, write_disposition: merge, primary_key: [id]}",
        True,
        ORDERS,
    )
    before = _files(tmp_path / "ds")
    src = tmp_path / "again.parquet"
    pq.write_table(pa.Table.from_pylist([{"region": "eu", "id": 1, "v": "b"}], schema=ORDERS), src)
    path = tmp_path / "scd2.yaml"
    path.write_text(
        "pipeline:\n  - name: read_parquet\n    config: {path: again.parquet}\n"
        "  - name: write_parquet\n    config: {path: ds, write_disposition: scd2, primary_key: [id]}\n",
        encoding="utf-8",
    )
    r = run_plan(load_pipeline(path))
    assert r.status == "failed" and "has no scd2 column(s)" in str(r.error)
    assert _files(tmp_path / "ds") == before
    _no_temp_left(tmp_path)


SCD2_LOAD = st.lists(
    st.tuples(
        st.sampled_from(["eu", "us"]),
        st.integers(0, 4),
        st.one_of(st.none(), st.sampled_from(["a", "b"])),
        st.booleans(),
    ),
    max_size=8,
)


@settings(max_examples=15, deadline=None)
@given(loads=st.lists(SCD2_LOAD, min_size=1, max_size=4), full_snapshot=st.booleans(), partitioned=st.booleans())
def test_scd2_matches_write_duckdb(
    tmp_path_factory: pytest.TempPathFactory, loads, full_snapshot: bool, partitioned: bool
) -> None:
    folder = tmp_path_factory.mktemp("scd2prop")
    schema = pa.schema([("region", pa.string()), ("id", pa.int64()), ("v", pa.string()), ("gone", pa.bool_())])
    runs: list[tuple[str, str]] = []
    for n, load in enumerate(loads):
        rows = [{"region": r, "id": k, "v": v, "gone": g} for r, k, v, g in load]
        sinks = tuple(
            s.replace("dedup_sort: {column: ts, order: desc}, ", "") for s in _scd2_sinks(n, partitioned, full_snapshot)
        )
        p, o = _load_both(folder, n, rows, schema, (sinks[0], sinks[1]), n % 2 == 0)
        runs.append((p.run_id, o.run_id))
    if not list((folder / "ds").rglob("*.parquet")):
        return  # nothing opened yet (every load empty or deletes): the table is empty too
    dataset, table = _histories(folder, partitioned, [p for p, _ in runs], [o for _, o in runs])
    assert dataset == table


# -- errors --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("write_disposition: scd2", "write_disposition scd2 needs primary_key"),
        ("write_disposition: merge, primary_key: [id], scd2: {}", "`scd2` options apply to write_disposition scd2"),
        ("write_disposition: replace, load_id_column: x", "load_id_column applies to the dataset dispositions"),
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
