"""What a contract demands of a stream, shared by the ``validate`` step and a sink's ``contract:``.

- :func:`contract_settings`: the enforcement settings a contract declares for itself, as ODCS
  ``customProperties`` (``oxiflowSchemaContract``, ``oxiflowCompatibility``, ``oxiflowMaxInvalidRatio``) on the
  contract (every dataset) or on one schema object (that dataset; it wins), or the same keys in a
  datacontract-specification model's ``config``. A step's own keys win over both.
- :func:`contract_shape`: the contract's dataset as an Arrow schema (the baseline of a dataset with no registered
  version) and which columns the contract fixes the type of / requires, which the schema-contract modes treat
  differently from the rest (contracts/enforce.py).

docs/schema-evolution.md has the rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from oxiflow.config.model import SchemaContractModel, SchemaMode
from oxiflow.contracts.model import Contract, ContractError, Dataset

if TYPE_CHECKING:
    import pyarrow as pa

# custom property (ODCS, camelCase as the standard asks) -> setting
PROPERTIES = {
    "oxiflowSchemaContract": "schema_contract",
    "oxiflowCompatibility": "compatibility",
    "oxiflowMaxInvalidRatio": "max_invalid_ratio",
}


class ContractSettings(BaseModel):
    """Enforcement settings declared in a contract (each None: not declared)."""

    model_config = ConfigDict(extra="forbid")

    schema_contract: SchemaMode | SchemaContractModel | None = None
    """Schema-contract modes: one mode, or per entity `{tables, columns, data_type}`."""
    compatibility: Literal["backward", "forward", "full", "none"] | None = None
    """The compatibility a new schema version must have with the registered one (sinks)."""
    max_invalid_ratio: float | None = Field(None, ge=0, le=1)
    """Above this share of invalid rows the step fails and nothing downstream commits."""


def contract_settings(contract: Contract, ds: Dataset) -> ContractSettings:
    """The settings ``contract`` declares for ``ds`` (dataset-level properties win over contract-level ones)."""
    merged: dict[str, Any] = {}
    for where, props in (("the contract", contract.properties), (f"dataset {ds.name}", ds.properties)):
        for prop, value in props.items():
            if prop in PROPERTIES:
                merged[PROPERTIES[prop]] = (where, prop, value)
    try:
        return ContractSettings.model_validate({key: value for key, (_, _, value) in merged.items()})
    except ValidationError as exc:
        first = exc.errors()[0]
        key = str(first["loc"][0])
        where, prop, value = merged[key]
        raise ContractError(
            f"custom property {prop} of {where}: {value!r} is not valid ({first['msg']})",
            file=contract.path,
            hint="oxiflowSchemaContract: evolve|freeze|discard_row|discard_value or {tables, columns, data_type}; "
            "oxiflowCompatibility: backward|forward|full|none; oxiflowMaxInvalidRatio: 0..1",
        ) from None


@dataclass
class ContractShape:
    """Columns the contract speaks for: ``typed`` ones have their type fixed by the contract (values are cast to the
    dataset's type, never a reason to change it); ``required`` ones stay NOT NULL (the contract's `required` rule
    sends rows with a null to the dead-letter queue)."""

    typed: set[str] = field(default_factory=set)
    required: set[str] = field(default_factory=set)


def contract_shape(ds: Dataset, incoming: pa.Schema) -> tuple[pa.Schema, ContractShape]:
    """The contract's dataset as an Arrow schema (declared physical types, else the logical type's natural Arrow
    type; a field whose type the contract leaves open takes the data's type) and what it fixes."""
    import pyarrow as pa

    from oxiflow.contracts.types import declared_type, normalize_logical

    logical = {
        "integer": pa.int64(), "number": pa.float64(), "string": pa.string(), "boolean": pa.bool_(),
        "date": pa.date32(), "timestamp": pa.timestamp("us"),
    }  # fmt: skip
    fields = []
    shape = ContractShape()
    for f in ds.fields:
        t = declared_type(f) or logical.get(normalize_logical(f.logical_type) or "")
        if t is None:
            t = incoming.field(f.column).type if f.column in incoming.names else pa.string()
        else:
            shape.typed.add(f.column)
        if f.required:
            shape.required.add(f.column)
        fields.append(pa.field(f.column, t, nullable=not f.required))
    return pa.schema(fields), shape


def contract_dataset(contract: Contract, table: str | None, dataset: str | None = None) -> Dataset:
    """The dataset of ``contract`` a step means: ``dataset`` when given, else the one named like the sink's table,
    else the only one."""
    if dataset is not None:
        return contract.dataset(dataset)
    names = {d.name for d in contract.datasets} | {d.table for d in contract.datasets}
    return contract.dataset(table if table in names else None)
