"""Load Open Data Contract Standard v3 documents (and dispatch datacontract-specification ones).

The pydantic models below name every ODCS v3.0/v3.1 key we act on or knowingly keep as
information; anything else is kept (``extra="allow"``) and reported in ``Contract.unsupported``,
as are known parts we do not enforce (relationships, custom-engine quality rules, ...). A contract
therefore loads unchanged whatever it holds, and says what oxiflow will not check.

YAML is read with ``safe_load`` semantics but timestamps stay strings: ODCS dates are strings in
its JSON schema, and a ``2022-10-03`` turned into a ``date`` would then fail it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic import Field as PydanticField

from oxiflow.contracts.model import (
    OPERATORS,
    Contract,
    ContractError,
    Dataset,
    Field,
    QualityRule,
    Server,
    SlaProperty,
)
from oxiflow.contracts.types import normalize_logical


class _StringDates(yaml.SafeLoader):
    """SafeLoader without the timestamp resolver: dates and times stay the strings they were."""


_StringDates.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def read_yaml(path: str) -> Any:
    """The document at ``path`` (YAML or JSON), timestamps kept as strings."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ContractError(f"cannot read the contract: {exc.strerror or exc}", file=path) from None
    try:
        return yaml.load(text, Loader=_StringDates)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ContractError(
            f"not valid YAML: {getattr(exc, 'problem', None) or exc}",
            file=path,
            line=mark.line + 1 if mark else None,
            column=mark.column + 1 if mark else None,
        ) from None


def load_document(path: str) -> Contract:
    """A contract file of either format, told apart by ``apiVersion``/``kind`` vs ``dataContractSpecification``."""
    doc = read_yaml(path)
    if not isinstance(doc, dict):
        raise ContractError("not a data contract: the document is not a mapping", file=path)
    if "dataContractSpecification" in doc:
        from oxiflow.contracts.dcs import from_dcs

        return from_dcs(doc, path)
    if "apiVersion" in doc or doc.get("kind") == "DataContract" or "schema" in doc:
        return from_odcs(doc, path)
    raise ContractError(
        "not a data contract: neither ODCS (apiVersion, kind: DataContract) nor datacontract-specification",
        file=path,
        hint="an ODCS v3 contract starts with apiVersion: v3.0.2 and kind: DataContract",
    )


