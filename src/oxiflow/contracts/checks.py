"""Compile a contract's dataset into checks, and run them over data in DuckDB, vectorised.

Three kinds of check:

- **schema** checks (a field is present, its type is right) are decided from the data's Arrow
  schema alone;
- **row** checks (not null, enum, pattern, range, length, castable type) are SQL predicates, TRUE
  when a row passes (NULL counts as passing: nullability is the ``required`` check's business);
- **aggregate** checks (unique, primary key, row count, null/missing/invalid/duplicate metrics,
  SQL quality rules, freshness) measure one value and compare it with the rule's bound.

:func:`run_checks` evaluates every row check and every aggregate in ONE scan of the relation
(``count_if(NOT predicate)`` per row check), then the SQL rules (each their own query).
:func:`row_masks` gives the later ``validate`` step the same row predicates as boolean arrays
over an Arrow batch, so enforcement and ``contract test`` cannot disagree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from oxiflow.contracts.model import Dataset, Field, QualityRule, SlaProperty
from oxiflow.contracts.types import CAST_TARGET, accepts, family, fits, logical_of, normalize_logical, parse_physical
from oxiflow.engine.duck import ident, literal

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

Status = Literal["passed", "failed", "warning", "skipped", "error"]
_SECONDS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "day": 86400, "days": 86400, "w": 604800}
_SECONDS |= {"y": 31_536_000, "yr": 31_536_000, "year": 31_536_000, "years": 31_536_000}


@dataclass
class Check:
    """One compiled check. Exactly one of ``predicate`` / ``aggregate`` / ``query`` is set for data
    checks; schema checks carry their verdict in ``static_failure`` (None: passed)."""

    id: str
    dataset: str
    field: str | None
    kind: str  # presence | type | required | enum | pattern | range | length | unique | primary_key | quality | sla
    name: str
    severity: str = "error"
    predicate: str | None = None
    aggregate: str | None = None
    query: str | None = None
    operator: str = "mustBe"
    bound: Any = 0
    unit: str = "rows"
    static_failure: str | None = None
    schema_only: bool = False


@dataclass
class CheckResult:
    check: Check
    status: Status
    measured: Any = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        c = self.check
        return {
            "id": c.id,
            "dataset": c.dataset,
            "field": c.field,
            "kind": c.kind,
            "name": c.name,
            "severity": c.severity,
            "status": self.status,
            "measured": _plain(self.measured),
            "reason": self.reason,
        }


@dataclass
class DataShape:
    """What the checks need to know about the data: its Arrow schema, its DuckDB column types,
    and whether its types were sniffed from text (CSV, JSON) rather than declared."""

    schema: pa.Schema
    duck_types: dict[str, str]
    sniffed: bool = False
    notes: list[str] = field(default_factory=list)


def compile_checks(ds: Dataset, shape: DataShape, sla: list[SlaProperty] | None = None) -> list[Check]:
    """Every check of ``ds`` against data of this shape, in report order."""
    checks: list[Check] = []
    present = set(shape.schema.names)
    for f in ds.fields:
        checks.extend(_field_checks(ds, f, shape, f.column in present))
    keys = [f for f in ds.fields if f.primary_key]
    if len(keys) > 1 and all(f.column in present for f in keys):
        cols = [f.column for f in sorted(keys, key=lambda f: f.primary_key_position or 0)]
        tup = "(" + ", ".join(ident(c) for c in cols) + ")"
        checks.append(
            Check(
                f"{ds.name}.primary_key",
                ds.name,
                None,
                "primary_key",
                f"primary key ({', '.join(cols)}) is unique",
                aggregate=f"count(*) - count(DISTINCT {tup})",
            )
        )
    for i, rule in enumerate(ds.quality):
        check = _quality_check(ds, None, None, rule, f"{ds.name}.quality[{i}]")
        if check:
            checks.append(check)
    for i, s in enumerate(sla or []):
        check = _sla_check(ds, s, shape, f"{ds.name}.sla[{i}]")
        if check:
            checks.append(check)
    return checks


def _field_checks(ds: Dataset, f: Field, shape: DataShape, present: bool) -> list[Check]:
    base = f"{ds.name}.{f.name}"
    out = [
        Check(
            f"{base}.present",
            ds.name,
            f.name,
            "presence",
            f"field {f.name} is present",
            static_failure=None if present else f"field '{f.column}' is missing from the data",
            schema_only=True,
        )
    ]
    if not present:
        return out
    col = ident(f.column)
    actual = shape.schema.field(f.column).type
    logical = normalize_logical(f.logical_type)
    value = col  # the expression constraints compare: the column, or its values cast to the declared type
    if shape.sniffed and logical and not accepts(logical, actual):
        if logical == "string":
            value = f"CAST({col} AS VARCHAR)"
        elif logical in CAST_TARGET:
            target = CAST_TARGET[logical]
            value = f"TRY_CAST({col} AS {target})"
            out.append(
                Check(
                    f"{base}.type",
                    ds.name,
                    f.name,
                    "type",
                    f"{f.name} values are {logical}",
                    predicate=f"{col} IS NULL OR {value} IS NOT NULL",
                )
            )
        else:
            out.append(_type_check(base, ds, f, f"expected type '{logical}' but got '{logical_of(actual)}'"))
    else:
        problem = _type_problem(f, actual, strict_physical=not shape.sniffed)
        out.append(_type_check(base, ds, f, problem))
    if f.required:
        out.append(
            Check(
                f"{base}.required", ds.name, f.name, "required", f"{f.name} is not null", predicate=f"{col} IS NOT NULL"
            )
        )
    text = value if family(actual) == "string" or value != col else f"CAST({col} AS VARCHAR)"
    if f.enum:
        values = [v for v in f.enum if v is not None]
        strings = all(isinstance(v, str) for v in values)
        target = text if strings else value
        out.append(
            Check(
                f"{base}.enum",
                ds.name,
                f.name,
                "enum",
                f"{f.name} in {values}",
                predicate=f"{col} IS NULL OR {target} IN ({', '.join(literal(v) for v in values)})",
            )
        )
    if f.pattern:
        out.append(
            Check(
                f"{base}.pattern",
                ds.name,
                f.name,
                "pattern",
                f"{f.name} matches {f.pattern}",
                predicate=f"{col} IS NULL OR regexp_matches({text}, {literal(f.pattern)})",
            )
        )
    duck_type = (
        shape.duck_types.get(f.column, "VARCHAR") if value == col else (CAST_TARGET.get(logical or "") or "VARCHAR")
    )
    for attr, op in (("minimum", ">="), ("exclusive_minimum", ">"), ("maximum", "<="), ("exclusive_maximum", "<")):
        bound = getattr(f, attr)
        if bound is None:
            continue
        out.append(
            Check(
                f"{base}.{attr}",
                ds.name,
                f.name,
                "range",
                f"{f.name} {op} {bound}",
                predicate=f"{col} IS NULL OR {value} {op} {_bound(bound, duck_type)}",
            )
        )
    for attr, op in (("min_length", ">="), ("max_length", "<=")):
        n = getattr(f, attr)
        if n is None:
            continue
        out.append(
            Check(
                f"{base}.{attr}",
                ds.name,
                f.name,
                "length",
                f"length({f.name}) {op} {n}",
                predicate=f"{col} IS NULL OR length({text}) {op} {int(n)}",
            )
        )
    if f.unique or (f.primary_key and sum(1 for x in ds.fields if x.primary_key) == 1):
        out.append(
            Check(
                f"{base}.unique",
                ds.name,
                f.name,
                "unique",
                f"{f.name} is unique",
                aggregate=f"count({col}) - count(DISTINCT {col})",
            )
        )
    for i, rule in enumerate(f.quality):
        check = _quality_check(ds, f, value, rule, f"{base}.quality[{i}]")
        if check:
            out.append(check)
    return out


def _type_check(base: str, ds: Dataset, f: Field, problem: str | None) -> Check:
    name = f"{f.name} has type {f.logical_type or f.physical_type or 'any'}"
    return Check(f"{base}.type", ds.name, f.name, "type", name, static_failure=problem, schema_only=True)


def _type_problem(f: Field, actual: pa.DataType, *, strict_physical: bool) -> str | None:
    """Why a column of Arrow type ``actual`` does not have the field's declared type (None: it does).
    Recurses into struct members and list items, naming the nested field that is wrong."""
    import pyarrow as pa

    logical = normalize_logical(f.logical_type)
    if logical and not accepts(logical, actual):
        return f"field '{f.name}': expected type '{logical}' but got '{logical_of(actual)}'"
    declared = parse_physical(f.physical_type)
    if strict_physical and declared is not None and family(actual) != "null" and not fits(actual, declared):
        return f"field '{f.name}': expected physical type '{f.physical_type}' but got '{actual}'"
    if f.items is not None and family(actual) == "list":
        return _type_problem(f.items, actual.value_type, strict_physical=strict_physical)
    if f.fields and family(actual) == "struct":
        assert isinstance(actual, pa.StructType)
        names = [actual.field(i).name for i in range(actual.num_fields)]
        for child in f.fields:
            if child.column not in names:
                return f"field '{f.name}.{child.column}' is missing from the data"
            problem = _type_problem(child, actual.field(child.column).type, strict_physical=strict_physical)
            if problem:
                return problem
    return None


def _bound(value: Any, duck_type: str) -> str:
    """A bound as a SQL literal of the column's type (dates and timestamps come as strings)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"CAST({literal(str(value))} AS {duck_type})"
    return literal(value)


