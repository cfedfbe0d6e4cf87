"""`oxiflow explain`: steps, inputs and output schemas, probed without reading data or writing."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
from _cli import oxiflow, write

PIPELINE = """
pipeline:
  - name: read_csv
    id: orders
    config: {path: in.csv}
  - name: sql
    id: totals
    config:
      query: "select name, sum(amount) as total from orders group by name"
  - name: write_parquet
    id: out
    config: {path: out.parquet}
"""


def _oracle(tmp_path: Path, query: str) -> list[tuple[str, str]]:
    con = duckdb.connect()
    con.execute(f"create view orders as select * from read_csv('{tmp_path / 'in.csv'}')")
    return [(f.name, str(f.type)) for f in con.sql(query).to_arrow_table().schema]


def test_explain_json_gives_every_schema(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text("id,name,amount\n1,a,1.5\n2,b,2.5\n", encoding="utf-8")
    write(tmp_path / "p.yaml", PIPELINE)
    r = oxiflow("explain", "p.yaml", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    steps = {s["id"]: s for s in data["steps"]}
    assert [s["id"] for s in data["steps"]] == ["orders", "totals", "out"]
    assert steps["totals"]["inputs"] == ["orders"]
    got = {sid: [(f["name"], f["type"]) for f in steps[sid]["schema"]] for sid in ("orders", "totals")}
    assert got["orders"] == _oracle(tmp_path, "select * from orders")
    assert got["totals"] == _oracle(tmp_path, "select name, sum(amount) as total from orders group by name")
    assert not (tmp_path / "out.parquet").exists()  # explain writes nothing


def test_explain_text(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text("id,name,amount\n1,a,1.5\n", encoding="utf-8")
    write(tmp_path / "p.yaml", PIPELINE)
    r = oxiflow("explain", "p.yaml", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[1] == "  1. orders [read_csv, source]"
    assert "       id: int64" in lines
    assert "  2. totals [sql, transform] <- orders" in lines
    assert "       total: double" in lines


def test_explain_names_a_step_whose_probe_fails(tmp_path: Path) -> None:
    write(tmp_path / "p.yaml", PIPELINE)  # in.csv is missing
    r = oxiflow("explain", "p.yaml", "--json", cwd=tmp_path)
    assert r.returncode == 1
    steps = {s["id"]: s for s in json.loads(r.stdout)["steps"]}
    assert "in.csv" in steps["orders"]["error"]


def test_explain_shows_fused_steps(tmp_path: Path) -> None:
    # Waits on the Oxide Flow oxis (read_file, parse_csv with scan_file).
    (tmp_path / "in.csv").write_text("id,name\n1,a\n", encoding="utf-8")
    write(
        tmp_path / "p.yaml",
        """
        pipeline:
          - name: read_file
            id: raw
            config: {path: in.csv}
          - name: parse_csv
            id: rows
          - name: write_parquet
            config: {path: out.parquet}
        """,
    )
    r = oxiflow("explain", "p.yaml", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    steps = {s["id"]: s for s in json.loads(r.stdout)["steps"]}
    assert "raw" not in steps
    assert steps["rows"]["fused"].startswith("raw (read_file) + rows")
    assert [f["name"] for f in steps["rows"]["schema"]] == ["id", "name"]
