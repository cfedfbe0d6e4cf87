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
