"""`oxi diff` end to end: summaries, JSON, written sets and exit codes (0 equal, 1 differ, 2 error)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from _cli import oxiflow


def _inputs(tmp_path: Path) -> tuple[pa.Table, pa.Table]:
    """A: ids 0..99 as CSV. B (Parquet and a DuckDB table): ids 5..104, `price` changed on every
    10th id, `note` null -> value on ids divisible by 25, and a column `extra` only in B."""
    ids = list(range(100))
    a = pa.table(
        {
            "id": ids,
            "price": [i * 1.5 for i in ids],
            "note": [None if i % 25 == 0 else f"n{i}" for i in ids],
        }
    )
    b_ids = list(range(5, 105))
    b = pa.table(
        {
            "id": pa.array(b_ids, pa.int32()),
            "price": [i * 1.5 + (1 if i % 10 == 0 else 0) for i in b_ids],
            "note": [f"n{i}" for i in b_ids],
            "extra": ["e"] * len(b_ids),
        }
    )
    pacsv.write_csv(a, tmp_path / "a.csv")
    pq.write_table(b, tmp_path / "b.parquet")
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        con.register("b", b)
        con.execute("CREATE TABLE orders AS SELECT * FROM b")
    return a, b


def _oracle(a: pa.Table, b: pa.Table) -> dict[str, object]:
    ra = {r["id"]: r for r in a.to_pylist()}
    rb = {r["id"]: r for r in b.to_pylist()}
    changed = {
        k: [c for c in ("price", "note") if ra[k][c] != rb[k][c]]
        for k in sorted(ra.keys() & rb.keys())
        if any(ra[k][c] != rb[k][c] for c in ("price", "note"))
    }
    return {
        "only_a": sorted(ra.keys() - rb.keys()),
        "only_b": sorted(rb.keys() - ra.keys()),
        "changed": changed,
        "unchanged": len(ra.keys() & rb.keys()) - len(changed),
    }


def test_json_summary_matches_the_oracle(tmp_path: Path) -> None:
    a, b = _inputs(tmp_path)
    expected = _oracle(a, b)
    r = oxiflow("diff", "a.csv", "b.parquet", "--key", "id", "--json", "--examples", "3", cwd=tmp_path)
    assert r.returncode == 1, r.stderr  # they differ
    assert r.stderr == ""
    out = json.loads(r.stdout)
    assert out["equal"] is False
    assert (out["a"]["rows"], out["b"]["rows"]) == (100, 100)
    assert out["only_in_a"] == {"count": 5, "examples": [{"key": {"id": i}} for i in expected["only_a"][:3]]}
    assert out["only_in_b"]["count"] == len(expected["only_b"])
    changed = expected["changed"]
    assert isinstance(changed, dict)
    assert out["changed"]["count"] == len(changed)
    assert out["changed"]["examples"] == [
        {"key": {"id": k}, "changed_columns": changed[k]} for k in sorted(changed)[:3]
    ]
    assert out["changed"]["by_column"] == {
        c: sum(c in cols for cols in changed.values()) for c in ("price", "note")
    }  # fmt: skip
    assert out["unchanged"] == expected["unchanged"]
    assert out["columns_only_in_b"] == ["extra"]
    assert out["compared_as"] == {"id": "BIGINT"}


def test_output_folder_holds_the_three_sets(tmp_path: Path) -> None:
    a, b = _inputs(tmp_path)
    expected = _oracle(a, b)
    r = oxiflow("diff", "a.csv", "w.duckdb::orders", "-k", "id", "--output", "out", cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "changed.parquet",
        "only_a.parquet",
        "only_b.parquet",
    ]
    assert pq.read_table(tmp_path / "out/only_a.parquet").column("id").to_pylist() == expected["only_a"]
    assert pq.read_table(tmp_path / "out/only_b.parquet").column("id").to_pylist() == expected["only_b"]
    changed = pq.read_table(tmp_path / "out/changed.parquet").to_pylist()
    assert {row["id"]: row["changed_columns"] for row in changed} == expected["changed"]
    row = next(r for r in changed if r["id"] == 50)  # both columns changed
    assert (row["price_a"], row["price_b"], row["note_a"], row["note_b"]) == (75.0, 76.0, None, "n50")


def test_text_summary_on_a_pipe(tmp_path: Path) -> None:
    _inputs(tmp_path)
    r = oxiflow("diff", "a.csv", "b.parquet", "--key", "id", "--examples", "1", cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    lines = r.stdout.splitlines()
    for line in [
        "A: a.csv (100 rows)",
        "only in A: 5",
        "only in B: 5",
        "changed: 11",  # price on ids 10, 20 ... 90; note on 25, 50, 75 (both on 50)
        "unchanged: 84",
        "  changed price: 9",
        "  changed note: 3",
        "columns only in B: extra",
        "e.g. changed: id=10 [price]",
        "differ",
    ]:
        assert line in lines, r.stdout


def test_equal_inputs_exit_0(tmp_path: Path) -> None:
    _inputs(tmp_path)
    r = oxiflow("diff", "b.parquet", "w.duckdb::orders", "--key", "id", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == "equal"
    # restricting the comparison: columns only on one side and ignored ones do not count
    r = oxiflow("diff", "a.csv", "b.parquet", "--key", "id", "--columns", "note", "--json", cwd=tmp_path)
    assert json.loads(r.stdout)["changed"]["count"] == 3


def test_errors_exit_2(tmp_path: Path) -> None:
    _inputs(tmp_path)
    r = oxiflow("diff", "a.csv", "b.parquet", "--key", "idx", cwd=tmp_path)
    assert (r.returncode, r.stdout) == (2, "")
    assert "key column(s) idx not in A (a.csv) (did you mean 'id'?)" in r.stderr
    r = oxiflow("diff", "a.csv", "missing.parquet", "--key", "id", cwd=tmp_path)
    assert r.returncode == 2 and "missing.parquet" in r.stderr
    r = oxiflow("diff", "a.csv", "w.duckdb::order", "--key", "id", "--json", cwd=tmp_path)
    assert r.returncode == 2
    assert json.loads(r.stdout)["message"] == "no table 'order' in w.duckdb"
    r = oxiflow("diff", "a.csv", "b.parquet", cwd=tmp_path)  # --key is required
    assert r.returncode == 2 and "--key" in r.stderr


def test_duplicate_keys_exit_2(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("id,v\n1,a\n1,b\n2,c\n", encoding="utf-8")
    (tmp_path / "b.csv").write_text("id,v\n1,a\n2,c\n", encoding="utf-8")
    r = oxiflow("diff", "a.csv", "b.csv", "--key", "id", cwd=tmp_path)
    assert r.returncode == 2
    assert "1 key value(s) occur more than once in A (a.csv), e.g. id=1 (2 rows)" in r.stderr


def test_help_has_an_example(tmp_path: Path) -> None:
    r = oxiflow("diff", "--help", cwd=tmp_path)
    assert r.returncode == 0
    assert "Example: oxi diff" in r.stdout and "--tolerance" in r.stdout


def test_stdin_is_an_input_like_a_file(tmp_path: Path) -> None:
    """`oxi diff - B` (and `A -`): the pipe is read like any verb reads it, and compares as the file
    it holds does."""
    a, b = _inputs(tmp_path)
    expected = _oracle(a, b)
    by_file = oxiflow("diff", "a.csv", "b.parquet", "--key", "id", "--json", cwd=tmp_path)
    piped = subprocess.run(
        [sys.executable, "-m", "oxiflow.cli.main", "diff", "a.csv", "-", "--key", "id", "--json"],
        cwd=tmp_path,
        input=(tmp_path / "b.parquet").read_bytes(),
        capture_output=True,
        timeout=120,
    )
    assert (by_file.returncode, piped.returncode) == (1, 1), (by_file.stderr, piped.stderr)
    want, got = json.loads(by_file.stdout), json.loads(piped.stdout)
    assert got["b"]["input"] == "-" and got["b"]["read_via"] == "arrow stream"
    for part in ("only_in_a", "only_in_b", "changed", "unchanged", "columns_only_in_b"):
        assert got[part] == want[part]
    assert got["only_in_b"]["count"] == len(expected["only_b"]) and got["unchanged"] == expected["unchanged"]
    both = subprocess.run(
        [sys.executable, "-m", "oxiflow.cli.main", "diff", "-", "-", "--key", "id"],
        cwd=tmp_path,
        input=b"",
        capture_output=True,
        timeout=60,
    )
    assert both.returncode == 2 and b"only one of A and B" in both.stderr
