"""From the command line: a contract on a sink (rows to the DLQ, the approval gate), conservation of rows
(rows in = rows written + rows in the DLQ + rows filtered) on every run, `dlq purge --older-than`, bad inputs
of testdata with the reasons their own validators give, and the errors' hints."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest
from _cli import oxiflow, write

TESTDATA = Path(__file__).resolve().parents[3] / "shared" / "testdata"

CONTRACT = """
apiVersion: v3.0.2
kind: DataContract
id: orders
version: 1.0.0
status: active
schema:
  - name: orders
    properties:
      - {name: id, logicalType: integer, required: true}
      - {name: amount, logicalType: number, logicalTypeOptions: {minimum: 0}}
      - {name: status, logicalType: string, enum: [new, paid]}
      - {name: email, logicalType: string, classification: pii}
customProperties:
  - {property: oxiflowMaxInvalidRatio, value: 0.75}
"""
PIPELINE = """
metadata: {name: orders}
pipeline:
  - name: read_csv
    config: {path: in.csv, on_error: dlq}
  - name: write_parquet
    config: {path: out/orders.parquet}
    dataset: orders
    contract: c.yaml
"""


@pytest.fixture(autouse=True)
def _no_state_url_from_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OXIFLOW_STATE_URL", raising=False)


def _run(tmp_path: Path, *extra: str) -> tuple[int, dict[str, Any], str]:
    r = oxiflow("run", "p.yaml", "--json", *extra, cwd=tmp_path)
    return r.returncode, json.loads(r.stdout), r.stderr


def _dlq(tmp_path: Path, run_id: str) -> list[dict[str, Any]]:
    r = oxiflow("dlq", "list", "--run", run_id, "--json", "--limit", "10000", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    return list(json.loads(r.stdout))


def conserved(tmp_path: Path, run: dict[str, Any], rows_in: int, written: int, filtered: int = 0) -> None:
    """The run's rows in = rows written + rows in the DLQ (records of rejected rows) + rows filtered."""
    records = [r for r in _dlq(tmp_path, run["run_id"]) if r["rule"] != "schema_contract:discard_value"]
    assert rows_in == written + len(records) + filtered, (rows_in, written, len(records), filtered)
    assert sum(s["rows_rejected"] for s in run["steps"]) == len(records) == run["dlq_count"]
    for s in run["steps"]:
        if s["kind"] != "source" and s["status"] == "ok":
            assert s["rows_in"] == s["rows_out"] + s["rows_rejected"] + s["rows_filtered"], s


def _csv_rows(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines()) - 1


def test_contract_on_a_sink_dead_letters_and_blocks_breaking_changes(tmp_path: Path) -> None:
    write(tmp_path / "c.yaml", CONTRACT)
    write(tmp_path / "p.yaml", PIPELINE)
    csv = tmp_path / "in.csv"
    csv.write_text("id,amount,status,email\n1,10,new,a@x.io\n,20,paid,b@x.io\n3,-5,paid,c@x.io\n"
                   "4,7,bogus,d@x.io\n5,8,new,e@x.io\n6,9,paid,f@x.io,extra\n", encoding="utf-8")  # fmt: skip
    code, run, err = _run(tmp_path)
    assert code == 0, err
    target = tmp_path / "out" / "orders.parquet"
    written = pq.read_table(target)
    assert written.to_pylist() == [
        {"id": 1, "amount": 10.0, "status": "new", "email": "a@x.io"},
        {"id": 5, "amount": 8.0, "status": "new", "email": "e@x.io"},
    ]
    conserved(tmp_path, run, _csv_rows(csv), written.num_rows)
    records = _dlq(tmp_path, run["run_id"])
    assert sorted((r["step"], r["rule"]) for r in records) == [
        ("read_csv", "parse"), ("write_parquet", "orders.amount.minimum"), ("write_parquet", "orders.id.required"),
        ("write_parquet", "orders.status.enum"),
    ]  # fmt: skip
    assert "@x.io" not in json.dumps(records)  # the email is PII, in the reader's line too
    shown = json.loads(oxiflow("schemas", "show", "orders", "--json", cwd=tmp_path).stdout)
    assert [(f["name"], f["type"], f["nullable"]) for f in shown["fields"]] == [
        ("id", "int64", False),
        ("amount", "double", True),
        ("status", "string", True),
        ("email", "string", True),
    ]
    # a breaking change (a column added under the contract's declared freeze) waits for a person
    text = (tmp_path / "c.yaml").read_text() + "  - {property: oxiflowSchemaContract, value: {columns: freeze}}\n"
    (tmp_path / "c.yaml").write_text(text)
    csv.write_text("id,amount,status,email,note\n7,1,new,g@x.io,hi\n8,2,paid,h@x.io,\n", encoding="utf-8")
    before = target.read_bytes()
    code, blocked, err = _run(tmp_path)
    error = blocked["error"]
    assert code == 1 and error["error"] == "SchemaChangeBlocked" and "column note" in error["message"]
    assert "oxiflow approve orders" in error["hint"]
    assert target.read_bytes() == before
    conserved(tmp_path, blocked, 0, 0)  # stopped before reading a row: nothing in, nothing lost
    assert oxiflow("approve", "orders", "--reason", "email moved to the CRM", cwd=tmp_path).returncode == 0
    code, third, err = _run(tmp_path)
    assert code == 0, err
    conserved(tmp_path, third, 2, pq.read_metadata(target).num_rows)
    assert pq.read_table(target).column_names == ["id", "amount", "status", "email", "note"]
    approvals = json.loads(oxiflow("approvals", "--all", "--json", cwd=tmp_path).stdout)
    assert [(a["status"], a["applied_version"]) for a in approvals] == [("applied", 2)]


