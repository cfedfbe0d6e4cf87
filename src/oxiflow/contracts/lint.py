"""``oxiflow contract lint``: is the document a valid contract of its standard?

Two levels, both reported as ``$.path: message`` (JSON-Schema style, so the two never disagree in wording):

- **built in**, always: what the standard requires of the document (ODCS v3: ``apiVersion``, ``kind:
  DataContract``, ``id``, ``version`` and, up to v3.1, ``status``; no top-level keys outside the standard; the types
  of the keys oxiflow reads; datacontract-specification: ``dataContractSpecification``, ``id``, ``info`` with
  ``title`` and ``version``).
- **the JSON Schema**, when the optional ``jsonschema`` package is installed (``pip install oxiflow[contracts]``):
  ``--schema PATH`` (replacing the built-in checks, as datacontract-cli's ``--schema`` does: a custom schema may
  allow more), else the ODCS JSON Schema of the ``open-data-contract-standard`` package when it is installed.

Reading the contract (``load_contract``) is separate: a document can be loadable, and used, yet invalid.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oxiflow.contracts.model import ContractError

# ODCS versions and the top-level keys they require (from the standard's JSON Schemas: `status` is optional
# from v3.2.0 on)
_ODCS_REQUIRED = {
    "v3.0": ("version", "apiVersion", "kind", "id", "status"),
    "v3.1": ("version", "apiVersion", "kind", "id", "status"),
    "v3.2": ("version", "apiVersion", "kind", "id"),
}
_ODCS_VERSIONS = ("v3.0.0", "v3.0.1", "v3.0.2", "v3.1.0", "v3.2.0", "v2.2.0", "v2.2.1", "v2.2.2")
_ODCS_TOP = {
    "version", "kind", "apiVersion", "id", "name", "tenant", "tags", "status", "servers", "dataProduct",
    "description", "domain", "schema", "support", "price", "team", "roles", "slaDefaultElement", "slaProperties",
    "authoritativeDefinitions", "customProperties", "contractCreatedTs",
}  # fmt: skip
_STRING, _BOOL, _INT, _ARRAY, _OBJECT = "string", "boolean", "integer", "array", "object"
_TOP_TYPES = {
    "version": _STRING, "kind": _STRING, "apiVersion": _STRING, "id": _STRING, "name": _STRING, "tenant": _STRING,
    "status": _STRING, "dataProduct": _STRING, "domain": _STRING, "schema": _ARRAY, "servers": _ARRAY,
    "slaProperties": _ARRAY, "customProperties": _ARRAY, "tags": _ARRAY, "slaDefaultElement": _STRING,
}  # fmt: skip
_SCHEMA_TYPES = {
    "name": _STRING, "physicalName": _STRING, "physicalType": _STRING, "logicalType": _STRING,
    "description": _STRING, "businessName": _STRING, "dataGranularityDescription": _STRING, "properties": _ARRAY,
    "quality": _ARRAY, "tags": _ARRAY, "customProperties": _ARRAY,
}  # fmt: skip
_PROPERTY_TYPES = {
    "name": _STRING, "physicalName": _STRING, "physicalType": _STRING, "logicalType": _STRING,
    "description": _STRING, "businessName": _STRING, "classification": _STRING, "required": _BOOL, "unique": _BOOL,
    "primaryKey": _BOOL, "partitioned": _BOOL, "criticalDataElement": _BOOL, "primaryKeyPosition": _INT,
    "partitionKeyPosition": _INT, "logicalTypeOptions": _OBJECT, "properties": _ARRAY, "items": _OBJECT,
    "quality": _ARRAY, "tags": _ARRAY, "customProperties": _ARRAY,
}  # fmt: skip
_PY = {_STRING: str, _BOOL: bool, _ARRAY: list, _OBJECT: dict}


@dataclass
class LintResult:
    errors: list[str] = field(default_factory=list)
    schema: str | None = None  # the JSON Schema validated against, if any
    notes: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.errors


def lint(path: str, schema_path: str | None = None) -> LintResult:
    """Validate the contract document at ``path``; ``schema_path``: a JSON Schema to validate against instead."""
    from oxiflow.contracts.odcs import read_yaml

    doc = read_yaml(path)
    result = LintResult()
    if not isinstance(doc, dict):
        result.errors.append(f"$: {_kind(doc)} is not of type 'object'")
        return result
    if schema_path is not None:
        result.schema = schema_path
        result.errors = _json_schema_errors(doc, _read_schema(schema_path))
        return result
    if "dataContractSpecification" in doc:
        result.errors = _dcs_errors(doc)
        return result
    errors = _odcs_errors(doc)
    packaged = _packaged_odcs_schema()
    api = str(doc.get("apiVersion", ""))
    if packaged is not None and packaged[2][:4] == api[:4]:
        result.schema, schema, _ = packaged
        errors += _json_schema_errors(doc, schema)
    elif packaged is not None:  # each minor version of ODCS has its schema: v3.2's requires what v3.0 did not have
        result.notes.append(
            f"checked the ODCS required fields and types only: the installed ODCS JSON Schema is for {packaged[2]}, "
            f"the contract is {api or 'of no apiVersion'}; pass --schema with the schema of its version"
        )
    else:
        result.notes.append(
            "checked the ODCS required fields and types only; for the full ODCS JSON Schema install "
            "oxiflow[contracts] or pass --schema odcs-json-schema.json"
        )
    result.errors = list(dict.fromkeys(errors))
    return result


def _odcs_errors(doc: dict[str, Any]) -> list[str]:
    errors = []
    api = doc.get("apiVersion")
    required = _ODCS_REQUIRED.get(str(api)[:4], _ODCS_REQUIRED["v3.1"]) if isinstance(api, str) else None
    for key in required or _ODCS_REQUIRED["v3.0"]:
        if key not in doc:
            errors.append(f"$: {key!r} is a required property")
    if isinstance(api, str) and api not in _ODCS_VERSIONS:
        errors.append(f"$.apiVersion: {api!r} is not one of {list(_ODCS_VERSIONS)}")
    if "kind" in doc and doc["kind"] != "DataContract":
        errors.append(f"$.kind: {doc['kind']!r} is not one of ['DataContract']")
    extra = [k for k in doc if k not in _ODCS_TOP]
    if extra:
        keys = ", ".join(repr(k) for k in extra)
        errors.append(f"$: Additional properties are not allowed ({keys} {'was' if len(extra) == 1 else 'were'} "
                      "unexpected)")  # fmt: skip
    errors += _typed("$", doc, _TOP_TYPES)
    for i, obj in enumerate(doc.get("schema") or [] if isinstance(doc.get("schema"), list) else []):
        where = f"$.schema[{i}]"
        if not isinstance(obj, dict):
            errors.append(f"{where}: {_kind(obj)} is not of type 'object'")
            continue
        errors += _typed(where, obj, _SCHEMA_TYPES)
        errors += _properties(where, obj.get("properties"))
    return errors


def _properties(where: str, props: Any) -> list[str]:
    errors: list[str] = []
    for j, p in enumerate(props if isinstance(props, list) else []):
        at = f"{where}.properties[{j}]"
        if not isinstance(p, dict):
            errors.append(f"{at}: {_kind(p)} is not of type 'object'")
            continue
        errors += _typed(at, p, _PROPERTY_TYPES)
        errors += _properties(at, p.get("properties"))
    return errors


def _dcs_errors(doc: dict[str, Any]) -> list[str]:
    errors = [f"$: {k!r} is a required property" for k in ("dataContractSpecification", "id", "info") if k not in doc]
    info = doc.get("info")
    if isinstance(info, dict):
        errors += [f"$.info: {k!r} is a required property" for k in ("title", "version") if k not in info]
    elif info is not None:
        errors.append(f"$.info: {_kind(info)} is not of type 'object'")
    return errors


def _typed(where: str, obj: dict[str, Any], types: dict[str, str]) -> list[str]:
    out = []
    for key, want in types.items():
        if key not in obj:
            continue
        value = obj[key]
        ok = (isinstance(value, int) and not isinstance(value, bool)) if want == _INT else isinstance(value, _PY[want])
        if not ok:
            out.append(f"{where}.{key}: {value!r} is not of type {want!r}")
    return out


def _kind(value: Any) -> str:
    return repr(value) if value is None or isinstance(value, str | int | float | bool) else type(value).__name__


def _read_schema(path: str) -> dict[str, Any]:
    try:
        return dict(json.loads(Path(path).read_text(encoding="utf-8")))
    except OSError as exc:
        raise ContractError(f"cannot read the JSON Schema {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ContractError(f"the JSON Schema {path} is not valid JSON: {exc}") from None


def _packaged_odcs_schema() -> tuple[str, dict[str, Any], str] | None:
    """The ODCS JSON Schema of the ``open-data-contract-standard`` package (where, the schema, the ODCS version it
    is for), when it and ``jsonschema`` are installed."""
    try:
        import importlib.resources

        import jsonschema  # noqa: F401  (only worth finding the schema when it can be used)

        res = importlib.resources.files("open_data_contract_standard").joinpath("schema.json")
        schema = json.loads(res.read_text(encoding="utf-8"))
        version = str(schema.get("properties", {}).get("apiVersion", {}).get("default", ""))
        return str(res), schema, version
    except (ImportError, OSError, ValueError, AttributeError):
        return None


def _json_schema_errors(doc: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    try:
        import jsonschema
    except ImportError:
        raise ContractError(
            "validating against a JSON Schema needs the jsonschema package", hint="pip install 'oxiflow[contracts]'"
        ) from None
    cls = jsonschema.validators.validator_for(schema)
    validator = cls(schema)
    out = []
    for err in sorted(validator.iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path]):
        where = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path)
        out.append(f"{where}: {err.message}")
    return out
