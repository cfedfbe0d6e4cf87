"""The internal model every contract format converts to (ODCS v3, datacontract-specification).

Plain dataclasses: the loaders validate the documents; checks, diff, infer and mask read this.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from oxiflow.errors import OxiflowError, Terminal


class ContractError(Terminal, OxiflowError):
    """A contract document that cannot be used (unreadable, not a contract, bad rule); exit code 2."""

    exit_code = 2


# operators a quality rule compares its measured value with (ODCS v3 names)
OPERATORS = (
    "mustBe",
    "mustNotBe",
    "mustBeGreaterThan",
    "mustBeGreaterOrEqualTo",
    "mustBeLessThan",
    "mustBeLessOrEqualTo",
    "mustBeBetween",
    "mustNotBeBetween",
)


@dataclass
class QualityRule:
    """A row-level (on a field) or dataset-level rule: a library metric or a SQL query, and a bound."""

    type: str = "library"  # library | sql | text | custom
    metric: str | None = None  # nullValues, missingValues, invalidValues, duplicateValues, rowCount, ...
    query: str | None = None
    arguments: dict[str, Any] = field(default_factory=dict)
    operator: str | None = None  # one of OPERATORS
    value: Any = None  # the bound (a pair for mustBeBetween)
    unit: str = "rows"  # rows | percent
    name: str | None = None
    description: str | None = None
    dimension: str | None = None
    severity: str = "error"  # error fails the test; warning / info only report
    engine: str | None = None  # for type: custom (soda, great-expectations, ...): not run here

    def label(self) -> str:
        return self.name or self.description or self.metric or (self.query or "").strip().splitlines()[0][:60]


@dataclass
class Field:
    """A column (or a nested element of one: struct members in ``fields``, list items in ``items``)."""

    name: str
    logical_type: str | None = None  # ODCS logical types: string, integer, number, boolean, date, timestamp, ...
    physical_type: str | None = None  # as written: varchar(18), INT64, bigint, decimal(10,2), ...
    required: bool = False
    unique: bool = False
    primary_key: bool = False
    primary_key_position: int | None = None
    enum: list[Any] | None = None
    pattern: str | None = None
    minimum: Any = None
    maximum: Any = None
    exclusive_minimum: Any = None
    exclusive_maximum: Any = None
    min_length: int | None = None
    max_length: int | None = None
    precision: int | None = None
    scale: int | None = None
    format: str | None = None
    classification: str | None = None
    description: str | None = None
    tags: list[str] = field(default_factory=list)
    quality: list[QualityRule] = field(default_factory=list)
    fields: list[Field] = field(default_factory=list)
    items: Field | None = None
    physical_name: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)  # customProperties, kept for infer/mask

    @property
    def column(self) -> str:
        """The column name in the data (physicalName when given)."""
        return self.physical_name or self.name


@dataclass
class Dataset:
    """One schema object (ODCS) / model (datacontract-specification): a table, file set, topic."""

    name: str
    physical_name: str | None = None
    description: str | None = None
    fields: list[Field] = field(default_factory=list)
    quality: list[QualityRule] = field(default_factory=list)
    # ODCS schema-object customProperties / DCS model `config`: oxiflow reads its `oxiflow*` settings from here
    properties: dict[str, Any] = field(default_factory=dict)

    @property
    def table(self) -> str:
        return self.physical_name or self.name

    def field(self, name: str) -> Field | None:
        return next((f for f in self.fields if f.name == name), None)

    def primary_key(self) -> list[str]:
        keys = [f for f in self.fields if f.primary_key]
        return [f.name for f in sorted(keys, key=lambda f: f.primary_key_position or 0)]


@dataclass
class Server:
    name: str
    type: str | None = None
    path: str | None = None
    format: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class SlaProperty:
    """freshness / latency / retention / frequency ...: kept and reported, checked when ``freshness``-like."""

    property: str
    value: Any = None
    unit: str | None = None
    element: str | None = None


@dataclass
class Contract:
    id: str | None
    name: str | None
    version: str | None
    source_format: str  # "odcs" or "dcs"
    api_version: str | None = None
    status: str | None = None
    description: str | None = None
    datasets: list[Dataset] = field(default_factory=list)
    servers: list[Server] = field(default_factory=list)
    sla: list[SlaProperty] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)  # parts kept but not acted on, as "path: why"
    path: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)  # top-level customProperties (ODCS)

    def dataset(self, name: str | None) -> Dataset:
        """The dataset called ``name``, or the only one when ``name`` is None."""
        if name is None:
            if len(self.datasets) == 1:
                return self.datasets[0]
            names = ", ".join(d.name for d in self.datasets) or "none"
            raise ContractError(
                f"the contract has {len(self.datasets)} datasets ({names})",
                file=self.path,
                hint="name one with --dataset",
            )
        for ds in self.datasets:
            if name in (ds.name, ds.physical_name):
                return ds
        raise ContractError(
            f"no dataset {name!r} in the contract",
            file=self.path,
            hint=f"datasets: {', '.join(d.name for d in self.datasets)}",
        )