def test_schemas_show_before_any_version(tmp_path: Path) -> None:
    write(tmp_path / "c.yaml", CONTRACT)
    write(tmp_path / "p.yaml", PIPELINE + "    schema_contract: {tables: freeze}\n")
    (tmp_path / "in.csv").write_text("id,amount,status,email\n1,1,new,a\n", encoding="utf-8")
    code, _, _ = _run(tmp_path)
    assert code == 1
    shown = oxiflow("schemas", "show", "orders", cwd=tmp_path)
    assert shown.returncode == 1
    assert "did you mean" not in shown.stderr
    assert "no schema versions for dataset 'orders'" in shown.stderr and "waiting for approval" in shown.stderr
    typo = oxiflow("schemas", "show", "ordrs", cwd=tmp_path)
    assert typo.returncode == 1 and "did you mean 'orders'?" in typo.stderr


def test_dlq_purge_older_than_deletes_only_old_records(tmp_path: Path) -> None:
    write(tmp_path / "c.yaml", CONTRACT.replace("0.75", "1"))
    write(tmp_path / "p.yaml", PIPELINE)
    (tmp_path / "in.csv").write_text("id,amount,status,email\n,1,new,a\n,2,new,b\n,3,new,c\n", encoding="utf-8")
    code, run, err = _run(tmp_path)
    assert code == 0, err
    records = _dlq(tmp_path, run["run_id"])
    assert len(records) == 3
    # two of them 40 days old (written into the store, as time would have: no waiting)
    old = [r["id"] for r in records[:2]]
    with sqlite3.connect(tmp_path / ".oxiflow" / "state.db") as con:
        con.executemany("UPDATE dlq SET created_at = '2000-01-01T00:00:00.000Z' WHERE id = ?", [(i,) for i in old])
    assert json.loads(oxiflow("dlq", "purge", "--older-than", "30d", "--json", cwd=tmp_path).stdout) == {"deleted": 2}
    left = [r["id"] for r in _dlq(tmp_path, run["run_id"])]
    assert left == [records[2]["id"]]
    with sqlite3.connect(tmp_path / ".oxiflow" / "state.db") as con:
        assert con.execute("SELECT id FROM dlq").fetchall() == [(records[2]["id"],)]
    assert json.loads(oxiflow("dlq", "purge", "--older-than", "30d", "--json", cwd=tmp_path).stdout) == {"deleted": 0}


def _frictionless_oracle(name: str) -> dict[str, Any]:
    for line in (TESTDATA / "_oracles" / "frictionless.validate.jsonl").read_text().splitlines():
        doc = json.loads(line)
        if doc["file"] == f"frictionless/data/{name}":
            return dict(doc)
    raise AssertionError(name)


BAD_INPUT = """
metadata: {name: bad}
pipeline:
  - name: read_csv
    config: {path: in.csv, on_error: dlq}
  - name: validate
    config:
      rules: [{column: id, not_null: true}]
      max_invalid_ratio: 1
  - name: write_parquet
    config: {path: out.parquet}
"""


