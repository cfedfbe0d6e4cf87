"""write_duckdb merge / scd2 / delete_insert: hand-checked tables after two or three loads, through a
real DuckDB file, on both paths (pushed down: one DuckDB statement; streamed: Arrow batches).

The expected tables are written out by hand; the merge property test checks random load sequences
against a dict-by-key oracle in plain Python.
"""

from __future__ import annotations

import hashlib
import itertools
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oxiflow.config.load import load_pipeline
from oxiflow.engine.local import run_plan
from oxiflow.errors import ConfigError

T1, T2, T3 = datetime(2024, 1, 1), datetime(2024, 2, 1), datetime(2024, 3, 1)
_counter = itertools.count()


def _load(folder: Path, rows: list[dict[str, Any]], sink: str, pushdown: bool, schema: pa.Schema | None = None):
    """Write ``rows`` as a Parquet file and run read_parquet -> write_duckdb (id ``sink``) over it."""
    n = next(_counter)
    src = folder / f"load{n}.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), src)
    path = folder / f"pipeline{n}.yaml"
    path.write_text(
        f"settings: {{pushdown: {str(pushdown).lower()}}}\n"
        "pipeline:\n"
        f"  - name: read_parquet\n    config: {{path: {src.name}}}\n"
        f"  - name: write_duckdb\n    id: sink\n    config: {sink}\n",
        encoding="utf-8",
    )
    result = run_plan(load_pipeline(path))
    assert result.status == "ok", result.error
    sink_step = next(s for s in result.steps if s.step_id == "sink")
    assert sink_step.pushdown is pushdown  # the path under test was the one taken
    return result


def _rows(db: Path, query: str) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.sql(query).fetchall()
    finally:
        con.close()


def _load_ids(db: Path, table: str = "t") -> dict[Any, str]:
    return dict(_rows(db, f"select id, _oxi_load_id from {table}"))


PUSHDOWN = pytest.mark.parametrize("pushdown", [True, False], ids=["pushdown", "stream"])

ITEMS = pa.schema([("id", pa.int64()), ("name", pa.string()), ("amount", pa.float64())])


# -- merge ---------------------------------------------------------------------------------------
@PUSHDOWN
def test_merge_three_loads(tmp_path: Path, pushdown: bool) -> None:
    db = tmp_path / "wh.duckdb"
    sink = "{database: wh.duckdb, table: t, write_disposition: merge, primary_key: [id]}"
    r1 = _load(
        tmp_path,
        [{"id": 1, "name": "a", "amount": 1.0}, {"id": 2, "name": "b", "amount": None}, {"id": 3, "name": "c"}],
        sink,
        pushdown,
        ITEMS,
    )
    r2 = _load(
        tmp_path,
        [
            {"id": 2, "name": "b", "amount": 2.0},  # NULL -> value
            {"id": 4, "name": "d", "amount": 4.0},
            {"id": 4, "name": "d2", "amount": 4.5},  # same key twice: the later row wins
            {"id": 1, "name": "a", "amount": 1.0},  # unchanged, merged again
        ],
        sink,
        pushdown,
        ITEMS,
    )
    assert r2.metadata["sink"]["changes"] == {"deleted": 2, "inserted": 3}
    assert r2.metadata["sink"]["rows"] == 4
    r3 = _load(
        tmp_path,
        [{"id": 3, "name": None, "amount": None}, {"id": 5, "name": "e", "amount": 5.0}],  # value -> NULL
        sink,
        pushdown,
        ITEMS,
    )
    assert _rows(db, "select id, name, amount from t order by id") == [
        (1, "a", 1.0),
        (2, "b", 2.0),
        (3, None, None),
        (4, "d2", 4.5),
        (5, "e", 5.0),
    ]
    assert _load_ids(db) == {1: r2.run_id, 2: r2.run_id, 3: r3.run_id, 4: r2.run_id, 5: r3.run_id}
    assert r1.metadata["sink"]["changes"] == {"deleted": 0, "inserted": 3}
    # no staging or helper table is left in the database file
    assert _rows(db, "select table_name from information_schema.tables") == [("t",)]


EVENTS = pa.schema([("id", pa.int64()), ("v", pa.string()), ("ts", pa.int64()), ("deleted", pa.bool_())])


