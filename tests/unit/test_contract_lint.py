"""`contract lint` against the datacontract-cli lint fixtures and their expected verdicts (testdata/_oracles/
datacontract-cli.expected.md), with the built-in checks, the ODCS JSON Schemas of testdata and custom schemas."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from oxiflow.cli.contract import app
from oxiflow.contracts import lint as lint_module
from oxiflow.contracts.lint import lint

TESTDATA = Path(__file__).resolve().parents[3] / "shared" / "testdata"
LINT = TESTDATA / "datacontract-cli" / "fixtures" / "lint"
ODCS_LATEST = TESTDATA / "odcs" / "schema" / "odcs-json-schema-latest.json"
DCS_SCHEMA = TESTDATA / "datacontract-specification" / "datacontract.schema.json"

VALID = ["valid_datacontract.yaml", "valid.odcs.yaml", "valid-3.1.0.odcs.yaml", "valid_datacontract_ref.yaml",
         "valid_datacontract_references.yaml", "custom_datacontract.yaml"]  # fmt: skip
INVALID = {
    "invalid.odcs.yaml": ["$: 'status' is a required property"],
    "invalid_multiple_errors.odcs.yaml": ["$: 'version' is a required property", "$: 'status' is a required property"],
    "invalid_multiple_schema_errors.odcs.yaml": ["$.schema[0].description: None is not of type 'string'"],
    "odcs_with_extra_top_level.yaml": ["$: Additional properties are not allowed ('change_management' was unexpected)"],
    "invalid_datacontract.yaml": ["$: 'id' is a required property"],
}


@pytest.fixture(autouse=True)
def _no_packaged_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    # the built-in checks alone, whatever happens to be installed
    monkeypatch.setattr(lint_module, "_packaged_odcs_schema", lambda: None)


@pytest.mark.parametrize("name", VALID)
def test_valid_fixtures_pass(name: str) -> None:
    result = lint(str(LINT / name))
    assert result.valid, result.errors


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_fixtures_fail_with_every_error(name: str) -> None:
    assert lint(str(LINT / name)).errors == INVALID[name]


@pytest.mark.parametrize("name", ["valid.odcs.yaml", "valid-3.1.0.odcs.yaml"])
def test_valid_odcs_fixtures_pass_the_odcs_json_schema(name: str) -> None:
    assert lint(str(LINT / name), str(ODCS_LATEST)).valid


@pytest.mark.parametrize(
    "name", ["invalid.odcs.yaml", "invalid_multiple_errors.odcs.yaml", "invalid_multiple_schema_errors.odcs.yaml",
             "odcs_with_extra_top_level.yaml"],
)  # fmt: skip
def test_invalid_odcs_fixtures_fail_the_odcs_json_schema(name: str) -> None:
    result = lint(str(LINT / name), str(ODCS_LATEST))
    assert not result.valid
    # the JSON Schema finds what the built-in checks find (it may say more)
    assert set(INVALID[name]) <= set(result.errors)
    if name == "invalid_multiple_errors.odcs.yaml":
        assert len(result.errors) > 1


def test_custom_schemas_replace_the_standard() -> None:
    assert lint(str(LINT / "odcs_with_extra_top_level.yaml"), str(LINT / "odcs_with_extra_top_level.schema.json")).valid
    assert lint(str(LINT / "custom_datacontract.yaml"), str(LINT / "custom_datacontract.schema.json")).valid
    assert lint(str(LINT / "invalid_datacontract.yaml"), str(DCS_SCHEMA)).errors == ["$: 'id' is a required property"]
    assert lint(str(LINT / "valid_datacontract.yaml"), str(DCS_SCHEMA)).valid


def test_every_odcs_and_dcs_example_is_valid() -> None:
    odcs = sorted((TESTDATA / "odcs").rglob("*.yaml"))
    dcs = sorted((TESTDATA / "datacontract-specification").rglob("*.yaml"))
    assert len(odcs) >= 18 and dcs
    for path in odcs:
        assert lint(str(path)).valid, path
        assert lint(str(path), str(ODCS_LATEST)).valid, path  # dates kept as strings: the one that needs it passes
    for path in dcs:
        assert lint(str(path)).valid, path
        assert lint(str(path), str(DCS_SCHEMA)).valid, path


def test_the_packaged_schema_is_used_for_its_own_version(monkeypatch: pytest.MonkeyPatch) -> None:
    schema = json.loads(ODCS_LATEST.read_text())
    version = schema["properties"]["apiVersion"]["default"]  # v3.1.0
    monkeypatch.setattr(lint_module, "_packaged_odcs_schema", lambda: ("packaged.json", schema, version))
    used = lint(str(LINT / "valid-3.1.0.odcs.yaml"))
    assert used.valid and used.schema == "packaged.json"
    other = lint(str(LINT / "invalid.odcs.yaml"))  # v3.0.2: another version's schema is not applied to it
    assert other.schema is None and other.errors == ["$: 'status' is a required property"]
    assert "v3.1.0" in other.notes[0]


def test_the_cli_exit_codes() -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["lint", str(LINT / "valid.odcs.yaml")])
    assert ok.exit_code == 0 and "valid" in ok.stdout
    bad = runner.invoke(app, ["lint", str(LINT / "invalid.odcs.yaml"), "--json"])
    assert bad.exit_code == 1
    doc = json.loads(bad.stdout)
    assert doc["valid"] is False and doc["errors"] == ["$: 'status' is a required property"]
    with_schema = runner.invoke(
        app, ["lint", str(LINT / "odcs_with_extra_top_level.yaml"), "--schema",
              str(LINT / "odcs_with_extra_top_level.schema.json")],
    )  # fmt: skip
    assert with_schema.exit_code == 0, with_schema.stdout
    missing = runner.invoke(app, ["lint", "nope.yaml"])
    assert missing.exit_code == 2
