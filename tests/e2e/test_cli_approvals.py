"""The human gate end to end: a breaking schema change stops the run before writing, `oxiflow approve` records
who/when/why, the next run publishes the change as a new schema version."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
from _cli import oxiflow, write

PIPELINE = """
pipeline:
  - name: read_csv
    config: {path: in.csv}
  - name: write_parquet
    id: out
    config: {path: out/orders.parquet}
    dataset: orders
    schema_contract: evolve
"""


@pytest.fixture(autouse=True)
def _no_state_url_from_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OXIFLOW_STATE_URL", raising=False)


def _csv_oracle(path: Path) -> list[dict[str, object]]:
    return duckdb.sql(f"SELECT * FROM read_csv('{path}')").to_arrow_table().to_pylist()


def test_breaking_change_waits_for_approval(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text("id,amount\n1,1.5\n2,2.25\n", encoding="utf-8")
    write(tmp_path / "p.yaml", PIPELINE)
    target = tmp_path / "out" / "orders.parquet"

    first = oxiflow("run", "p.yaml", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert pq.read_table(target).to_pylist() == _csv_oracle(tmp_path / "in.csv")
    v1 = json.loads(oxiflow("schemas", "show", "orders", "--json", cwd=tmp_path).stdout)
    assert v1["version"] == 1 and [f["type"] for f in v1["fields"]] == ["int64", "double"]
    before = target.read_bytes()

    # amount turns into text upstream: double -> string is not backward compatible
    (tmp_path / "in.csv").write_text("id,amount\n1,1.5\n2,n/a\n3,4\n", encoding="utf-8")
    blocked = oxiflow("run", "p.yaml", cwd=tmp_path)
    assert blocked.returncode == 1, blocked.stderr
    assert "dataset orders" in blocked.stderr and "column amount" in blocked.stderr
    assert "oxiflow approve orders" in blocked.stderr
    assert target.read_bytes() == before  # nothing written
    pending = json.loads(oxiflow("approvals", "--json", cwd=tmp_path).stdout)
    assert [(a["dataset"], a["status"], a["base_version"]) for a in pending] == [("orders", "pending", 1)]
    assert any("amount" in c for c in pending[0]["changes"])
    table = oxiflow("approvals", cwd=tmp_path)
    assert "orders" in table.stdout and "pending" in table.stdout

    approved = oxiflow("approve", "orders", "--reason", "amount is free text now (ticket 42)", "--by", "alice",
                       cwd=tmp_path)  # fmt: skip
    assert approved.returncode == 0, approved.stderr
    assert oxiflow("approve", "orders", cwd=tmp_path).returncode == 1  # nothing pending any more
    assert json.loads(oxiflow("approvals", "--json", cwd=tmp_path).stdout) == []
    decided = json.loads(oxiflow("approvals", "--all", "--json", cwd=tmp_path).stdout)[0]
    assert (decided["status"], decided["approved_by"], decided["reason"]) == (
        "approved", "alice", "amount is free text now (ticket 42)")  # fmt: skip
    assert decided["approved_at"] >= decided["requested_at"]

    third = oxiflow("run", "p.yaml", "--json", cwd=tmp_path)
    assert third.returncode == 0, third.stderr
    # conservation: every row read is written (nothing dead-lettered or filtered by the approved change)
    run = json.loads(third.stdout)
    assert run["dlq_count"] == 0 and all(s["rows_rejected"] == s["rows_filtered"] == 0 for s in run["steps"])
    assert run["steps"][0]["rows_out"] == pq.read_metadata(target).num_rows == 3
    assert pq.read_table(target).to_pylist() == _csv_oracle(tmp_path / "in.csv")
    v2 = json.loads(oxiflow("schemas", "show", "orders", "--json", cwd=tmp_path).stdout)
    assert v2["version"] == 2 and [f["type"] for f in v2["fields"]] == ["int64", "string"]
    assert [(d["column"], d["kind"]) for d in v2["drift"]] == [("amount", "type_changed")]
    applied = json.loads(oxiflow("approvals", "--all", "--json", cwd=tmp_path).stdout)[0]
    assert (applied["status"], applied["applied_version"]) == ("applied", 2)

    compat = oxiflow("schemas", "compat", "orders", "--mode", "backward", "--json", cwd=tmp_path)
    assert compat.returncode == 1 and json.loads(compat.stdout)["pairs"][0]["compatible"] is False
    assert oxiflow("schemas", "compat", "orders", "--mode", "none", cwd=tmp_path).returncode == 0
    listed = json.loads(oxiflow("schemas", "list", "--json", cwd=tmp_path).stdout)
    assert [(d["dataset"], d["version"], d["compatibility"]) for d in listed] == [("orders", 2, "backward")]


def test_discard_row_dead_letters_rows_that_do_not_fit(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text("id,amount\n1,1.5\n2,2.25\n", encoding="utf-8")
    write(tmp_path / "p.yaml", PIPELINE.replace("schema_contract: evolve", "schema_contract: discard_row"))
    assert oxiflow("run", "p.yaml", cwd=tmp_path).returncode == 0
    (tmp_path / "in.csv").write_text("id,amount\n1,1.5\n2,n/a\n3,4\n", encoding="utf-8")
    run = oxiflow("run", "p.yaml", "--json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    oracle = duckdb.sql(
        f"SELECT id, TRY_CAST(amount AS DOUBLE) AS amount FROM read_csv('{tmp_path / 'in.csv'}', all_varchar=true) "
        "WHERE TRY_CAST(amount AS DOUBLE) IS NOT NULL"
    ).to_arrow_table()
    got = pq.read_table(tmp_path / "out" / "orders.parquet")
    assert [r["amount"] for r in got.to_pylist()] == oracle.column("amount").to_pylist()
    result = json.loads(run.stdout)
    dlq = [json.loads(line) for line in Path(result["dlq_path"]).read_text(encoding="utf-8").splitlines()]
    assert [(d["raw"]["id"], d["rule"], d["column"]) for d in dlq] == [(2, "schema_contract", "amount")]
    show = json.loads(oxiflow("schemas", "show", "orders", "--json", cwd=tmp_path).stdout)
    assert show["version"] == 1  # the registered schema did not change


def test_schema_keys_on_a_source_fail_validation(tmp_path: Path) -> None:
    write(tmp_path / "p.yaml", PIPELINE.replace("config: {path: in.csv}", "config: {path: in.csv}\n    dataset: x"))
    (tmp_path / "in.csv").write_text("id\n1\n", encoding="utf-8")
    res = oxiflow("validate", "p.yaml", cwd=tmp_path)
    assert res.returncode == 2
    assert "p.yaml:4" in res.stderr and "only allowed on sink steps" in res.stderr