@PUSHDOWN
@pytest.mark.parametrize(("order", "winner"), [("desc", "high"), ("asc", "low")])
def test_merge_dedup_sort_and_hard_delete(tmp_path: Path, pushdown: bool, order: str, winner: str) -> None:
    db = tmp_path / "wh.duckdb"
    sink = (
        "{database: wh.duckdb, table: t, write_disposition: merge, primary_key: [id], "
        f"merge: {{dedup_sort: {{column: ts, order: {order}}}, hard_delete: deleted}}}}"
    )
    _load(
        tmp_path,
        [{"id": i, "v": v, "ts": 1, "deleted": False} for i, v in [(1, "x"), (2, "y"), (3, "z")]],
        sink,
        pushdown,
        EVENTS,
    )
    r = _load(
        tmp_path,
        [
            {"id": 1, "v": "high", "ts": 5, "deleted": False},
            {"id": 1, "v": "null-ts", "ts": None, "deleted": False},  # NULL loses either way
            {"id": 1, "v": "low", "ts": 2, "deleted": False},
            {"id": 2, "v": "y", "ts": 1, "deleted": True},  # deletes key 2
            {"id": 9, "v": "ghost", "ts": 1, "deleted": True},  # deleting a missing key: nothing
            {"id": 3, "v": "z-deleted", "ts": 9, "deleted": True},
            {"id": 3, "v": "z-kept", "ts": 0, "deleted": None},
        ],
        sink,
        pushdown,
        EVENTS,
    )
    # key 3: desc -> the deleting row (ts 9) wins; asc -> the kept row (ts 0) wins
    expected = [(1, winner, 5 if winner == "high" else 2)] + ([(3, "z-kept", 0)] if order == "asc" else [])
    assert _rows(db, "select id, v, ts from t order by id") == expected
    # keys 1, 2 and 3 existed: all three target rows go, the winners that do not delete come back
    assert r.metadata["sink"]["changes"] == {"deleted": 3, "inserted": len(expected)}


def test_merge_hard_delete_on_a_non_boolean_column(tmp_path: Path) -> None:
    db = tmp_path / "wh.duckdb"
    schema = pa.schema([("id", pa.int64()), ("v", pa.string()), ("deleted_at", pa.timestamp("us"))])
    sink = (
        "{database: wh.duckdb, table: t, write_disposition: merge, primary_key: [id], merge: {hard_delete: deleted_at}}"
    )
    _load(tmp_path, [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}], sink, True, schema)
    _load(
        tmp_path, [{"id": 1, "v": "a", "deleted_at": T1}, {"id": 2, "v": "B", "deleted_at": None}], sink, True, schema
    )
    assert _rows(db, "select id, v from t") == [(2, "B")]


@PUSHDOWN
def test_merge_missing_columns_keep_target_values_and_new_columns_are_added(tmp_path: Path, pushdown: bool) -> None:
    db = tmp_path / "wh.duckdb"
    sink = "{database: wh.duckdb, table: t, write_disposition: merge, primary_key: [id]}"
    _load(tmp_path, [{"id": 1, "a": "a1", "b": "b1"}, {"id": 2, "a": "a2", "b": "b2"}], sink, pushdown)
    _load(tmp_path, [{"id": 1, "a": "A1", "c": 10}, {"id": 3, "a": "a3", "c": 30}], sink, pushdown)
    assert _rows(db, "select id, a, b, c from t order by id") == [
        (1, "A1", "b1", 10),  # b kept from the target
        (2, "a2", "b2", None),  # untouched
        (3, "a3", None, 30),  # new key: b NULL
    ]
    columns = _rows(db, "select column_name, data_type from information_schema.columns where table_name = 't'")
    assert columns == [
        ("id", "BIGINT"),
        ("a", "VARCHAR"),
        ("b", "VARCHAR"),
        ("_oxi_load_id", "VARCHAR"),
        ("c", "BIGINT"),
    ]


def test_merge_composite_key_and_no_load_id_column(tmp_path: Path) -> None:
    db = tmp_path / "wh.duckdb"
    sink = "{database: wh.duckdb, table: t, write_disposition: merge, primary_key: [k1, k2], load_id_column: null}"
    _load(tmp_path, [{"k1": 1, "k2": "a", "v": 1}, {"k1": 1, "k2": "b", "v": 2}], sink, False)
    _load(tmp_path, [{"k1": 1, "k2": "b", "v": 20}, {"k1": 2, "k2": "a", "v": 3}], sink, False)
    assert _rows(db, "select * from t order by k1, k2") == [(1, "a", 1), (1, "b", 20), (2, "a", 3)]