def _measure(unit: str, count_sql: str) -> str:
    if unit == "percent":
        return f"CASE WHEN count(*) = 0 THEN 0 ELSE 100.0 * ({count_sql}) / count(*) END"
    return count_sql


def _quality_check(ds: Dataset, f: Field | None, value: str | None, rule: QualityRule, cid: str) -> Check | None:
    """A ``library`` or ``sql`` quality rule as a check (``text``/``custom`` rules are not run)."""
    severity = "warning" if rule.severity in ("warning", "warn", "info") else "error"
    common: dict[str, Any] = dict(
        id=cid,
        dataset=ds.name,
        field=f.name if f else None,
        kind="quality",
        name=rule.name
        or rule.description
        or f"{f.name + ': ' if f else ''}{rule.metric or 'sql'} {rule.operator or 'mustBe'} {rule.value or 0}",
        severity=severity,
        operator=rule.operator or "mustBe",
        bound=0 if rule.value is None else rule.value,
        unit=rule.unit,
    )
    if rule.type == "sql" and rule.query:
        return Check(**common, query=rule.query)
    if rule.type != "library" or rule.metric is None:
        return None
    col = ident(f.column) if f else None
    args = rule.arguments
    if rule.metric == "rowCount":
        if rule.operator is None:
            return None
        return Check(**{**common, "unit": "rows"}, aggregate="count(*)")
    if rule.metric == "duplicateValues":
        cols = [ident(c) for c in args.get("properties") or args.get("columns") or []] or ([col] if col else [])
        if not cols:
            return None
        tup = cols[0] if len(cols) == 1 else "(" + ", ".join(cols) + ")"
        return Check(**common, aggregate=_measure(rule.unit, f"count({tup}) - count(DISTINCT {tup})"))
    if col is None or value is None:
        return None
    if rule.metric == "nullValues":
        return Check(**common, aggregate=_measure(rule.unit, f"count_if({col} IS NULL)"))
    if rule.metric == "missingValues":
        missing = [v for v in args.get("missingValues") or [None, ""] if v is not None]
        cond = f"{col} IS NULL" + (
            f" OR CAST({col} AS VARCHAR) IN ({', '.join(literal(str(v)) for v in missing)})" if missing else ""
        )
        return Check(**common, aggregate=_measure(rule.unit, f"count_if({cond})"))
    if rule.metric == "invalidValues":
        valid = [v for v in args.get("validValues") or [] if v is not None]
        conds = []
        if valid:
            conds.append(f"CAST({col} AS VARCHAR) NOT IN ({', '.join(literal(str(v)) for v in valid)})")
        if args.get("pattern"):
            conds.append(f"NOT regexp_matches(CAST({col} AS VARCHAR), {literal(args['pattern'])})")
        if not conds:
            return None
        return Check(**common, aggregate=_measure(rule.unit, f"count_if({col} IS NOT NULL AND ({' OR '.join(conds)}))"))
    return None


