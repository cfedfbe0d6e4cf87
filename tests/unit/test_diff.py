"""oxiflow.explore.diff: CSV vs Parquet vs a DuckDB table, checked against a plain-Python oracle."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

from oxiflow.errors import DataError
from oxiflow.explore.diff import DiffError, DiffOptions, diff

N = 500


@dataclass
class Fixture:
    a_csv: str
    b_parquet: str
    b_duckdb: str
    a: pa.Table  # what was written, the oracle's input
    b: pa.Table


def make_tables() -> tuple[pa.Table, pa.Table]:
    """A and B with every kind of difference: deleted, inserted and changed rows, null -> value,
    value -> null, a tiny float change (for the tolerance), a column on each side only, a key of
    another integer width, and columns in another order."""
    a_rows = [
        {
            "id": i,
            "name": f"n{i}",
            "amount": i / 4 if i % 29 != 6 else None,
            "qty": None if i % 7 == 3 else i * 2,
            "legacy": f"l{i}",
        }
        for i in range(N)
    ]
    b_rows = []
    for r in a_rows:
        i = r["id"]
        if i % 17 == 0:  # deleted: only in A
            continue
        amount = r["amount"]
        if i % 11 == 1 and amount is not None:
            amount += 0.25
        elif i % 23 == 4 and amount is not None:
            amount += 1e-9  # below a tolerance of 1e-6
        qty = i * 2 if i % 7 == 3 else r["qty"]  # null -> value
        if i % 19 == 5:
            qty = None  # value -> null (or stays null)
        b_rows.append(
            {"extra": "x", "id": i, "qty": qty, "amount": amount, "name": f"m{i}" if i % 13 == 2 else r["name"]}
        )
    b_rows += [{"extra": "new", "id": 1000 + j, "qty": j, "amount": 0.5, "name": f"new{j}"} for j in range(12)]
    a = pa.Table.from_pylist(
        a_rows,
        schema=pa.schema(
            [
                ("id", pa.int64()),
                ("name", pa.string()),
                ("amount", pa.float64()),
                ("qty", pa.int64()),
                ("legacy", pa.string()),
            ]
        ),
    )
    b = pa.Table.from_pylist(
        b_rows,
        schema=pa.schema(
            [
                ("extra", pa.string()),
                ("id", pa.int32()),
                ("qty", pa.int64()),
                ("amount", pa.float64()),
                ("name", pa.string()),
            ]
        ),
    )
    return a, b


@pytest.fixture
def data(tmp_path: Path) -> Fixture:
    a, b = make_tables()
    pacsv.write_csv(a, tmp_path / "a.csv")
    pq.write_table(b, tmp_path / "b.parquet")
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    con.execute("CREATE SCHEMA s")
    con.register("b_table", b)
    con.execute("CREATE TABLE s.orders AS SELECT * FROM b_table")
    con.close()
    return Fixture(str(tmp_path / "a.csv"), str(tmp_path / "b.parquet"), f"{tmp_path / 'w.duckdb'}::s.orders", a, b)


def oracle(a: pa.Table, b: pa.Table, key: str, compared: list[str], tolerance: float | None = None) -> dict[str, Any]:
    """The same diff with dicts: rows by key, values compared with == (None equals None)."""
    rows_a = {r[key]: r for r in a.to_pylist()}
    rows_b = {r[key]: r for r in b.to_pylist()}

    def differs(x: Any, y: Any) -> bool:
        if tolerance is not None and isinstance(x, float) and isinstance(y, float):
            return abs(x - y) > tolerance
        return x != y

    changed = {}
    for k in rows_a.keys() & rows_b.keys():
        cols = [c for c in compared if differs(rows_a[k][c], rows_b[k][c])]
        if cols:
            changed[k] = cols
    by_column = {c: sum(c in cols for cols in changed.values()) for c in compared}
    return {
        "only_a": sorted(rows_a.keys() - rows_b.keys()),
        "only_b": sorted(rows_b.keys() - rows_a.keys()),
        "changed": changed,
        "by_column": {c: n for c, n in by_column.items() if n},
        "unchanged": len(rows_a.keys() & rows_b.keys()) - len(changed),
    }


def check_against_oracle(result: Any, expected: dict[str, Any]) -> None:
    assert result.counts == {
        "only_a": len(expected["only_a"]),
        "only_b": len(expected["only_b"]),
        "changed": len(expected["changed"]),
        "unchanged": expected["unchanged"],
    }
    assert result.changed_by_column == expected["by_column"]
    assert [e["key"]["id"] for e in result.examples["only_a"]] == expected["only_a"][:5]
    assert [e["key"]["id"] for e in result.examples["only_b"]] == expected["only_b"][:5]
    first_changed = sorted(expected["changed"])[:5]
    assert [(e["key"]["id"], e["changed_columns"]) for e in result.examples["changed"]] == [
        (k, expected["changed"][k]) for k in first_changed
    ]


def test_csv_against_parquet_matches_the_oracle(data: Fixture, tmp_path: Path) -> None:
    result = diff(data.a_csv, data.b_parquet, DiffOptions(key=["id"]), tmp_path / "out")
    compared = ["name", "amount", "qty"]
    expected = oracle(data.a, data.b, "id", compared)
    assert expected["only_a"] and expected["only_b"] and expected["changed"]  # the fixture has every kind
    assert {c for cols in expected["changed"].values() for c in cols} == set(compared)
    check_against_oracle(result, expected)
    assert result.compared == compared
    assert (result.columns_only_in_a, result.columns_only_in_b) == (["legacy"], ["extra"])
    assert result.casts == {"id": "BIGINT"}  # int64 in the CSV, int32 in the Parquet: compared by value
    assert (result.a.rows, result.b.rows) == (data.a.num_rows, data.b.num_rows)
    assert not result.equal

    # the written sets hold exactly the oracle's rows, with each side's own columns and values
    only_a = pq.read_table(tmp_path / "out/only_a.parquet")
    assert only_a.column_names == ["id", "name", "amount", "qty", "legacy"]
    assert only_a.column("id").to_pylist() == expected["only_a"]
    only_b = pq.read_table(tmp_path / "out/only_b.parquet")
    assert only_b.column_names == data.b.column_names
    assert only_b.column("id").to_pylist() == expected["only_b"]
    changed = pq.read_table(tmp_path / "out/changed.parquet")
    assert changed.column_names == [
        "id", "changed_columns", "name_a", "name_b", "amount_a", "amount_b", "qty_a", "qty_b",
    ]  # fmt: skip
    assert (
        dict(zip(changed.column("id").to_pylist(), changed.column("changed_columns").to_pylist(), strict=True))
        == (expected["changed"])
    )
    rows_a = {r["id"]: r for r in data.a.to_pylist()}
    rows_b = {r["id"]: r for r in data.b.to_pylist()}
    for row in changed.to_pylist():
        for col in compared:
            assert (row[f"{col}_a"], row[f"{col}_b"]) == (rows_a[row["id"]][col], rows_b[row["id"]][col])


def test_csv_against_a_duckdb_table(data: Fixture) -> None:
    result = diff(data.a_csv, data.b_duckdb, DiffOptions(key=["id"]))
    check_against_oracle(result, oracle(data.a, data.b, "id", ["name", "amount", "qty"]))
    assert result.b.reader == "read_duckdb"


def test_parquet_against_the_same_rows_in_duckdb_is_equal(data: Fixture) -> None:
    result = diff(data.b_parquet, data.b_duckdb, DiffOptions(key=["id"]))
    assert result.equal
    assert result.counts == {"only_a": 0, "only_b": 0, "changed": 0, "unchanged": data.b.num_rows}
    assert result.casts == {}


def test_streamed_input_without_a_scan(data: Fixture, tmp_path: Path) -> None:
    # Arrow IPC has no DuckDB scan: its Arrow stream is copied into the diff's database
    feather.write_feather(data.a, tmp_path / "a.arrow")
    result = diff(str(tmp_path / "a.arrow"), data.b_parquet, DiffOptions(key=["id"]))
    assert not result.a.pushdown and result.b.pushdown
    check_against_oracle(result, oracle(data.a, data.b, "id", ["name", "amount", "qty"]))


def test_tolerance_hides_tiny_float_changes(data: Fixture) -> None:
    result = diff(data.a_csv, data.b_parquet, DiffOptions(key=["id"], tolerance=1e-6))
    expected = oracle(data.a, data.b, "id", ["name", "amount", "qty"], tolerance=1e-6)
    exact = oracle(data.a, data.b, "id", ["name", "amount", "qty"])
    assert expected["by_column"]["amount"] < exact["by_column"]["amount"]  # the 1e-9 changes are gone
    check_against_oracle(result, expected)


def test_columns_and_ignore_restrict_the_comparison(data: Fixture) -> None:
    only_qty = diff(data.a_csv, data.b_parquet, DiffOptions(key=["id"], columns=["qty"]))
    check_against_oracle(only_qty, oracle(data.a, data.b, "id", ["qty"]))
    assert (only_qty.columns_only_in_a, only_qty.columns_only_in_b) == ([], [])

    ignored = diff(data.a_csv, data.b_parquet, DiffOptions(key=["id"], ignore=["name", "legacy", "extra"]))
    check_against_oracle(ignored, oracle(data.a, data.b, "id", ["amount", "qty"]))
    assert ignored.compared == ["amount", "qty"]


def test_equal_when_only_the_row_order_and_types_differ(tmp_path: Path) -> None:
    a = pa.table({"k": pa.array([3, 1, 2], pa.int16()), "d": ["2024-01-03", "2024-01-01", "2024-01-02"]})
    a = a.set_column(1, "d", a.column("d").cast(pa.date32()))
    b = pa.table({"d": pa.array([1704067200, 1704153600, 1704240000], pa.timestamp("s")), "k": [1, 2, 3]})
    pq.write_table(a, tmp_path / "a.parquet")
    pq.write_table(b, tmp_path / "b.parquet")
    result = diff(str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet"), DiffOptions(key=["k"]))
    assert result.casts == {"k": "BIGINT", "d": "TIMESTAMP"}  # DATE vs TIMESTAMP: compared as timestamps
    assert result.equal and result.counts["unchanged"] == 3


def test_composite_key_with_nulls_and_nested_values(tmp_path: Path) -> None:
    a = pa.table({"a": [1, 1, None, 2], "b": ["x", None, "y", "z"], "tags": [[1], [2, 3], [], None]})
    b = pa.table({"a": [1, 1, None, 3], "b": ["x", None, "y", "z"], "tags": [[1], [2, 4], [], None]})
    pq.write_table(a, tmp_path / "a.parquet")
    pq.write_table(b, tmp_path / "b.parquet")
    result = diff(str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet"), DiffOptions(key=["a", "b"]))
    # a NULL key part matches a NULL key part; lists compare by value
    assert result.counts == {"only_a": 1, "only_b": 1, "changed": 1, "unchanged": 2}
    assert result.examples["changed"] == [{"key": {"a": 1, "b": None}, "changed_columns": ["tags"]}]
    assert result.examples["only_a"] == [{"key": {"a": 2, "b": "z"}}]


def test_duplicate_keys_are_an_error_naming_side_and_key(tmp_path: Path) -> None:
    pq.write_table(pa.table({"id": [1, 2, 3]}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"id": [1, 2, 2, 3, 3, 3]}), tmp_path / "b.parquet")
    with pytest.raises(DiffError) as info:
        diff(str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet"), DiffOptions(key=["id"]))
    text = str(info.value)
    assert "2 key value(s) occur more than once in B" in text
    assert "id=2 (2 rows)" in text and "id=3 (3 rows)" in text
    assert info.value.exit_code == 2


def test_unknown_names_get_a_did_you_mean(data: Fixture) -> None:
    with pytest.raises(DiffError, match=r"key column.*idd not in A.*did you mean 'id'"):
        diff(data.a_csv, data.b_parquet, DiffOptions(key=["idd"]))
    with pytest.raises(DiffError, match=r"key column.*legacy not in B"):
        diff(data.a_csv, data.b_parquet, DiffOptions(key=["legacy"]))
    with pytest.raises(DiffError, match=r"--ignore names unknown column.*amont.*did you mean 'amount'"):
        diff(data.a_csv, data.b_parquet, DiffOptions(key=["id"], ignore=["amont"]))


def test_a_broken_streamed_input_reports_the_readers_error(data: Fixture, tmp_path: Path) -> None:
    (tmp_path / "bad.arrow").write_bytes(b"ARROW1\x00\x00not really arrow")
    with pytest.raises(DataError) as info:
        diff(str(tmp_path / "bad.arrow"), data.b_parquet, DiffOptions(key=["id"]))
    assert "bad.arrow" in str(info.value)


def test_missing_duckdb_table_suggests_the_close_one(data: Fixture) -> None:
    with pytest.raises(DataError, match=r"no table 's.order'.*did you mean 's.orders'"):
        diff(data.a_csv, data.b_duckdb[: -len("orders")] + "order", DiffOptions(key=["id"]))