def test_merge_null_key_is_an_error_and_changes_nothing(tmp_path: Path, write_pipeline) -> None:
    db = tmp_path / "wh.duckdb"
    sink = "{database: wh.duckdb, table: t, write_disposition: merge, primary_key: [id]}"
    _load(tmp_path, [{"id": 1, "v": "a"}], sink, True)
    pq.write_table(pa.table({"id": pa.array([None, 2], pa.int64()), "v": ["x", "y"]}), tmp_path / "bad.parquet")
    path = write_pipeline(
        f"pipeline:\n  - name: read_parquet\n    config: {{path: bad.parquet}}\n"
        f"  - name: write_duckdb\n    config: {sink}\n"
    )
    r = run_plan(load_pipeline(path))
    assert r.status == "failed"
    assert "1 row(s) of the load have a NULL in the primary key ['id']" in str(r.error)
    assert _rows(db, "select id, v from t") == [(1, "a")]


# -- scd2 ----------------------------------------------------------------------------------------
def _hash(**values: Any) -> str:
    """The documented row hash, computed independently: md5 of name<US>text pairs sorted by name,
    NULLs left out, joined with <RS>."""
    text = "\x1e".join(f"{k}\x1f{v}" for k, v in sorted(values.items()) if v is not None)
    return hashlib.md5(text.encode()).hexdigest()


SCD = pa.schema([("id", pa.int64()), ("name", pa.string()), ("amount", pa.float64()), ("deleted", pa.bool_())])


@PUSHDOWN
def test_scd2_history_over_three_loads(tmp_path: Path, pushdown: bool) -> None:
    db = tmp_path / "wh.duckdb"

    def sink(when: datetime) -> str:
        return (
            "{database: wh.duckdb, table: t, write_disposition: scd2, primary_key: [id], "
            f"scd2: {{load_time: '{when.isoformat()}', hard_delete: deleted}}}}"
        )

    r1 = _load(
        tmp_path,
        [{"id": 1, "name": "a"}, {"id": 2, "name": "b", "amount": 2.0}, {"id": 3, "name": "c", "amount": 3.0}],
        sink(T1),
        pushdown,
        SCD,
    )
    r2 = _load(
        tmp_path,
        [
            {"id": 1, "name": "a", "amount": 1.0},  # NULL -> value: a change
            {"id": 2, "name": "b", "amount": 2.0},  # unchanged: nothing
            {"id": 4, "name": "d", "amount": 4.0},  # new
        ],  # 3 absent from the full snapshot: closed
        sink(T2),
        pushdown,
        SCD,
    )
    assert r2.metadata["sink"]["changes"] == {"closed": 2, "inserted": 2}
    r3 = _load(
        tmp_path,
        [
            {"id": 1, "name": "a", "amount": 1.0, "deleted": False},  # unchanged (hard_delete is not hashed)
            {"id": 2, "name": "b", "amount": 2.0, "deleted": True},  # deleted: closed
            {"id": 3, "name": "c", "amount": 3.0, "deleted": False},  # back: a new version
        ],  # 4 absent: closed
        sink(T3),
        pushdown,
        SCD,
    )
    got = _rows(
        db,
        "select id, name, amount, _valid_from, _valid_to, _is_current, _row_hash, _oxi_load_id "
        "from t order by id, _valid_from",
    )
    a1, a2 = _hash(name="a"), _hash(name="a", amount=1.0)
    b, c, d = _hash(name="b", amount=2.0), _hash(name="c", amount=3.0), _hash(name="d", amount=4.0)
    assert got == [
        (1, "a", None, T1, T2, False, a1, r1.run_id),
        (1, "a", 1.0, T2, None, True, a2, r2.run_id),
        (2, "b", 2.0, T1, T3, False, b, r1.run_id),
        (3, "c", 3.0, T1, T2, False, c, r1.run_id),
        (3, "c", 3.0, T3, None, True, c, r3.run_id),
        (4, "d", 4.0, T2, T3, False, d, r2.run_id),
    ]


def test_scd2_incremental_load_keeps_absent_keys(tmp_path: Path) -> None:
    db = tmp_path / "wh.duckdb"
    base = "{database: wh.duckdb, table: t, write_disposition: scd2, primary_key: [id], scd2: {full_snapshot: false, "
    _load(tmp_path, [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}], base + f"load_time: '{T1}'}}}}", False)
    # key 2 twice in one load: the later row is the new version
    _load(tmp_path, [{"id": 2, "v": "x"}, {"id": 2, "v": "B"}], base + f"load_time: '{T2}'}}}}", False)
    assert _rows(db, "select id, v, _valid_from, _valid_to, _is_current from t order by id, _valid_from") == [
        (1, "a", T1, None, True),
        (2, "b", T1, T2, False),
        (2, "B", T2, None, True),
    ]


