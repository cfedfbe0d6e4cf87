"""Load datacontract-specification (``dataContractSpecification: 0.9 .. 1.x``) into the same model as ODCS.

Models become datasets, fields become fields (``$ref: '#/definitions/x'`` resolved, the field's
own keys winning), field types become ODCS logical types with the spec's type kept as the
physical type (so ``int`` vs ``long`` is still told apart), ``servicelevels.freshness`` becomes a
freshness SLA. Unknown keys and known parts we do not enforce are listed in ``unsupported``.
"""

from __future__ import annotations

from typing import Any

from oxiflow.contracts.model import OPERATORS, Contract, ContractError, Dataset, Field, QualityRule, Server, SlaProperty
from oxiflow.contracts.odcs import METRICS

# datacontract-specification type -> (ODCS logical type, physical type for the Arrow mapping)
_TYPES: dict[str, tuple[str, str | None]] = {
    "string": ("string", "string"),
    "text": ("string", "string"),
    "varchar": ("string", "string"),
    "number": ("number", None),
    "decimal": ("number", None),
    "numeric": ("number", None),
    "int": ("integer", "int32"),
    "integer": ("integer", "int32"),
    "long": ("integer", "int64"),
    "bigint": ("integer", "int64"),
    "float": ("number", "float32"),
    "double": ("number", "float64"),
    "boolean": ("boolean", "boolean"),
    "timestamp": ("timestamp", None),
    "timestamp_tz": ("timestamp", "timestamp_tz"),
    "timestamp_ntz": ("timestamp", "timestamp_ntz"),
    "date": ("date", "date"),
    "time": ("time", "time"),
    "bytes": ("bytes", "binary"),
    "array": ("array", None),
    "map": ("object", "map"),
    "object": ("object", None),
    "record": ("object", None),
    "struct": ("object", None),
    "null": ("string", None),
    "variant": ("object", None),
    "json": ("object", None),
}
_FIELD_USED = {
    "type",
    "required",
    "unique",
    "primaryKey",
    "primary",
    "enum",
    "pattern",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "precision",
    "scale",
    "format",
    "classification",
    "pii",
    "description",
    "tags",
    "quality",
    "fields",
    "items",
    "keys",
    "values",
    "$ref",
}
_FIELD_INFO = {"title", "examples", "example", "config", "lineage", "links", "deprecated", "default", "namespace"}
_FIELD_UNCHECKED = {"references": "foreign keys are not checked"}
_MODEL_USED = {"description", "type", "fields", "quality", "primaryKey", "title"}
_MODEL_INFO = {"examples", "config", "tags", "namespace", "additionalFields", "links"}
_TOP_USED = {"dataContractSpecification", "id", "info", "servers", "models", "servicelevels", "definitions", "quality"}
_TOP_INFO = {"terms", "examples", "tags", "links", "$schema"}


def from_dcs(doc: dict[str, Any], path: str) -> Contract:
    notes: list[str] = []
    info: dict[str, Any] = doc["info"] if isinstance(doc.get("info"), dict) else {}
    for key in doc:
        if key not in _TOP_USED | _TOP_INFO:
            notes.append(f"$.{key}: unknown key, kept but not used")
    definitions = doc.get("definitions") or {}
    models = doc.get("models") or {}
    if not isinstance(models, dict):
        raise ContractError("models must be a mapping of model name -> model", file=path)
    datasets = []
    for name, model in models.items():
        model = model or {}
        where = f"$.models.{name}"
        for key in model:
            if key not in _MODEL_USED | _MODEL_INFO:
                notes.append(f"{where}.{key}: unknown key, kept but not used")
        fields = [
            _field(str(fname), spec or {}, f"{where}.fields.{fname}", definitions, notes)
            for fname, spec in (model.get("fields") or {}).items()
        ]
        pk = model.get("primaryKey")
        for pos, key in enumerate(pk if isinstance(pk, list) else [pk] if isinstance(pk, str) else [], start=1):
            for f in fields:
                if f.name == key:
                    f.primary_key, f.primary_key_position = True, pos
        quality = _rules(model.get("quality"), f"{where}.quality", notes)
        config = model.get("config")
        datasets.append(
            Dataset(
                name=str(name),
                description=model.get("description"),
                fields=fields,
                quality=quality,
                properties=dict(config) if isinstance(config, dict) else {},  # DCS's tool-specific settings
            )
        )
    if doc.get("quality"):
        notes.append("$.quality: a contract-wide quality block (SodaCL / great-expectations): kept, not run")
    sla = []
    levels = doc.get("servicelevels") or {}
    for key, value in levels.items():
        if key == "freshness" and isinstance(value, dict):
            threshold = str(value.get("threshold", ""))
            amount, unit = _duration(threshold)
            sla.append(SlaProperty("freshness", amount, unit, value.get("timestampField")))
        else:
            notes.append(f"$.servicelevels.{key}: kept, not checked against data")
    servers = []
    for sname, server in (doc.get("servers") or {}).items():
        server = server or {}
        servers.append(
            Server(
                str(sname),
                server.get("type"),
                server.get("path") or server.get("location"),
                server.get("format"),
                {k: v for k, v in server.items() if k not in ("type", "path", "format")},
            )
        )
    return Contract(
        id=None if doc.get("id") is None else str(doc["id"]),
        name=info.get("title"),
        version=None if info.get("version") is None else str(info["version"]),
        source_format="dcs",
        api_version=str(doc.get("dataContractSpecification")),
        status=info.get("status"),
        description=info.get("description"),
        datasets=datasets,
        servers=servers,
        sla=sla,
        unsupported=notes,
        path=path,
    )