def _sla_check(ds: Dataset, s: SlaProperty, shape: DataShape, cid: str) -> Check | None:
    """``latency`` / ``freshness``: the newest value of the element column is at most value x unit old."""
    if s.property not in ("latency", "freshness") or not s.element or s.value is None:
        return None
    table, _, column = s.element.rpartition(".")
    if (table and table not in (ds.name, ds.physical_name)) or column not in shape.schema.names:
        return None
    unit = (s.unit or "d").lower()
    seconds = _SECONDS.get(unit) or _SECONDS.get(unit.rstrip("s"))
    if seconds is None:
        return None
    col = ident(column)
    age = f"epoch(current_timestamp::TIMESTAMP - max({col})::TIMESTAMP) / {seconds}"
    return Check(
        cid,
        ds.name,
        column,
        "sla",
        f"{s.property}: newest {column} at most {s.value}{unit} old",
        aggregate=age,
        operator="mustBeLessOrEqualTo",
        bound=float(s.value),
        unit=unit,
    )


def compare(measured: Any, operator: str, bound: Any) -> bool:
    """Whether ``measured`` meets ``operator bound`` (mustBeBetween bounds are inclusive)."""
    if measured is None:
        return False
    if isinstance(measured, float) and math.isnan(measured):
        return False
    m = float(measured) if not isinstance(measured, str) else measured
    if operator in ("mustBeBetween", "mustNotBeBetween"):
        lo, hi = bound
        inside = lo <= m <= hi
        return inside if operator == "mustBeBetween" else not inside
    ops = {
        "mustBe": lambda a, b: a == b,
        "mustNotBe": lambda a, b: a != b,
        "mustBeGreaterThan": lambda a, b: a > b,
        "mustBeGreaterOrEqualTo": lambda a, b: a >= b,
        "mustBeLessThan": lambda a, b: a < b,
        "mustBeLessOrEqualTo": lambda a, b: a <= b,
    }
    return bool(ops[operator](m, bound))