def test_scd2_load_time_defaults_to_one_timestamp_per_load(tmp_path: Path) -> None:
    db = tmp_path / "wh.duckdb"
    sink = "{database: wh.duckdb, table: t, write_disposition: scd2, primary_key: [id]}"
    before = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    _load(tmp_path, [{"id": i, "v": str(i)} for i in range(5)], sink, True)
    stamps = _rows(db, "select distinct _valid_from from t")
    assert len(stamps) == 1 and stamps[0][0] >= before


# -- delete_insert -------------------------------------------------------------------------------
@PUSHDOWN
def test_delete_insert_backfill_is_idempotent(tmp_path: Path, pushdown: bool) -> None:
    db = tmp_path / "wh.duckdb"
    sink = "{database: wh.duckdb, table: t, write_disposition: delete_insert, partition_by: [day]}"
    schema = pa.schema([("day", pa.string()), ("id", pa.int64())])
    _load(tmp_path, [{"day": "d1", "id": i} for i in (1, 2, 3)] + [{"day": "d2", "id": 4}], sink, pushdown, schema)
    backfill = [{"day": "d1", "id": 1}, {"day": "d1", "id": 5}, {"day": None, "id": 7}]
    expected = [("d1", 1), ("d1", 5), ("d2", 4), (None, 7)]
    query = "select day, id from t order by day nulls last, id"
    first = _load(tmp_path, backfill, sink, pushdown, schema)
    assert _rows(db, query) == expected
    assert first.metadata["sink"]["changes"] == {"deleted": 3, "inserted": 3}
    second = _load(tmp_path, backfill, sink, pushdown, schema)
    assert _rows(db, query) == expected
    assert second.metadata["sink"]["changes"] == {"deleted": 3, "inserted": 3}  # its own 3 rows, NULL day too


# -- configuration errors ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("write_disposition: merge", "write_disposition merge needs primary_key"),
        ("write_disposition: scd2", "write_disposition scd2 needs primary_key"),
        ("write_disposition: delete_insert", "write_disposition delete_insert needs partition_by"),
        ("primary_key: [id], merge: {hard_delete: d}", "`merge` options apply to write_disposition merge, not append"),
        ("write_disposition: merge, primary_key: [id, id]", "primary_key repeats a column"),
        ("write_disposition: merge, primary_key: [id], merge: {dedup_sort: {column: ts, order: up}}", "order"),
    ],
)
def test_config_errors_at_validate_time(write_pipeline, config: str, message: str) -> None:
    path = write_pipeline(
        "pipeline:\n  - name: read_parquet\n    config: {path: x.parquet}\n"
        f"  - name: write_duckdb\n    config: {{database: wh.duckdb, table: t, {config}}}\n"
    )
    with pytest.raises(ConfigError) as exc:
        load_pipeline(path)
    assert message in str(exc.value)


# -- property: merge equals a dict by key ---------------------------------------------------------
LOAD = st.lists(st.tuples(st.integers(0, 8), st.one_of(st.none(), st.integers(-3, 3)), st.booleans()), max_size=12)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(loads=st.lists(LOAD, min_size=1, max_size=4), pushdown=st.booleans())
def test_merge_matches_a_dict_oracle(tmp_path_factory: pytest.TempPathFactory, loads, pushdown: bool) -> None:
    folder = tmp_path_factory.mktemp("prop")
    schema = pa.schema([("id", pa.int64()), ("v", pa.int64()), ("gone", pa.bool_())])
    sink = "{database: wh.duckdb, table: t, write_disposition: merge, primary_key: [id], merge: {hard_delete: gone}}"
    oracle: dict[int, int | None] = {}
    for load in loads:
        _load(folder, [{"id": k, "v": v, "gone": g} for k, v, g in load], sink, pushdown, schema)
        winners = {k: (v, g) for k, v, g in load}  # the last row per key wins
        for k, (v, g) in winners.items():
            if g:
                oracle.pop(k, None)
            else:
                oracle[k] = v
    got = _rows(folder / "wh.duckdb", "select id, v from t order by id") if (folder / "wh.duckdb").exists() else []
    assert got == sorted(oracle.items())