@pytest.mark.parametrize("name", ["defective-rows.csv", "structure-errors.csv"])
def test_bad_rows_of_frictionless_files_reach_the_dlq_with_their_reasons(tmp_path: Path, name: str) -> None:
    src = TESTDATA / "frictionless" / "data" / name
    (tmp_path / "in.csv").write_bytes(src.read_bytes())
    write(tmp_path / "p.yaml", BAD_INPUT)
    code, run, err = _run(tmp_path)
    assert code == 0, err
    records = _dlq(tmp_path, run["run_id"])
    written = pq.read_metadata(tmp_path / "out.parquet").num_rows
    lines = src.read_text(encoding="utf-8").splitlines()
    conserved(tmp_path, run, len(lines) - 1, written)
    oracle = _frictionless_oracle(name)
    header = lines[0].split(",")
    parsed = [r for r in records if r["step"] == "read_csv"]
    assert all(r["rule"] == "parse" and r["file"] == str(tmp_path / "in.csv") for r in parsed)
    # extra cells: the line frictionless names, the raw line as it is, the column count in the reason
    extra = re.search(r'Row at position "(\d+)" has an extra value', oracle["first_message"]["extra-cell"])
    assert extra is not None
    hit = next(r for r in parsed if r["line"] == int(extra.group(1)))
    assert hit["raw"] == lines[hit["line"] - 1]
    assert re.search(rf"\b{len(header)}\b", hit["reason"])  # the number of fields the header has
    if "missing-cell" in oracle["errors"]:
        m = re.search(r'Row at position "(\d+)" has a missing cell in field "(\w+)"',
                      oracle["first_message"]["missing-cell"])  # fmt: skip
        assert m is not None
        missing = next(r for r in parsed if r["line"] == int(m.group(1)))
        assert missing["column"] == m.group(2) and missing["raw"] == lines[missing["line"] - 1]
    if "blank-row" in oracle["errors"]:  # a blank row parses (as nulls): the not_null rule names it
        (blank,) = [r for r in records if r["step"] == "validate"]
        assert blank["rule"] == "not_null(id)" and blank["values"] == {"id": None}
    # one record per bad row (frictionless counts cells: structure-errors.csv's one long row has 3 extra cells)
    assert len(parsed) == {"defective-rows.csv": 2, "structure-errors.csv": 1}[name]


def test_titanic_ages_against_a_contract(tmp_path: Path) -> None:
    """great-expectations' Titanic.csv (557 `NA` ages): a contract's range on Age dead-letters exactly the rows
    DuckDB counts outside it; NA rows pass (NULL is the `required` rule's business)."""
    src = TESTDATA / "great-expectations" / "Titanic.csv"
    (tmp_path / "in.csv").write_bytes(src.read_bytes())
    write(tmp_path / "c.yaml", """
        apiVersion: v3.0.2
        kind: DataContract
        id: titanic
        version: 1.0.0
        status: active
        schema:
          - name: passengers
            properties:
              - {name: Age, logicalType: number, logicalTypeOptions: {minimum: 1}}
              - {name: Survived, logicalType: integer, logicalTypeOptions: {maximum: 1}}
        customProperties:
          - {property: oxiflowMaxInvalidRatio, value: 1}
    """)  # fmt: skip
    write(
        tmp_path / "p.yaml",
        PIPELINE.replace("out/orders.parquet", "out.parquet").replace(
            "config: {path: in.csv, on_error: dlq}", "config: {path: in.csv, on_error: dlq, null_values: [NA, '']}"
        ),
    )
    code, run, err = _run(tmp_path)
    assert code == 0, err
    below = duckdb.sql(f"SELECT count(*) FROM read_csv('{src}', nullstr = ['NA', '']) WHERE Age < 1").fetchall()[0][0]
    records = _dlq(tmp_path, run["run_id"])
    assert below > 0 and len(records) == below
    assert all(r["rule"] == "passengers.Age.minimum" and r["reason"].endswith("must be >= 1") for r in records)
    conserved(tmp_path, run, 1313, pq.read_metadata(tmp_path / "out.parquet").num_rows)


def test_a_file_that_cannot_be_decoded_fails_with_a_fitting_hint(tmp_path: Path) -> None:
    (fuzz,) = (TESTDATA / "arrow-testing").rglob("*5085419734892544*")
    write(
        tmp_path / "p.yaml",
        f"""
        pipeline:
          - name: read_csv
            config: {{path: "{fuzz}", on_error: dlq}}
          - name: write_parquet
            config: {{path: out.parquet}}
    """,
    )
    r = oxiflow("run", "p.yaml", cwd=tmp_path)
    assert r.returncode == 1
    assert "could not be decoded as CSV at all" in r.stderr
    assert "set on_error: skip or on_error: dlq" not in r.stderr  # it is set already: no use suggesting it
    assert not (tmp_path / "out.parquet").exists()