def _duration(text: str) -> tuple[float | None, str | None]:
    """``25h`` -> (25, "h"); ISO ``PT25H`` -> (25, "h")."""
    import re

    m = re.fullmatch(r"(?i)P?T?(\d+(?:\.\d+)?)\s*([a-z]+)", text.strip())
    if not m:
        return None, None
    return float(m.group(1)), m.group(2).lower()


def _resolve(spec: dict[str, Any], definitions: dict[str, Any], where: str, notes: list[str]) -> dict[str, Any]:
    ref = spec.get("$ref")
    if not ref:
        return spec
    if isinstance(ref, str) and ref.startswith("#/definitions/"):
        target = definitions.get(ref.split("/", 2)[2])
        if isinstance(target, dict):
            base = {k: v for k, v in target.items() if k not in ("name", "domain")}
            return {**base, **{k: v for k, v in spec.items() if k != "$ref"}}
    notes.append(f"{where}.$ref: {ref!r} is not a local definition: not resolved")
    return spec


def _field(name: str, spec: dict[str, Any], where: str, definitions: dict[str, Any], notes: list[str]) -> Field:
    spec = _resolve(spec, definitions, where, notes)
    for key in spec:
        if key in _FIELD_UNCHECKED:
            notes.append(f"{where}.{key}: {_FIELD_UNCHECKED[key]}")
        elif key not in _FIELD_USED | _FIELD_INFO:
            notes.append(f"{where}.{key}: unknown key, kept but not used")
    dtype = str(spec.get("type") or "").lower() or None
    logical, physical = _TYPES.get(dtype or "", (None, None))
    if dtype and dtype not in _TYPES:
        notes.append(f"{where}.type: {dtype!r} is not a datacontract-specification type: not checked")
    if dtype in ("decimal", "numeric", "number") and spec.get("precision"):
        physical = f"decimal({spec['precision']},{spec.get('scale') or 0})"
    classification = spec.get("classification")
    if spec.get("pii") and not classification:
        classification = "pii"
    items = spec.get("items")
    if dtype == "map":
        children = [
            _field("key", spec.get("keys") or {}, f"{where}.keys", definitions, notes),
            _field("value", spec.get("values") or {}, f"{where}.values", definitions, notes),
        ]
    else:
        children = [
            _field(str(n), s or {}, f"{where}.fields.{n}", definitions, notes)
            for n, s in (spec.get("fields") or {}).items()
        ]
    return Field(
        name=name,
        logical_type=logical,
        physical_type=physical,
        required=bool(spec.get("required")),
        unique=bool(spec.get("unique")),
        primary_key=bool(spec.get("primaryKey") or spec.get("primary")),
        enum=spec.get("enum"),
        pattern=spec.get("pattern"),
        minimum=spec.get("minimum"),
        maximum=spec.get("maximum"),
        exclusive_minimum=spec.get("exclusiveMinimum"),
        exclusive_maximum=spec.get("exclusiveMaximum"),
        min_length=spec.get("minLength"),
        max_length=spec.get("maxLength"),
        precision=spec.get("precision"),
        scale=spec.get("scale"),
        format=spec.get("format"),
        classification=classification,
        description=spec.get("description"),
        tags=[str(t) for t in spec.get("tags") or []],
        quality=_rules(spec.get("quality"), f"{where}.quality", notes),
        fields=children,
        items=_field("[]", items, f"{where}.items", definitions, notes) if isinstance(items, dict) else None,
    )


def _rules(rules: Any, where: str, notes: list[str]) -> list[QualityRule]:
    out = []
    for i, q in enumerate(rules or []):
        if not isinstance(q, dict):
            notes.append(f"{where}[{i}]: not a mapping: ignored")
            continue
        rtype = str(q.get("type") or "library").lower()
        operator, value = next(((op, q[op]) for op in OPERATORS if q.get(op) is not None), (None, None))
        metric = q.get("metric")
        if rtype in ("sql", "library") and operator is None and metric != "rowCount":
            operator, value = "mustBe", 0
        if rtype not in ("sql", "library"):
            notes.append(f"{where}[{i}]: a {rtype} rule: kept, not run")
        elif rtype == "library" and metric not in METRICS:
            notes.append(f"{where}[{i}]: library metric {metric!r} is unknown: not run")
        out.append(
            QualityRule(
                type=rtype,
                metric=metric,
                query=q.get("query"),
                arguments=dict(q.get("arguments") or {}),
                operator=operator,
                value=value,
                unit=str(q.get("unit") or "rows").lower(),
                name=q.get("name"),
                description=q.get("description"),
                dimension=q.get("dimension"),
                severity=str(q.get("severity") or "error").lower(),
                engine=q.get("engine"),
            )
        )
    return out
