"""`oxi profile FILE` end to end: table, --json, --html, options, exit codes and error messages."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
from _cli import oxiflow


def _orders(tmp_path: Path, rows: int = 2000) -> Path:
    path = tmp_path / "orders.parquet"
    duckdb.sql(
        f"""COPY (SELECT range AS order_id,
                         CASE WHEN range % 10 = 0 THEN NULL ELSE (range * 7919) % 1000 / 10.0 END AS amount,
                         ['EUR', 'USD', 'GBP'][range % 3 + 1] AS currency,
                         TIMESTAMP '2024-01-01' + INTERVAL (range) MINUTE AS created_at
                  FROM range({rows})) TO '{path}' (FORMAT parquet)"""
    )
    return path


def test_json_matches_duckdb(tmp_path: Path) -> None:
    path = _orders(tmp_path)
    r = oxiflow("profile", str(path), "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    doc = json.loads(r.stdout)
    cols = {c["name"]: c for c in doc["columns"]}
    want = duckdb.sql(
        f"SELECT count(*), count(amount), min(amount), max(amount), avg(amount), stddev_samp(amount), "
        f"count(DISTINCT currency) FROM '{path}'"
    ).fetchall()[0]
    amount = cols["amount"]
    assert (doc["rows"], amount["count"], amount["min"], amount["max"]) == want[:4]
    assert amount["mean"] == pytest.approx(want[4], rel=1e-12)
    assert amount["stddev"] == pytest.approx(want[5], rel=1e-12)
    assert (cols["currency"]["distinct"], cols["currency"]["distinct_exact"]) == (want[6], True)
    assert sum(b["count"] for b in amount["histogram"]) == amount["count"]
    top = duckdb.sql(f"SELECT currency, count(*) FROM '{path}' GROUP BY 1 ORDER BY 2 DESC, 1").fetchall()
    assert [(t["value"], t["count"]) for t in cols["currency"]["top"]] == top
    assert cols["created_at"]["min"] == "2024-01-01T00:00:00"


def test_table_on_stdout(tmp_path: Path) -> None:
    path = _orders(tmp_path)
    r = oxiflow("profile", str(path), "--top", "2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    lines = r.stdout.splitlines()
    assert lines[0] == f"{path}: 2,000 rows, 4 columns (parquet)"
    amount = next(line for line in lines if line.startswith("amount"))
    assert "10.0%" in amount  # nulls
    assert "99.9" in amount and "double" in amount  # max, type
    currency = next(line for line in lines if line.startswith("currency"))
    assert "EUR 33%" in currency and "USD 33%" in currency and "GBP" not in currency  # --top 2


def test_html_report(tmp_path: Path) -> None:
    path = _orders(tmp_path)
    r = oxiflow("profile", str(path), "--html", "report.html", "--json", "--bins", "4", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "wrote report.html" in r.stderr
    doc = json.loads(r.stdout)
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page and "http" not in page
    assert page.count('class="bar"') == sum(len(c["histogram"] or []) + len(c["top"] or []) for c in doc["columns"])


def test_csv_input_and_format_option(tmp_path: Path) -> None:
    (tmp_path / "data.txt").write_text("k;v\na;1\nb;2\na;3\n", encoding="utf-8")
    r = oxiflow("profile", "data.txt", "--format", "csv", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    cols = {c["name"]: c for c in json.loads(r.stdout)["columns"]}
    assert cols["k"]["top"] == [{"value": "a", "count": 2}, {"value": "b", "count": 1}]
    assert (cols["v"]["min"], cols["v"]["max"], cols["v"]["mean"]) == (1, 3, 2.0)


def test_malformed_csv_names_file_and_line(tmp_path: Path) -> None:
    rows = "\n".join(f"{i},{i * 1.5}" for i in range(30_000))
    (tmp_path / "bad.csv").write_text(f"id,amount\n{rows}\n30000,abc\n", encoding="utf-8")
    r = oxiflow("profile", "bad.csv", cwd=tmp_path)
    assert r.returncode == 1
    assert r.stdout == ""
    assert "bad.csv:30002" in r.stderr and "abc" in r.stderr


def test_missing_file_exits_1(tmp_path: Path) -> None:
    r = oxiflow("profile", "nope.parquet", cwd=tmp_path)
    assert r.returncode == 1
    assert "file not found: nope.parquet" in r.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["data.weird"], "cannot tell the format"),
        (["x.csv", "--format", "xml"], "unknown format 'xml'"),
        (["x.csv", "--top", "-1"], "--top"),
        (["x.csv", "--bins", "many"], "--bins"),
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    r = oxiflow("profile", *args, cwd=tmp_path)
    assert r.returncode == 2
    assert message in r.stderr


def test_unwritable_html_path_fails_before_profiling(tmp_path: Path) -> None:
    path = _orders(tmp_path, rows=10)
    r = oxiflow("profile", str(path), "--html", "no/such/folder/r.html", cwd=tmp_path)
    assert r.returncode == 1
    assert r.stdout == ""
    assert "cannot write the HTML report no/such/folder/r.html" in r.stderr


def test_help_has_an_example(tmp_path: Path) -> None:
    r = oxiflow("profile", "--help", cwd=tmp_path)
    assert r.returncode == 0
    assert "Example: oxi profile" in r.stdout
    for option in ("--json", "--html", "--top", "--bins", "--exact-distinct-limit", "--format"):
        assert option in r.stdout
