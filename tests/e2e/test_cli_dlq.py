"""`oxiflow dlq list|show|export|purge|replay` end to end, against a real SQLite state store."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
from _cli import oxiflow, write

CSV = "id,name,amount,status\n1,a,10,new\n2,b,-5,new\n3,c,20,bogus\n4,d,30,done\n,e,40,new\n6,f,50,done\n"
PIPELINE = """
metadata: {name: orders}
pipeline:
  - name: read_csv
    config: {path: in.csv}
  - name: validate
    config:
      max_invalid_ratio: 0.9
      rules:
        - {column: id, not_null: true}
        - {column: amount, range: {min: 0, max: 100}}
        - {column: status, enum: [new, done]}
        - {column: id, unique: true}
  - name: write_duckdb
    config: {database: wh.duckdb, table: orders, write_disposition: append}
"""


def _run(tmp_path: Path) -> dict:
    (tmp_path / "in.csv").write_text(CSV, encoding="utf-8")
    write(tmp_path / "p.yaml", PIPELINE)
    r = oxiflow("run", "p.yaml", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _table(tmp_path: Path) -> list[tuple]:
    with duckdb.connect(str(tmp_path / "wh.duckdb")) as con:
        return con.sql("SELECT id, name, amount, status FROM orders ORDER BY id").fetchall()


def test_list_show_export(tmp_path: Path) -> None:
    run = _run(tmp_path)
    r = oxiflow("dlq", "list", "--json", "--pipeline", "orders", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    records = json.loads(r.stdout)
    assert sorted(x["rule"] for x in records) == ["enum(status)", "not_null(id)", "range(amount)"]
    assert {x["run_id"] for x in records} == {run["run_id"]} and {x["step"] for x in records} == {"validate"}
    assert len(records) == run["dlq_count"] == 3
    # conservation: the rows read = the rows in the table + the rows in the DLQ (+ filtered: none)
    assert run["steps"][0]["rows_out"] == len(CSV.splitlines()) - 1 == len(_table(tmp_path)) + len(records)
    assert sum(s["rows_filtered"] for s in run["steps"]) == 0
    text = oxiflow("dlq", "list", cwd=tmp_path)
    assert text.returncode == 0 and "range(amount)" in text.stdout
    one = next(x for x in records if x["rule"] == "range(amount)")
    shown = oxiflow("dlq", "show", one["id"][:8], cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    assert doc["raw"] == {"id": 2, "name": "b", "amount": -5, "status": "new"}
    assert doc["values"] == {"amount": -5} and doc["reason"] == "amount = -5 must be >= 0 and <= 100"
    assert oxiflow("dlq", "show", "nope", cwd=tmp_path).returncode == 1
    for fmt in ("jsonl", "csv", "parquet"):
        out = tmp_path / f"x.{fmt}"
        r = oxiflow("dlq", "export", "--format", fmt, str(out), cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        if fmt == "jsonl":
            rows = [json.loads(line) for line in out.read_text().splitlines()]
        elif fmt == "csv":
            rows = list(csv.DictReader(out.open()))
        else:
            rows = pq.read_table(out).to_pylist()
        assert sorted(x["id"] for x in rows) == sorted(x["id"] for x in records)
    assert oxiflow("dlq", "export", "--format", "xml", "y", cwd=tmp_path).returncode == 2


def test_purge(tmp_path: Path) -> None:
    run = _run(tmp_path)
    assert oxiflow("dlq", "purge", cwd=tmp_path).returncode == 2  # says what to purge
    r = oxiflow("dlq", "purge", "--older-than", "30d", "--json", cwd=tmp_path)
    assert json.loads(r.stdout) == {"deleted": 0}  # nothing that old
    r = oxiflow("dlq", "purge", "--run", run["run_id"], "--json", cwd=tmp_path)
    assert json.loads(r.stdout) == {"deleted": 3}
    assert json.loads(oxiflow("dlq", "list", "--json", cwd=tmp_path).stdout) == []


def test_replay_round_trip(tmp_path: Path) -> None:
    run = _run(tmp_path)
    assert _table(tmp_path) == [(1, "a", 10, "new"), (4, "d", 30, "done"), (6, "f", 50, "done")]
    # without fixes the same records are rejected again (and the originals are marked replayed)
    # -- so fix them first: export, edit, replay from the file
    r = oxiflow("dlq", "export", "--pipeline", "orders", "fixed.jsonl", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    fixed = []
    for line in (tmp_path / "fixed.jsonl").read_text().splitlines():
        doc = json.loads(line)
        raw = doc["raw"]
        raw["id"] = raw["id"] if raw["id"] is not None else 5
        raw["amount"] = abs(raw["amount"])
        raw["status"] = "new" if raw["status"] == "bogus" else raw["status"]
        fixed.append(json.dumps(doc))
    (tmp_path / "fixed.jsonl").write_text("\n".join(fixed) + "\n")
    r = oxiflow("dlq", "replay", "--pipeline", "p.yaml", "--from-file", "fixed.jsonl", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["replayed"] == 3
    (replay,) = summary["runs"]
    assert (replay["step"], replay["status"], replay["marked"], replay["rejected_again"]) == ("validate", "ok", 3, 0)
    assert replay["run_id"] != run["run_id"]
    assert _table(tmp_path) == [
        (1, "a", 10, "new"), (2, "b", 5, "new"), (3, "c", 20, "new"), (4, "d", 30, "done"),
        (5, "e", 40, "new"), (6, "f", 50, "done"),
    ]  # fmt: skip
    records = json.loads(oxiflow("dlq", "list", "--json", cwd=tmp_path).stdout)
    assert {x["replay_run_id"] for x in records} == {replay["run_id"]}
    assert all(x["replayed_at"] for x in records)
    assert json.loads(oxiflow("dlq", "list", "--pending", "--json", cwd=tmp_path).stdout) == []
    # the replay is a recorded run of the pipeline, and nothing is pending any more
    runs = json.loads(oxiflow("runs", "--json", cwd=tmp_path).stdout)
    assert replay["run_id"] in json.dumps(runs)
    again = oxiflow("dlq", "replay", "--pipeline", "p.yaml", cwd=tmp_path)
    assert again.returncode == 0 and "nothing to replay" in again.stderr


def test_replay_of_unfixed_records_fails_and_marks_nothing(tmp_path: Path) -> None:
    first = _run(tmp_path)
    r = oxiflow("dlq", "replay", "--pipeline", "p.yaml", "--json", cwd=tmp_path)
    assert r.returncode == 1  # all 3 rows invalid again: 100% > max_invalid_ratio 90%
    (replay,) = json.loads(r.stdout)["runs"]
    assert (replay["records"], replay["status"], replay["marked"], replay["rejected_again"]) == (3, "failed", 0, 3)
    assert "max_invalid_ratio" in replay["error"]
    assert len(_table(tmp_path)) == 3  # nothing arrived
    pending = json.loads(oxiflow("dlq", "list", "--pending", "--json", cwd=tmp_path).stdout)
    # the originals are still pending, and the replay's own rejects are recorded under its run id
    assert sorted(x["run_id"] for x in pending) == sorted([first["run_id"]] * 3 + [replay["run_id"]] * 3)


def test_no_state_keeps_the_file_only(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text(CSV, encoding="utf-8")
    write(tmp_path / "p.yaml", PIPELINE)
    r = oxiflow("run", "p.yaml", "--no-state", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert len(Path(result["dlq_path"]).read_text().splitlines()) == 3
    assert not (tmp_path / ".oxiflow" / "state.db").exists()
