"""`contract diff` golden cases per rule, `infer` PII precision/recall, `mask` goldens."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from oxiflow.contracts import load_contract
from oxiflow.contracts.diff import diff_contracts
from oxiflow.contracts.infer import infer_contract
from oxiflow.contracts.mask import REDACTED, Mask, MaskConfig
from oxiflow.data import OxiData
from oxiflow.oxi import StepContext

BASE = {
    "apiVersion": "v3.0.2",
    "kind": "DataContract",
    "id": "orders",
    "version": "1.0.0",
    "status": "active",
    "schema": [
        {
            "name": "orders",
            "properties": [
                {"name": "id", "logicalType": "integer", "physicalType": "int64", "required": True, "primaryKey": True},
                {"name": "qty", "logicalType": "integer", "physicalType": "int32"},
                {"name": "price", "logicalType": "number", "physicalType": "float"},
                {
                    "name": "code",
                    "logicalType": "string",
                    "logicalTypeOptions": {"pattern": "^[A-Z]+$", "maxLength": 10},
                },
                {"name": "amount", "logicalType": "number", "logicalTypeOptions": {"minimum": 0, "maximum": 100}},
                {"name": "note", "logicalType": "string", "description": "free text", "tags": ["a"]},
                {"name": "status", "logicalType": "string", "enum": ["new", "paid"]},
            ],
        }
    ],
}


def _props(doc: dict) -> dict:
    return {p["name"]: p for p in doc["schema"][0]["properties"]}


def _edit(doc: dict, field: str, **changes: object) -> None:
    prop = _props(doc)[field]
    for key, value in changes.items():
        if value is None:
            prop.pop(key, None)
        else:
            prop[key] = value


def _opts(field: str, **o: object):
    def edit(d: dict) -> None:
        _props(d)[field].setdefault("logicalTypeOptions", {}).update(o)

    return edit


CASES = [
    # (name, edit of the new version, expected {(kind, breaking)})
    ("field removed", lambda d: d["schema"][0]["properties"].pop(), {("field_removed", True)}),
    (
        "optional field added",
        lambda d: d["schema"][0]["properties"].append({"name": "x", "logicalType": "string"}),
        {("field_added_optional", False)},
    ),
    (
        "required field added",
        lambda d: d["schema"][0]["properties"].append({"name": "x", "required": True}),
        {("field_added_required", True)},
    ),
    ("int64 -> int32", lambda d: _edit(d, "id", physicalType="int32"), {("type_narrowed", True)}),
    ("string -> int", lambda d: _edit(d, "code", logicalType="integer"), {("type_narrowed", True)}),
    ("int32 -> int64", lambda d: _edit(d, "qty", physicalType="bigint"), {("type_widened", False)}),
    ("float -> double", lambda d: _edit(d, "price", physicalType="double"), {("type_widened", False)}),
    (
        "int32 -> decimal(12,2)",
        lambda d: _edit(d, "qty", logicalType="number", physicalType="decimal(12,2)"),
        {("type_widened", False)},
    ),
    (
        "int32 -> decimal(10,2) too narrow",
        lambda d: _edit(d, "qty", logicalType="number", physicalType="decimal(10,2)"),
        {("type_narrowed", True)},
    ),
    ("optional -> required", lambda d: _edit(d, "note", required=True), {("required", True)}),
    ("required -> optional", lambda d: _edit(d, "id", required=False), {("optional", False)}),
    ("enum value removed", lambda d: _edit(d, "status", enum=["new"]), {("enum_value_removed", True)}),
    ("enum value added", lambda d: _edit(d, "status", enum=["new", "paid", "gone"]), {("enum_value_added", False)}),
    ("minimum raised", _opts("amount", minimum=1), {("minimum_tightened", True)}),
    ("maximum raised", _opts("amount", maximum=200), {("maximum_loosened", False)}),
    ("maximum lowered", _opts("amount", maximum=50), {("maximum_tightened", True)}),
    ("maxLength lowered", _opts("code", maxLength=5), {("max_length_tightened", True)}),
    ("maxLength raised", _opts("code", maxLength=50), {("max_length_loosened", False)}),
    ("pattern changed", _opts("code", pattern="^[A-Z0-9]+$"), {("pattern_changed", True)}),
    (
        "primary key changed",
        lambda d: _edit(d, "qty", primaryKey=True, primaryKeyPosition=2),
        {("primary_key_changed", True)},
    ),
    (
        "description and tags",
        lambda d: _edit(d, "note", description="notes", tags=["a", "b"]),
        {("description", False), ("tags", False)},
    ),
]


@pytest.mark.parametrize(("edit", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_diff_rule(tmp_path: Path, edit, expected: set) -> None:
    import copy

    new = copy.deepcopy(BASE)
    edit(new)
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(BASE))
    (tmp_path / "new.yaml").write_text(yaml.safe_dump(new))
    changes = diff_contracts(load_contract(str(tmp_path / "old.yaml")), load_contract(str(tmp_path / "new.yaml")))
    assert {(c.kind, c.breaking) for c in changes} == expected


def test_diff_identical_is_empty(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(BASE))
    assert diff_contracts(load_contract(str(tmp_path / "a.yaml")), load_contract(str(tmp_path / "a.yaml"))) == []


# -- infer + PII ---------------------------------------------------------------------------------


def _luhn_digit(body: str) -> str:
    """The check digit that makes body+digit pass Luhn (computed here, independently of pii.py)."""
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d * 2 > 9 else d * 2
        total += d
    return str((10 - total % 10) % 10)


def _iban(country: str, bban: str) -> str:
    digits = "".join(str(int(c, 36)) for c in bban + country + "00")
    return f"{country}{98 - int(digits) % 97:02d}{bban}"


def _pii_table(n: int = 300) -> tuple[pa.Table, set[str]]:
    rnd = random.Random(7)
    firsts = ["Anna", "Bernd", "Chloé", "David", "Eva", "Farid", "Grace", "Hiro", "Ines", "José"]
    lasts = ["Müller", "Smith", "O'Brien", "García", "Nguyen", "Rossi", "Kowalski", "Dubois", "Sato", "Ahmed-Khan"]
    cards, not_cards = [], []
    for _ in range(n):
        body = "4" + "".join(rnd.choice("0123456789") for _ in range(14))
        cards.append(body + _luhn_digit(body))
        wrong = str((int(_luhn_digit(body)) + 1 + rnd.randrange(9)) % 10)
        not_cards.append(body + wrong)  # looks like a card number, fails Luhn
    table = pa.table(
        {
            "customer_id": list(range(1, n + 1)),
            "email": [f"{rnd.choice(firsts).lower()}.{i}@example{i % 4}.com" for i in range(n)],
            "phone": [
                f"+49 30 {rnd.randrange(1000000, 9999999)}"
                if i % 2
                else f"(030) {rnd.randrange(1000, 9999)}-{rnd.randrange(1000, 9999)}"
                for i in range(n)
            ],
            "card_number": cards,
            "ip": [
                f"{rnd.randrange(1, 255)}.{rnd.randrange(256)}.{rnd.randrange(256)}.{rnd.randrange(256)}"
                for _ in range(n)
            ],
            "ip6": [f"2001:db8:{rnd.randrange(65536):x}::{rnd.randrange(65536):x}" for _ in range(n)],
            "iban": [_iban("DE", f"{rnd.randrange(10**17, 10**18)}") for _ in range(n)],
            "first_name": [rnd.choice(firsts) for _ in range(n)],
            "last_name": [rnd.choice(lasts) for _ in range(n)],
            "order_number": not_cards,
            "order_number_int": [int(x) for x in not_cards],
            "amount": [round(rnd.uniform(1, 999), 2) for _ in range(n)],
            "amount_text": [f"{rnd.uniform(1, 999):.2f}" for _ in range(n)],
            "order_date": [f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}" for i in range(n)],
            "order_code": [f"ORD-2024-{i:06d}" for i in range(n)],
            "zip": [f"{rnd.randrange(10000, 99999)}" for _ in range(n)],
            "status": [rnd.choice(["new", "paid", "shipped"]) for _ in range(n)],
            "product_name": [rnd.choice(["Desk Lamp", "Office Chair", "Monitor"]) for _ in range(n)],
        }
    )
    pii = {"email", "phone", "card_number", "ip", "ip6", "iban", "first_name", "last_name"}
    return table, pii


def test_infer_flags_pii_with_precision_and_recall_1(tmp_path: Path) -> None:
    table, pii = _pii_table()
    path = tmp_path / "customers.parquet"
    pq.write_table(table, path)
    doc = yaml.safe_load(infer_contract(str(path)))
    props = {p["name"]: p for p in doc["schema"][0]["properties"]}
    flagged = {n for n, p in props.items() if p.get("classification") == "pii"}
    assert flagged == pii
    kinds = {n: props[n]["customProperties"][0]["value"] for n in flagged}
    assert kinds == {
        "email": "email",
        "phone": "phone",
        "card_number": "card_number",
        "ip": "ip_address",
        "ip6": "ip_address",
        "iban": "iban",
        "first_name": "name",
        "last_name": "name",
    }


def test_infer_types_nulls_uniques_enums_ranges(tmp_path: Path) -> None:
    table, _ = _pii_table(200)
    table = table.append_column("maybe", pa.array([None if i % 3 == 0 else i for i in range(200)], pa.int64()))
    path = tmp_path / "t.parquet"
    pq.write_table(table, path)
    text = infer_contract(str(path))
    doc = yaml.safe_load(text)
    props = {p["name"]: p for p in doc["schema"][0]["properties"]}
    assert props["customer_id"]["unique"] and props["customer_id"]["required"]
    assert props["customer_id"]["logicalTypeOptions"] == {"minimum": 1, "maximum": 200}
    assert props["maybe"]["required"] is False
    assert props["amount"]["logicalType"] == "number"
    assert props["amount"]["logicalTypeOptions"] == {
        "minimum": min(table["amount"].to_pylist()),
        "maximum": max(table["amount"].to_pylist()),
    }
    assert props["status"]["quality"][0]["arguments"]["validValues"] == sorted(set(table["status"].to_pylist()))
    assert "quality" not in props["zip"]  # high cardinality: no enum
    # the draft is a valid ODCS document, loads, and the data passes it
    from oxiflow.contracts.runner import run_contract

    contract_path = tmp_path / "t.odcs.yaml"
    contract_path.write_text(text)
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is needed for this test (test extra)")
    import json

    testdata = Path(__file__).resolve().parents[3] / "shared" / "testdata"
    jsonschema.validate(doc, json.loads((testdata / "odcs/schema/odcs-json-schema-latest.json").read_text()))
    assert run_contract(load_contract(str(contract_path)), str(path)).passed


# -- mask ----------------------------------------------------------------------------------------


def _mask(config: dict, table: pa.Table) -> pa.Table:
    m = Mask(MaskConfig.model_validate(config))
    ctx = StepContext(step_id="mask", oxi_name="mask", run_id="r", base_dir=Path.cwd())
    return m.transform([OxiData.from_table(table)], ctx).read_all()


PEOPLE = pa.table(
    {
        "id": pa.array([1, 2, 3], pa.int64()),
        "email": ["a@x.org", None, "c@y.com"],
        "name": ["Anna", "Bob", "Chloé"],
        "card": ["4111111111111111", "5500005555555559", None],
        "age": pa.array([30, None, 41], pa.int32()),
    }
)


def test_mask_hash_is_salted_sha256_and_deterministic() -> None:
    out = _mask({"columns": {"email": "hash"}, "salt": "pepper"}, PEOPLE)
    expected = [
        None if v is None else hashlib.sha256(("pepper" + v).encode()).hexdigest() for v in PEOPLE["email"].to_pylist()
    ]
    assert out["email"].to_pylist() == expected
    assert _mask({"columns": {"email": "hash"}, "salt": "pepper"}, PEOPLE).equals(out)
    assert _mask({"columns": {"email": "hash"}, "salt": "salt2"}, PEOPLE)["email"] != out["email"]
    unsalted = _mask({"columns": {"email": "hash"}}, PEOPLE)["email"].to_pylist()
    assert unsalted[0] not in (expected[0], hashlib.sha256(b"a@x.org").hexdigest())
    assert out.column_names == PEOPLE.column_names and out["id"].equals(PEOPLE["id"])


def test_mask_redact_truncate_drop_tokenize() -> None:
    out = _mask(
        {
            "columns": {"email": "redact", "age": "redact", "name": "truncate", "id": "drop", "card": "tokenize"},
            "keep": 2,
            "key": "k",
        },
        PEOPLE,
    )
    assert out.column_names == ["email", "name", "card", "age"]
    assert out["email"].to_pylist() == [REDACTED, None, REDACTED]
    assert out["age"].to_pylist() == [None, None, None] and out.schema.field("age").type == pa.int32()
    assert out["name"].to_pylist() == ["An", "Bo", "Ch"]
    tokens = out["card"].to_pylist()
    assert tokens[2] is None and all(t.startswith("tok_") and len(t) == 28 for t in tokens[:2])
    again = _mask({"columns": {"card": "tokenize"}, "key": "k"}, PEOPLE)["card"].to_pylist()
    other = _mask({"columns": {"card": "tokenize"}, "key": "k2"}, PEOPLE)["card"].to_pylist()
    assert again == tokens and other[:2] != tokens[:2]


def test_mask_by_contract_classification(tmp_path: Path) -> None:
    contract = tmp_path / "people.odcs.yaml"
    contract.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v3.0.2",
                "kind": "DataContract",
                "id": "p",
                "version": "1",
                "status": "active",
                "schema": [
                    {
                        "name": "people",
                        "properties": [
                            {"name": "email", "classification": "pii"},
                            {"name": "card", "classification": "restricted"},
                            {"name": "name", "classification": "public"},
                        ],
                    }
                ],
            }
        )
    )
    out = _mask(
        {"contract": str(contract), "classifications": {"pii": "hash", "restricted": "drop"}, "salt": "s"}, PEOPLE
    )
    assert out.column_names == ["id", "email", "name", "age"]
    assert out["name"].equals(PEOPLE["name"]) and out["email"][0].as_py() == hashlib.sha256(b"sa@x.org").hexdigest()


def test_mask_unknown_column_is_a_config_error() -> None:
    from oxiflow.errors import ConfigError

    with pytest.raises(ConfigError):
        _mask({"columns": {"nope": "hash"}, "salt": "s"}, PEOPLE)