def _sql_rule(query: str, ds: Dataset, view: str) -> str:
    """A contract's SQL with its placeholders pointing at the view of the data."""
    q = query.strip().rstrip(";")
    for placeholder in ("${schema}.{table}", "${schema}.{model}", "{model}", "{table}", "${model}", "${table}"):
        q = q.replace(placeholder, view)
    return q


def run_checks(con: duckdb.DuckDBPyConnection, relation: str, ds: Dataset, checks: list[Check]) -> list[CheckResult]:
    """Evaluate ``checks`` over ``relation`` (a table/view name) on ``con``.

    The dataset must be queryable by its own name too (SQL rules say ``FROM orders``): the caller
    creates that view. Row checks and aggregates share one scan.
    """
    results: dict[str, CheckResult] = {}
    exprs: list[str] = ["count(*)"]
    slots: dict[str, int] = {}
    for c in checks:
        if c.schema_only:
            results[c.id] = _verdict(c, c.static_failure is None, None, c.static_failure or "")
        elif c.predicate is not None:
            slots[c.id] = len(exprs)
            exprs.append(f"count_if(NOT coalesce({c.predicate}, true))")
        elif c.aggregate is not None:
            slots[c.id] = len(exprs)
            exprs.append(c.aggregate)
    row = con.execute(f"SELECT {', '.join(exprs)} FROM {relation}").fetchone() if len(exprs) > 1 else None
    for c in checks:
        if c.id in results:
            continue
        if c.id in slots:
            assert row is not None
            measured = row[slots[c.id]]
            if c.predicate is not None:
                ok = measured == 0
                results[c.id] = _verdict(c, ok, measured, "" if ok else f"{measured} of {row[0]} rows fail")
            else:
                ok = compare(measured, c.operator, c.bound)
                results[c.id] = _verdict(c, ok, measured, "" if ok else _why(c, measured))
        elif c.query is not None:
            try:
                value = con.execute(_sql_rule(c.query, ds, ident(ds.name))).fetchone()
            except Exception as exc:  # the contract's own SQL: report it, do not crash the run
                results[c.id] = CheckResult(c, "error", None, f"the rule's SQL failed: {str(exc).splitlines()[0]}")
                continue
            measured = value[0] if value else None
            ok = compare(measured, c.operator, c.bound)
            results[c.id] = _verdict(c, ok, measured, "" if ok else _why(c, measured))
    return [results[c.id] for c in checks]


def _why(c: Check, measured: Any) -> str:
    unit = "%" if c.unit == "percent" else ""
    return f"measured {_plain(measured)}{unit}, {c.operator} {c.bound}"


def _verdict(c: Check, ok: bool, measured: Any, reason: str) -> CheckResult:
    if ok:
        return CheckResult(c, "passed", measured, "")
    return CheckResult(c, "warning" if c.severity == "warning" else "failed", measured, reason)


def row_masks(batch: pa.RecordBatch | pa.Table, checks: list[Check], con: duckdb.DuckDBPyConnection) -> pa.Table:
    """For the ``validate`` step: one boolean column per row check (named by check id), TRUE where
    the row passes, computed by DuckDB over the Arrow batch in one vectorised query."""
    row_checks = [c for c in checks if c.predicate is not None]
    con.register("oxiflow_contract_batch", batch)
    try:
        cols = ", ".join(f"coalesce({c.predicate}, true) AS {ident(c.id)}" for c in row_checks) or "true AS ok"
        return con.sql(f"SELECT {cols} FROM oxiflow_contract_batch").to_arrow_table()
    finally:
        con.unregister("oxiflow_contract_batch")


def _plain(value: Any) -> Any:
    """A measured value as JSON-friendly Python (Decimal -> float, dates -> str)."""
    import datetime
    import decimal

    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, datetime.date | datetime.datetime | datetime.timedelta):
        return str(value)
    return value
