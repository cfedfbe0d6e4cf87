"""`oxi profile FILE` end to end: table, --json, --html, options, exit codes and error messages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
    # the input's format is --input-format / -F, as on every verb (-f is an output format there)
    r = oxiflow("profile", "data.txt", "-F", "csv", "--json", cwd=tmp_path)
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
        (["x.csv", "--input-format", "xml"], "unknown format 'xml'"),
        (["x.csv", "-f", "csv"], "No such option"),
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
    for option in ("--json", "--html", "--top", "--bins", "--exact-distinct-limit", "--input-format", "-F"):
        assert option in r.stdout


def _stats(doc: dict) -> list[tuple]:
    keys = ("name", "type", "count", "nulls", "distinct", "min", "max", "mean", "stddev", "top", "histogram")
    return [tuple(json.dumps(c[k], sort_keys=True) for k in keys) for c in doc["columns"]]


def test_stdin_and_a_duckdb_table_are_inputs_like_a_file(tmp_path: Path) -> None:
    """`-` and `db.duckdb::table` work as for every verb, and profile to the same statistics as the
    file they hold (the profile of the file itself is checked against DuckDB above)."""
    path = _orders(tmp_path)
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        con.execute(f"CREATE TABLE orders AS SELECT * FROM '{path}'")
    by_file = oxiflow("profile", path.name, "--json", cwd=tmp_path)
    assert by_file.returncode == 0, by_file.stderr
    expected = json.loads(by_file.stdout)
    piped = subprocess.run(
        [sys.executable, "-m", "oxiflow.cli.main", "profile", "-", "--json"],
        cwd=tmp_path,
        input=path.read_bytes(),
        capture_output=True,
        timeout=120,
    )
    table = oxiflow("profile", "w.duckdb::orders", "--json", cwd=tmp_path)
    assert (piped.returncode, table.returncode) == (0, 0), (piped.stderr, table.stderr)
    from_stdin, from_table = json.loads(piped.stdout), json.loads(table.stdout)
    assert (from_stdin["path"], from_stdin["format"], from_stdin["method"]) == ("-", "parquet", "spool")
    assert (from_table["format"], from_table["method"]) == ("duckdb", "scan")
    assert from_stdin["rows"] == from_table["rows"] == expected["rows"] == 2000
    assert _stats(from_stdin) == _stats(expected)
    assert [s[2:] for s in _stats(from_table)] == [s[2:] for s in _stats(expected)]  # types: DuckDB's own


def _peak_rss_mb(args: list[str], cwd: Path, stdin: int | None = None) -> float:
    """Run a command to its end; the peak RSS of that process (the kernel's ru_maxrss, via wait4)."""
    proc = subprocess.Popen(args, cwd=cwd, stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else b""
    return usage.ru_maxrss / 1024


@pytest.mark.timeout(600)
@pytest.mark.parametrize("via", ["file", "stdin"])
def test_profile_memory_does_not_grow_with_the_rows(tmp_path: Path, via: str) -> None:
    """Peak RSS for 10x the rows grows by less than DuckDB's memory limit, while holding the extra
    rows would take twice that: the scan (a file) and the spool (stdin, copied into a temporary
    DuckDB database file) both stream, and DuckDB keeps to its limit."""
    query = """SELECT range AS id, range % 1000 AS g, hash(range) % 1000000 AS h, 'name-' || (range % 50000) AS s,
               range * 0.37 AS x, TIMESTAMP '2024-01-01' + INTERVAL (range) SECOND AS t FROM range({n})"""
    small, large, limit_mb = 500_000, 5_000_000, 128
    held_mb = duckdb.sql(query.format(n=large - small)).arrow().read_all().nbytes / 2**20
    assert held_mb > 2 * limit_mb  # else a profile that kept every row could pass
    peaks = {}
    for n in (small, large):
        path = tmp_path / f"p{n}.parquet"
        duckdb.sql(f"COPY ({query.format(n=n)}) TO '{path}' (FORMAT parquet)")
        profile = [sys.executable, "-m", "oxiflow.cli.main", "profile", "--json", "--memory-limit-mb", str(limit_mb)]
        if via == "file":
            peaks[n] = _peak_rss_mb([*profile, path.name], tmp_path)
        else:
            with open(path, "rb") as fh:
                peaks[n] = _peak_rss_mb([*profile, "-"], tmp_path, stdin=fh.fileno())
    assert peaks[large] - peaks[small] < limit_mb, (peaks, held_mb)