class _Part(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class OdcsQuality(_Part):
    type: str | None = None
    metric: str | None = None
    rule: str | None = None  # v3.0 name of metric
    arguments: dict[str, Any] | None = None
    validValues: list[Any] | None = None  # v3.0: on the rule itself
    query: str | None = None
    name: str | None = None
    description: str | None = None
    dimension: str | None = None
    severity: str | None = None
    unit: str | None = None
    engine: str | None = None
    implementation: Any = None
    mustBe: Any = None
    mustNotBe: Any = None
    mustBeGreaterThan: Any = None
    mustBeGreaterOrEqualTo: Any = None
    mustBeGreaterThanOrEqualTo: Any = None  # an older spelling
    mustBeLessThan: Any = None
    mustBeLessOrEqualTo: Any = None
    mustBeLessThanOrEqualTo: Any = None
    mustBeBetween: list[Any] | None = None
    mustNotBeBetween: list[Any] | None = None
    # information: kept, not acted on
    id: Any = None
    method: Any = None
    businessImpact: Any = None
    schedule: Any = None
    scheduler: Any = None
    customProperties: Any = None
    authoritativeDefinitions: Any = None
    tags: Any = None
    toolRuleName: Any = None


class OdcsProperty(_Part):
    name: str | None = None
    physicalName: str | None = None
    logicalType: str | None = None
    physicalType: str | None = None
    logicalTypeOptions: dict[str, Any] | None = None
    required: bool | None = None
    unique: bool | None = None
    primaryKey: bool | None = None
    primaryKeyPosition: int | None = None
    classification: str | None = None
    description: str | None = None
    tags: list[Any] | None = None
    quality: list[OdcsQuality] | None = None
    properties: list[OdcsProperty] | None = None
    items: OdcsProperty | None = None
    customProperties: list[dict[str, Any]] | None = None
    enum: list[Any] | None = None  # not ODCS, but written by some tools: honoured
    relationships: Any = None  # foreign keys: not checked
    # information
    id: Any = None
    businessName: Any = None
    partitioned: Any = None
    partitionKeyPosition: Any = None
    criticalDataElement: Any = None
    encryptedName: Any = None
    transformSourceObjects: Any = None
    transformLogic: Any = None
    transformDescription: Any = None
    examples: Any = None
    authoritativeDefinitions: Any = None


class OdcsSchema(_Part):
    name: str | None = None
    physicalName: str | None = None
    physicalType: str | None = None
    logicalType: str | None = None
    description: str | None = None
    properties: list[OdcsProperty] | None = None
    quality: list[OdcsQuality] | None = None
    relationships: Any = None
    id: Any = None
    businessName: Any = None
    authoritativeDefinitions: Any = None
    tags: Any = None
    customProperties: Any = None
    dataGranularityDescription: Any = None


class OdcsSla(_Part):
    property: str | None = None
    value: Any = None
    valueExt: Any = None
    unit: str | None = None
    element: str | None = None
    driver: Any = None
    description: Any = None
    id: Any = None
    scheduler: Any = None
    schedule: Any = None


class OdcsServer(_Part):
    server: str | None = None
    type: str | None = None
    path: str | None = None
    format: str | None = None


class OdcsContract(_Part):
    apiVersion: str | None = None
    kind: str | None = None
    id: Any = None
    name: str | None = None
    version: Any = None
    status: str | None = None
    description: Any = None
    schema_: list[OdcsSchema] | None = PydanticField(None, alias="schema")  # `schema` is pydantic's
    servers: list[OdcsServer] | None = None
    slaProperties: list[OdcsSla] | None = None
    slaDefaultElement: str | None = None
    # information
    tenant: Any = None
    tags: Any = None
    domain: Any = None
    dataProduct: Any = None
    support: Any = None
    price: Any = None
    team: Any = None
    roles: Any = None
    authoritativeDefinitions: Any = None
    customProperties: Any = None
    contractCreatedTs: Any = None

    model_config = ConfigDict(extra="allow", populate_by_name=True)


# ODCS logical types we check; others (e.g. a typo) are reported
LOGICAL_TYPES = {"string", "integer", "number", "boolean", "date", "timestamp", "time", "object", "array"}
# logicalTypeOptions keys we enforce; the rest are reported
_OPTIONS_USED = {
    "minLength",
    "maxLength",
    "pattern",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "format",
    "enum",
    "timezone",
    "defaultTimezone",
}
METRICS = {"nullValues", "missingValues", "invalidValues", "duplicateValues", "rowCount"}
_RULE_TO_METRIC = {"nullCheck": "nullValues", "duplicateCount": "duplicateValues", "validValues": "invalidValues"}
_SLA_CHECKED = {"latency", "freshness"}


class _Notes:
    def __init__(self) -> None:
        self.items: list[str] = []

    def extra(self, where: str, part: BaseModel) -> None:
        for key in part.model_extra or {}:
            self.items.append(f"{where}.{key}: unknown key, kept but not used")

    def add(self, where: str, why: str) -> None:
        self.items.append(f"{where}: {why}")


def from_odcs(doc: dict[str, Any], path: str) -> Contract:
    try:
        odcs = OdcsContract.model_validate(doc)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        raise ContractError(f"not a valid ODCS contract: {problems}", file=path) from None
    notes = _Notes()
    notes.extra("$", odcs)
    if odcs.apiVersion and not str(odcs.apiVersion).startswith("v3"):
        notes.add("$.apiVersion", f"{odcs.apiVersion}: only ODCS v3 is supported, read as v3")
    datasets = []
    for i, obj in enumerate(odcs.schema_ or []):
        where = f"$.schema[{i}]"
        notes.extra(where, obj)
        if obj.relationships:
            notes.add(f"{where}.relationships", "foreign keys are not checked")
        fields = [_field(p, f"{where}.properties[{j}]", notes) for j, p in enumerate(obj.properties or [])]
        quality = [_rule(q, f"{where}.quality[{j}]", notes) for j, q in enumerate(obj.quality or [])]
        datasets.append(
            Dataset(
                name=obj.name or obj.physicalName or f"schema_{i}",
                physical_name=obj.physicalName,
                description=obj.description,
                fields=fields,
                quality=quality,
                properties=custom_properties(obj.customProperties),
            )
        )
    sla = []
    for i, s in enumerate(odcs.slaProperties or []):
        notes.extra(f"$.slaProperties[{i}]", s)
        prop = s.property or ""
        if prop not in _SLA_CHECKED:
            notes.add(f"$.slaProperties[{i}]", f"{prop}: kept, not checked against data")
        sla.append(SlaProperty(prop, s.value, s.unit, s.element or odcs.slaDefaultElement))
    servers = [
        Server(s.server or f"server_{i}", s.type, s.path, s.format, dict(s.model_extra or {}))
        for i, s in enumerate(odcs.servers or [])
    ]
    return Contract(
        id=None if odcs.id is None else str(odcs.id),
        name=odcs.name,
        version=None if odcs.version is None else str(odcs.version),
        source_format="odcs",
        api_version=odcs.apiVersion,
        status=odcs.status,
        description=odcs.description if isinstance(odcs.description, str) else None,
        datasets=datasets,
        servers=servers,
        sla=sla,
        unsupported=notes.items,
        path=path,
        properties=custom_properties(odcs.customProperties),
    )


def custom_properties(value: Any) -> dict[str, Any]:
    """ODCS ``customProperties`` (a list of ``{property, value}``) as a mapping; anything else: empty."""
    if not isinstance(value, list):
        return {}
    return {str(c.get("property")): c.get("value") for c in value if isinstance(c, dict) and "property" in c}


def _field(p: OdcsProperty, where: str, notes: _Notes) -> Field:
    notes.extra(where, p)
    if p.relationships:
        notes.add(f"{where}.relationships", "foreign keys are not checked")
    logical = normalize_logical(p.logicalType)
    if p.logicalType and logical not in LOGICAL_TYPES:
        notes.add(f"{where}.logicalType", f"{p.logicalType!r} is not an ODCS logical type: its values are not checked")
    opts = dict(p.logicalTypeOptions or {})
    for key in opts:
        if key not in _OPTIONS_USED:
            notes.add(f"{where}.logicalTypeOptions.{key}", "not checked")
    minimum, maximum = opts.get("minimum"), opts.get("maximum")
    exclusive_min, exclusive_max = opts.get("exclusiveMinimum"), opts.get("exclusiveMaximum")
    if isinstance(exclusive_min, bool):  # JSON-Schema draft 4 style: a flag on minimum
        exclusive_min, minimum = (minimum, None) if exclusive_min else (None, minimum)
    if isinstance(exclusive_max, bool):
        exclusive_max, maximum = (maximum, None) if exclusive_max else (None, maximum)
    properties = custom_properties(p.customProperties)
    return Field(
        name=p.name or p.physicalName or ("[]" if where.endswith(".items") else ""),
        physical_name=p.physicalName,
        logical_type=logical,
        physical_type=p.physicalType,
        required=bool(p.required),
        unique=bool(p.unique),
        primary_key=bool(p.primaryKey),
        primary_key_position=p.primaryKeyPosition if p.primaryKeyPosition and p.primaryKeyPosition > 0 else None,
        enum=p.enum if p.enum is not None else opts.get("enum"),
        pattern=opts.get("pattern"),
        minimum=minimum,
        maximum=maximum,
        exclusive_minimum=exclusive_min,
        exclusive_maximum=exclusive_max,
        min_length=opts.get("minLength"),
        max_length=opts.get("maxLength"),
        format=opts.get("format"),
        classification=p.classification,
        description=p.description,
        tags=[str(t) for t in p.tags or []],
        quality=[_rule(q, f"{where}.quality[{j}]", notes) for j, q in enumerate(p.quality or [])],
        fields=[_field(c, f"{where}.properties[{j}]", notes) for j, c in enumerate(p.properties or [])],
        items=_field(p.items, f"{where}.items", notes) if p.items else None,
        properties=properties,
    )


def _rule(q: OdcsQuality, where: str, notes: _Notes) -> QualityRule:
    notes.extra(where, q)
    rtype = (q.type or "library").lower()
    metric = q.metric or (_RULE_TO_METRIC.get(q.rule, q.rule) if q.rule else None)
    arguments = dict(q.arguments or {})
    if q.validValues is not None:
        arguments.setdefault("validValues", q.validValues)
    operator, value = None, None
    spellings = {
        "mustBeGreaterThanOrEqualTo": "mustBeGreaterOrEqualTo",
        "mustBeLessThanOrEqualTo": "mustBeLessOrEqualTo",
    }
    for name in (*OPERATORS, *spellings):
        if getattr(q, name) is not None:
            operator, value = spellings.get(name, name), getattr(q, name)
            break
    if rtype in ("text", "custom"):
        notes.add(where, f"a {rtype} rule{f' for {q.engine}' if q.engine else ''}: kept, not run")
    elif rtype == "library" and metric not in METRICS:
        notes.add(where, f"library metric {metric!r} is unknown: not run")
    elif rtype == "sql" and not q.query:
        notes.add(where, "a sql rule without a query: not run")
    elif operator is None and rtype in ("sql", "library") and metric != "rowCount":
        operator, value = "mustBe", 0  # ODCS: a rule without a bound counts failures, which must be none
    return QualityRule(
        type=rtype,
        metric=metric,
        query=q.query,
        arguments=arguments,
        operator=operator,
        value=value,
        unit=(q.unit or "rows").lower(),
        name=q.name,
        description=q.description,
        dimension=q.dimension,
        severity=(q.severity or "error").lower(),
        engine=q.engine,
    )
