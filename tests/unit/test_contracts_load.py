"""Every ODCS and datacontract-specification example loads; unsupported parts are listed, not dropped."""

from __future__ import annotations

from pathlib import Path

import pytest

from oxiflow.contracts import load_contract
from oxiflow.contracts.model import ContractError
from oxiflow.contracts.odcs import read_yaml

TESTDATA = Path(__file__).resolve().parents[3] / "shared" / "testdata"
ODCS = sorted((TESTDATA / "odcs" / "examples").rglob("*.yaml"))
DCS = sorted((TESTDATA / "datacontract-specification").rglob("*.yaml"))


def test_corpus_is_there() -> None:
    assert len(ODCS) == 18 and len(DCS) == 7


@pytest.mark.parametrize("path", ODCS, ids=lambda p: p.relative_to(TESTDATA).as_posix())
def test_odcs_example_loads(path: Path) -> None:
    doc = read_yaml(str(path))
    contract = load_contract(str(path))
    assert contract.source_format == "odcs"
    # every schema object and every property of the document is in the model
    objects = doc.get("schema") or []
    assert [d.name for d in contract.datasets] == [o.get("name") or o.get("physicalName") for o in objects]
    for ds, obj in zip(contract.datasets, objects, strict=True):
        assert [f.name for f in ds.fields] == [p["name"] for p in obj.get("properties") or []]


@pytest.mark.parametrize("path", ODCS, ids=lambda p: p.relative_to(TESTDATA).as_posix())
def test_odcs_example_validates_against_the_json_schema(path: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is needed for this test (test extra)")
    import json

    schema = json.loads((TESTDATA / "odcs" / "schema" / "odcs-json-schema-latest.json").read_text())
    # dates stay strings in read_yaml: the one example SOURCES.md notes validates too
    jsonschema.validate(read_yaml(str(path)), schema)


@pytest.mark.parametrize("path", DCS, ids=lambda p: p.relative_to(TESTDATA).as_posix())
def test_dcs_example_loads(path: Path) -> None:
    doc = read_yaml(str(path))
    contract = load_contract(str(path))
    assert contract.source_format == "dcs"
    models = doc.get("models") or {}
    assert [d.name for d in contract.datasets] == list(models)
    for ds in contract.datasets:
        assert [f.name for f in ds.fields] == list(models[ds.name].get("fields") or {})


def test_dates_stay_strings() -> None:
    c = load_contract(str(TESTDATA / "odcs/examples/fundamentals/table-column-description.odcs.yaml"))
    assert c.datasets and c.datasets[0].fields


def test_unsupported_parts_are_reported() -> None:
    c = load_contract(str(TESTDATA / "odcs/examples/all/full-example.odcs.yaml"))
    assert "$.schema[0].relationships: foreign keys are not checked" in c.unsupported
    assert any(n.startswith("$.slaProperties[4]: retention") for n in c.unsupported)
    d = load_contract(str(TESTDATA / "datacontract-specification/examples/orders-latest/datacontract.yaml"))
    assert "$.models.line_items.fields.order_id.references: foreign keys are not checked" in d.unsupported
    # $ref to a local definition is resolved: order_id gets the definition's type
    order_id = d.dataset("orders").field("order_id")
    assert order_id is not None and order_id.logical_type == "string" and order_id.primary_key


def test_unknown_keys_are_kept_and_reported(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(
        "apiVersion: v3.0.2\nkind: DataContract\nid: x\nversion: 1.0.0\nstatus: draft\nmyExtension: 1\n"
        "schema:\n- name: t\n  properties:\n  - name: a\n    logicalType: integer\n    colour: red\n"
    )
    c = load_contract(str(p))
    assert c.unsupported == [
        "$.myExtension: unknown key, kept but not used",
        "$.schema[0].properties[0].colour: unknown key, kept but not used",
    ]


def test_field_model_from_odcs() -> None:
    c = load_contract(str(TESTDATA / "odcs/examples/data-types/all-data-types.odcs.yaml"))
    f = c.datasets[0].field("account_id")
    assert f is not None and (f.min_length, f.max_length, f.pattern) == (11, 11, "ACC[0-9]{8}")
    age = c.datasets[0].field("age")
    assert age is not None and (age.minimum, age.exclusive_maximum) == (18, 100)


@pytest.mark.parametrize("text", ["- a list", "just: [unclosed", "foo: 1"])
def test_not_a_contract_is_a_clear_error(tmp_path: Path, text: str) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ContractError) as exc:
        load_contract(str(p))
    assert str(p) in str(exc.value)
