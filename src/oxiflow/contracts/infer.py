"""``contract infer``: a draft ODCS v3 contract from data, with likely PII classified.

One aggregate query gives per column: non-null count, exact distinct count, min and max; a
second pass per low-cardinality string column lists its values (enums); the PII detectors look
at the first ``sample`` non-null values of each string/integer column.
"""

from __future__ import annotations

import datetime
import decimal
from pathlib import Path
from typing import Any

from oxiflow.contracts.checks import DataShape
from oxiflow.contracts.types import family, logical_of
from oxiflow.engine.duck import ident

ENUM_MAX_VALUES = 10  # a string column with at most this many distinct values ...
ENUM_MIN_ROWS_PER_VALUE = 5  # ... each seen this often on average, becomes an enum
RANGE_FAMILIES = {"integer", "float", "decimal", "date", "timestamp"}


def infer_contract(path: str, *, fmt: str | None = None, name: str | None = None, sample: int = 10_000) -> str:
    """The draft contract for the data at ``path``, as ODCS v3 YAML text."""
    import yaml

    from oxiflow.contracts.runner import open_relation, shape_of

    dataset = name or _name_of(path)
    with open_relation(path, fmt) as (con, relation, sniffed):
        shape = shape_of(con, relation, sniffed)
        properties, rows = _properties(con, relation, shape, sample)
    doc = {
        "apiVersion": "v3.0.2",
        "kind": "DataContract",
        "id": dataset,
        "name": dataset,
        "version": "0.1.0",
        "status": "draft",
        "description": {"purpose": f"Draft inferred by oxiflow from {path} ({rows} rows): review before use."},
        "schema": [{"name": dataset, "physicalType": "table", "properties": properties}],
    }
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


def _name_of(path: str) -> str:
    import re

    base = path.rpartition("::")[2] if "::" in path else Path(path.rstrip("/")).name
    stem = base.split(".")[0] or "dataset"
    return re.sub(r"\W+", "_", stem).strip("_") or "dataset"


def _properties(con: Any, relation: str, shape: DataShape, sample: int) -> tuple[list[dict[str, Any]], int]:
    from oxiflow.contracts.pii import detect

    exprs = ["count(*)"]
    for f in shape.schema:
        col = ident(f.name)
        fam = family(f.type)
        exprs.append(f"count({col})")
        exprs.append(f"count(DISTINCT {col})" if fam not in ("list", "struct", "map") else "NULL")
        ranged = fam in RANGE_FAMILIES
        exprs.append(f"min({col})" if ranged else "NULL")
        exprs.append(f"max({col})" if ranged else "NULL")
    row = con.execute(f"SELECT {', '.join(exprs)} FROM {relation}").fetchone()
    rows = int(row[0])
    props = []
    for i, f in enumerate(shape.schema):
        nonnull, distinct, lo, hi = row[1 + 4 * i : 5 + 4 * i]
        fam = family(f.type)
        prop: dict[str, Any] = {
            "name": f.name,
            "logicalType": logical_of(f.type),
            "physicalType": shape.duck_types.get(f.name, str(f.type)),
            "required": rows > 0 and nonnull == rows,
        }
        pii = detect(con, relation, f.name, fam, sample)
        if distinct is not None and nonnull > 1 and distinct == nonnull and fam in ("integer", "string"):
            prop["unique"] = True
        options: dict[str, Any] = {}
        if fam in RANGE_FAMILIES and lo is not None and not pii:
            options["minimum"], options["maximum"] = _plain(lo), _plain(hi)
        if (
            fam == "string"
            and not pii
            and distinct
            and distinct <= ENUM_MAX_VALUES
            and nonnull >= distinct * ENUM_MIN_ROWS_PER_VALUE
        ):
            values = con.execute(
                f"SELECT DISTINCT {ident(f.name)} FROM {relation} WHERE {ident(f.name)} IS NOT NULL ORDER BY 1"
            ).fetchall()
            # ODCS has no enum keyword: an invalidValues rule with the valid values is its enum
            prop["quality"] = [
                {
                    "type": "library",
                    "metric": "invalidValues",
                    "arguments": {"validValues": [v[0] for v in values]},
                    "mustBe": 0,
                }
            ]
        if options:
            prop["logicalTypeOptions"] = options
        if pii:
            prop["classification"] = "pii"
            prop["tags"] = [f"pii:{pii}"]
            prop["customProperties"] = [{"property": "piiKind", "value": pii}]
        props.append(prop)
    return props, rows


def _plain(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    return value
