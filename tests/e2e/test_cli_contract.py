"""`oxi contract test|diff|infer|lint` as a user runs them: exit codes, JSON, JUnit XML."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from _cli import oxiflow

FIX = Path(__file__).resolve().parents[3] / "shared" / "testdata" / "datacontract-cli" / "fixtures"
V2 = str(FIX / "schema-evolution/odcs-datacontract-cities-version-2.yaml")
V3 = str(FIX / "schema-evolution/odcs-datacontract-cities-version-3.yaml")


def test_contract_test_pass_fail_json_junit(tmp_path: Path) -> None:
    ok = oxiflow("contract", "test", V2, str(FIX / "schema-evolution/cities-version-2.parquet"), cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "PASSED" in ok.stdout
    junit = tmp_path / "r.xml"
    bad = oxiflow(
        "contract",
        "test",
        V2,
        str(FIX / "schema-evolution/invalid/cities-version-2-invalid.csv"),
        "--json",
        "--junit",
        str(junit),
        cwd=tmp_path,
    )
    assert bad.returncode == 1, bad.stderr
    doc = json.loads(bad.stdout)
    assert doc["result"] == "failed"
    assert [c["id"] for c in doc["checks"] if c["status"] == "failed"] == ["cities.population.minimum"]
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "1"
    failed = [c.get("name") for c in suite.iter("testcase") if c.find("failure") is not None]
    assert failed == ["cities.population.minimum: population >= 10000"]


def test_contract_test_bad_contract_exits_2(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("- not a contract\n")
    r = oxiflow("contract", "test", "c.yaml", str(FIX / "schema-evolution/cities-version-2.csv"), cwd=tmp_path)
    assert r.returncode == 2 and "c.yaml" in r.stderr and r.stdout == ""


def test_contract_diff_exit_codes(tmp_path: Path) -> None:
    r = oxiflow("contract", "diff", V2, V3, "--json", cwd=tmp_path)
    assert r.returncode == 1
    doc = json.loads(r.stdout)
    assert doc["breaking"] and [(c["path"], c["kind"]) for c in doc["changes"]] == [("cities.population", "required")]
    back = oxiflow("contract", "diff", V3, V2, cwd=tmp_path)
    assert back.returncode == 0 and "required -> optional" in back.stdout


def test_contract_infer_then_test_and_lint(tmp_path: Path) -> None:
    data = str(FIX / "schema-evolution/cities-version-2.parquet")
    r = oxiflow("contract", "infer", data, "-o", "cities.odcs.yaml", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    t = oxiflow("contract", "test", "cities.odcs.yaml", data, cwd=tmp_path)
    assert t.returncode == 0, t.stdout + t.stderr
    lint = oxiflow(
        "contract", "lint", str(FIX / "../../odcs/examples/all/full-example.odcs.yaml"), "--json", cwd=tmp_path
    )
    assert lint.returncode == 0
    assert "$.schema[0].relationships: foreign keys are not checked" in json.loads(lint.stdout)["unsupported"]


BENCH_LIKE = r"""apiVersion: v3.0.2
kind: DataContract
id: orders
version: 1.0.0
status: active
schema:
- name: orders
  properties:
  - {name: order_id, logicalType: integer, required: true, unique: true}
  - {name: shuffled_id, logicalType: integer, required: true, unique: true}
  - {name: quantity, logicalType: integer, logicalTypeOptions: {minimum: 1, maximum: 10}}
  - {name: currency, logicalType: string, enum: [EUR, USD, GBP], logicalTypeOptions: {pattern: '^[A-Z]{3}$'}}
  - name: status
    logicalType: string
    logicalTypeOptions: {pattern: '^[a-z]+$'}
    quality:
    - {type: library, metric: invalidValues, arguments: {validValues: [placed, shipped]}, mustBe: 0}
"""


def test_contract_test_counts_on_planted_parquet(tmp_path: Path) -> None:
    """The 10 typical rules as the benchmark has them, on violations planted in 20,000 rows: every
    report format carries the counts DuckDB computes itself."""
    import duckdb

    data = tmp_path / "orders.parquet"
    con = duckdb.connect()
    con.execute(
        """CREATE TABLE orders AS SELECT
             CASE WHEN i % 997 = 0 THEN i - 1 WHEN i % 1009 = 0 THEN NULL ELSE i END AS order_id,
             (i * 7919) % 20011 + CASE WHEN i % 2003 = 0 THEN 1 ELSE 0 END AS shuffled_id,
             CASE WHEN i % 89 = 0 THEN NULL ELSE i % 12 END AS quantity,
             ['EUR', 'USD', 'usd', 'GBP', NULL, 'JPY'][1 + i % 6] AS currency,
             ['placed', 'shipped', 'Done', ''][1 + i % 4] AS status
           FROM range(1, 20001) r(i)"""
    )
    con.execute(f"COPY orders TO '{data}' (FORMAT parquet, ROW_GROUP_SIZE 4096)")
    (tmp_path / "orders.odcs.yaml").write_text(BENCH_LIKE)
    q = lambda sql: con.execute(sql).fetchone()[0]  # type: ignore[index]  # noqa: E731
    expected = {
        "orders.order_id.required": q("SELECT count(*) FROM orders WHERE order_id IS NULL"),
        "orders.order_id.unique": q("SELECT count(order_id) - count(DISTINCT order_id) FROM orders"),
        "orders.shuffled_id.required": 0,
        "orders.shuffled_id.unique": q("SELECT count(*) - count(DISTINCT shuffled_id) FROM orders"),
        "orders.quantity.minimum": q("SELECT count(*) FROM orders WHERE quantity < 1"),
        "orders.quantity.maximum": q("SELECT count(*) FROM orders WHERE quantity > 10"),
        "orders.currency.enum": q("SELECT count(*) FROM orders WHERE currency NOT IN ('EUR', 'USD', 'GBP')"),
        "orders.currency.pattern": q("SELECT count(*) FROM orders WHERE NOT regexp_full_match(currency, '[A-Z]{3}')"),
        "orders.status.pattern": q("SELECT count(*) FROM orders WHERE NOT regexp_full_match(status, '[a-z]+')"),
        "orders.status.quality[0]": q("SELECT count(*) FROM orders WHERE status NOT IN ('placed', 'shipped')"),
    }
    assert all(n > 0 for k, n in expected.items() if k != "orders.shuffled_id.required")  # violations planted

    junit = tmp_path / "r.xml"
    run = oxiflow("contract", "test", "orders.odcs.yaml", str(data), "--json", "--junit", str(junit), cwd=tmp_path)
    assert run.returncode == 1, run.stderr
    doc = json.loads(run.stdout)
    assert doc["rows"] == 20000
    assert {c["id"]: c["measured"] for c in doc["checks"] if c["kind"] not in ("presence", "type")} == expected
    failed = {c["id"] for c in doc["checks"] if c["status"] == "failed"}
    assert failed == set(expected) - {"orders.shuffled_id.required"}
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == str(len(failed))

    text = oxiflow("contract", "test", "orders.odcs.yaml", str(data), cwd=tmp_path)
    assert text.returncode == 1
    pattern = expected["orders.currency.pattern"]
    assert f"  FAIL currency matches ^[A-Z]{{3}}$ — {pattern} of 20000 rows fail" in text.stdout.splitlines()
    unique = expected["orders.order_id.unique"]
    assert f"  FAIL order_id is unique — measured {unique}, mustBe 0" in text.stdout.splitlines()
