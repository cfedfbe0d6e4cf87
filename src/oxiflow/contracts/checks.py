"""Compile a contract's dataset into checks, and run them over data in DuckDB, vectorised.

Three kinds of check:

- **schema** checks (a field is present, its type is right) are decided from the data's Arrow
  schema alone;
- **row** checks (not null, enum, pattern, range, length, castable type) are SQL predicates, TRUE
  when a row passes (NULL counts as passing: nullability is the ``required`` check's business);
- **aggregate** checks (unique, primary key, row count, null/missing/invalid/duplicate metrics,
  SQL quality rules, freshness) measure one value and compare it with the rule's bound.

:func:`evaluate` measures every row check and every aggregate in ONE scan of the relation
(``count_if(NOT predicate)`` per row check), then the SQL rules (each their own query). When the
caller says columns can be read one at a time cheaply (Parquet, DuckDB tables: ``narrow_scans``),
three shortcuts take the costly checks out of that scan; each gives the very number the scan would:

- checks on one low-cardinality string column (pattern, enum, length, counted metrics) are
  measured once per distinct value, weighted by its row count (a regex runs 5 times, not 5M);
- a unique or primary key that is strictly increasing in one ordered pass (``lag``) has no
  duplicates, so ``count(DISTINCT ...)`` (a hash of every key) is skipped;
- with ``metadata_stats`` (Parquet), ``required`` and range checks that min/max/null counts prove
  are settled by those aggregates, which DuckDB answers from the file's metadata.
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
    # Hints for the shortcuts of :func:`evaluate` (each optional; ``predicate``/``aggregate`` stay
    # the reference). ``text_column``: the one string column this check reads, so it can be
    # measured per distinct value. ``counted``: for counted metrics, the condition of a counted row
    # (``aggregate`` is its count, or percent). ``key``: the key whose repeats ``aggregate`` counts.
    # ``proof``: an aggregate that, when TRUE, proves no row fails this row check.
    text_column: str | None = None
    counted: str | None = None
    key: str | None = None
    proof: str | None = None
    # what a row must satisfy, as a DLQ reason says it after the value: "must be >= 0" (row checks, unique keys)
    requirement: str | None = None


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
                aggregate=f"count(*) - count(DISTINCT {tup})",  # a row tuple is never NULL: count(*) rows
                key=tup,
                requirement=f"must be unique: primary key ({', '.join(cols)}) of an earlier row",
            )
        )
    for i, rule in enumerate(ds.quality):
        check = _quality_check(ds, None, None, rule, f"{ds.name}.quality[{i}]", None)
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
    # strings only: grouping floats would merge -0.0 with 0.0, which CAST(... AS VARCHAR) tells apart
    text_column = f.column if family(actual) == "string" and shape.duck_types.get(f.column) == "VARCHAR" else None
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
                    text_column=text_column,
                    requirement=f"must be a valid {logical}",
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
                f"{base}.required",
                ds.name,
                f.name,
                "required",
                f"{f.name} is not null",
                predicate=f"{col} IS NOT NULL",
                text_column=text_column,
                proof=f"count({col}) = count(*)",
                requirement="must not be null (required)",
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
                text_column=text_column,
                requirement=f"must be one of {values}",
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
                text_column=text_column,
                requirement=f"must match {f.pattern!r}",
            )
        )
    duck_type = (
        shape.duck_types.get(f.column, "VARCHAR") if value == col else (CAST_TARGET.get(logical or "") or "VARCHAR")
    )
    for attr, op in (("minimum", ">="), ("exclusive_minimum", ">"), ("maximum", "<="), ("exclusive_maximum", "<")):
        bound = getattr(f, attr)
        if bound is None:
            continue
        limit = _bound(bound, duck_type)
        # min (or max) within the bound: no row is outside it (NULL data: every row passes)
        extreme = "min" if attr.endswith("minimum") else "max"
        proof = f"coalesce({extreme}({col}) {op} {limit}, true)" if value == col and text_column is None else None
        out.append(
            Check(
                f"{base}.{attr}",
                ds.name,
                f.name,
                "range",
                f"{f.name} {op} {bound}",
                predicate=f"{col} IS NULL OR {value} {op} {limit}",
                text_column=text_column,
                proof=proof,
                requirement=f"must be {op} {bound}",
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
                text_column=text_column,
                requirement=f"must have length {op} {int(n)}",
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
                key=col,
                requirement="must be unique (an earlier row has this value)",
            )
        )
    for i, rule in enumerate(f.quality):
        check = _quality_check(ds, f, value, rule, f"{base}.quality[{i}]", text_column)
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


def _measure(unit: str, count_sql: str, rows_sql: str = "count(*)") -> str:
    """A count as the rule's unit: rows, or percent of ``rows_sql`` (both BIGINT: one result type)."""
    if unit == "percent":
        return f"CASE WHEN {rows_sql} = 0 THEN 0 ELSE 100.0 * ({count_sql}) / {rows_sql} END"
    return count_sql


def _rows_where(cond: str) -> str:
    """How many rows ``cond`` holds for (DuckDB's count_if is NULL, not 0, over no rows)."""
    return f"coalesce(count_if({cond}), 0)"


def _quality_check(
    ds: Dataset, f: Field | None, value: str | None, rule: QualityRule, cid: str, text_column: str | None
) -> Check | None:
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
        return Check(**common, aggregate=_measure(rule.unit, f"count({tup}) - count(DISTINCT {tup})"), key=tup)
    if col is None or value is None:
        return None

    def counted(cond: str) -> Check:
        return Check(**common, aggregate=_measure(rule.unit, _rows_where(cond)), counted=cond, text_column=text_column)

    if rule.metric == "nullValues":
        return counted(f"{col} IS NULL")
    if rule.metric == "missingValues":
        missing = [v for v in args.get("missingValues") or [None, ""] if v is not None]
        cond = f"{col} IS NULL" + (
            f" OR CAST({col} AS VARCHAR) IN ({', '.join(literal(str(v)) for v in missing)})" if missing else ""
        )
        return counted(cond)
    if rule.metric == "invalidValues":
        valid = [v for v in args.get("validValues") or [] if v is not None]
        conds = []
        if valid:
            conds.append(f"CAST({col} AS VARCHAR) NOT IN ({', '.join(literal(str(v)) for v in valid)})")
        if args.get("pattern"):
            conds.append(f"NOT regexp_matches(CAST({col} AS VARCHAR), {literal(args['pattern'])})")
        if not conds:
            return None
        return counted(f"{col} IS NOT NULL AND ({' OR '.join(conds)})")
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


# Per-value measuring: a string column qualifies when its first rows hold few distinct values.
_SAMPLE_ROWS = 16_384
_MAX_DISTINCT_SHARE = 64  # at most 1 distinct value per 64 sampled rows (enums, codes, statuses)
_ROWS = "oxiflow_rows"  # the row count of each distinct value in a per-value query
_KEY_PROBE_ROWS = 2048  # a key that is not increasing here is not checked in full for order


@dataclass
class Evaluation:
    """The results of :func:`evaluate`, in check order, and the relation's row count."""

    results: list[CheckResult]
    rows: int


def run_checks(
    con: duckdb.DuckDBPyConnection,
    relation: str,
    ds: Dataset,
    checks: list[Check],
    *,
    narrow_scans: bool = False,
    metadata_stats: bool = False,
) -> list[CheckResult]:
    """:func:`evaluate`'s results alone."""
    return evaluate(con, relation, ds, checks, narrow_scans=narrow_scans, metadata_stats=metadata_stats).results


def evaluate(
    con: duckdb.DuckDBPyConnection,
    relation: str,
    ds: Dataset,
    checks: list[Check],
    *,
    narrow_scans: bool = False,
    metadata_stats: bool = False,
) -> Evaluation:
    """Evaluate ``checks`` over ``relation`` (a table/view name) on ``con``.

    The dataset must be queryable by its own name too (SQL rules say ``FROM orders``): the caller
    creates that view. Row checks and aggregates share one scan. ``narrow_scans``: reading one
    column is cheap (Parquet, DuckDB tables, not CSV/JSON, which are parsed whole at each scan), so
    the shortcuts in the module docstring may add scans of one column each. ``metadata_stats``:
    min/max/null counts come from file metadata (Parquet). Either way every measured value is the
    one the single scan gives.
    """
    data = [c for c in checks if not c.schema_only and (c.predicate is not None or c.aggregate is not None)]
    measured: dict[str, Any] = {}
    parts: list[_Part] = []
    increasing: set[str] = set()
    scanned = data
    if narrow_scans:
        if metadata_stats:
            measured = _proven(con, relation, data)
        parts = _per_value_parts(con, relation, [c for c in data if c.id not in measured])
        per_value = {c.id for part in parts for c in part.checks}
        scanned = [c for c in data if c.id not in measured and c.id not in per_value]
        increasing = _increasing_keys(con, relation, {c.key for c in scanned if c.key is not None})
    exprs = ["count(*)"] + [_scan_expression(c, increasing) for c in scanned]
    # the single scan and the per-value queries in one statement (single-row results, cross-joined)
    queries = [f"SELECT {', '.join(exprs)} FROM {relation}"] + [part.sql for part in parts]
    # fetched to the end: the connection takes more work after this (validate's fast path), which DuckDB 2
    # refuses while a result is unfinished
    fetched = con.execute("SELECT * FROM " + ", ".join(f"({q}) AS part{i}" for i, q in enumerate(queries))).fetchall()
    assert len(fetched) == 1  # aggregates without GROUP BY: one row each
    row = fetched[0]
    rows, values = row[0], iter(row[1:])
    measured |= {c.id: next(values) for c in [*scanned, *(c for part in parts for c in part.checks)]}
    return Evaluation([_result(con, ds, c, measured, rows) for c in checks], rows)


@dataclass
class _Part:
    """A single-row query measuring ``checks``, one column each, in that order."""

    checks: list[Check]
    sql: str


def _scan_expression(c: Check, increasing: set[str]) -> str:
    """The check's aggregate in the single scan; a key proven increasing has no duplicate to count."""
    if c.predicate is not None:
        return _rows_where(f"NOT coalesce({c.predicate}, true)")
    assert c.aggregate is not None
    if c.key is not None and c.key in increasing:
        return _measure(c.unit, "CAST(0 AS BIGINT)")  # the type count(...) - count(DISTINCT ...) has
    return c.aggregate


def _result(con: duckdb.DuckDBPyConnection, ds: Dataset, c: Check, measured: dict[str, Any], rows: int) -> CheckResult:
    if c.schema_only:
        return _verdict(c, c.static_failure is None, None, c.static_failure or "")
    if c.predicate is not None:
        failing = measured[c.id]
        return _verdict(c, failing == 0, failing, "" if failing == 0 else f"{failing} of {rows} rows fail")
    if c.aggregate is not None:
        value = measured[c.id]
    elif c.query is not None:
        try:
            first = con.execute(_sql_rule(c.query, ds, ident(ds.name))).fetchone()
        except Exception as exc:  # the contract's own SQL: report it, do not crash the run
            return CheckResult(c, "error", None, f"the rule's SQL failed: {str(exc).splitlines()[0]}")
        value = first[0] if first else None
    else:
        raise AssertionError(f"check {c.id} has nothing to measure")
    ok = compare(value, c.operator, c.bound)
    return _verdict(c, ok, value, "" if ok else _why(c, value))


def _proven(con: duckdb.DuckDBPyConnection, relation: str, checks: list[Check]) -> dict[str, int]:
    """Row checks that min/max/null counts prove pass (0 failing rows); one query that DuckDB
    answers from Parquet metadata. A check not proven is measured as usual."""
    candidates = [c for c in checks if c.proof is not None and c.predicate is not None]
    if not candidates:
        return {}
    row = con.execute(f"SELECT {', '.join(str(c.proof) for c in candidates)} FROM {relation}").fetchone()
    return {c.id: 0 for c, ok in zip(candidates, row or (), strict=True) if ok is True}


def _per_value_parts(con: duckdb.DuckDBPyConnection, relation: str, checks: list[Check]) -> list[_Part]:
    """Checks reading one low-cardinality string column, to measure once per distinct value."""
    by_column: dict[str, list[Check]] = {}
    for c in checks:
        if c.text_column is not None and c.text_column != _ROWS and (c.predicate is not None or c.counted is not None):
            by_column.setdefault(c.text_column, []).append(c)
    # a column worth grouping has a check that costs per row (not only `required`, a null count)
    by_column = {col: cs for col, cs in by_column.items() if any(c.kind != "required" for c in cs)}
    return [_per_value_part(relation, col, by_column[col]) for col in _few_values(con, relation, list(by_column))]


def _few_values(con: duckdb.DuckDBPyConnection, relation: str, columns: list[str]) -> list[str]:
    """The columns whose first rows have at most one distinct value per 64 rows."""
    if not columns:
        return []
    cols = [ident(c) for c in columns]
    distinct = ", ".join(f"count(DISTINCT {c})" for c in cols)
    sample = f"(SELECT {', '.join(cols)} FROM {relation} LIMIT {_SAMPLE_ROWS})"
    row = con.execute(f"SELECT count(*), {distinct} FROM {sample}").fetchone()
    assert row is not None
    return [c for c, n in zip(columns, row[1:], strict=True) if n * _MAX_DISTINCT_SHARE <= row[0]]


def _per_value_part(relation: str, column: str, checks: list[Check]) -> _Part:
    """A query over (value, its row count): each check's predicate keeps the column's name, so it
    runs unchanged on the distinct values, and each failing value counts its rows."""
    n = ident(_ROWS)

    def rows_where(cond: str) -> str:  # BIGINT, as _rows_where gives
        return f"CAST(coalesce(sum({n}) FILTER (WHERE {cond}), 0) AS BIGINT)"

    exprs = []
    for c in checks:
        if c.predicate is not None:
            exprs.append(rows_where(f"NOT coalesce({c.predicate}, true)"))
        else:
            assert c.counted is not None
            exprs.append(_measure(c.unit, rows_where(str(c.counted)), f"CAST(coalesce(sum({n}), 0) AS BIGINT)"))
    col = ident(column)
    values = f"(SELECT {col}, count(*) AS {n} FROM {relation} GROUP BY {col})"
    return _Part(checks, f"SELECT {', '.join(exprs)} FROM {values}")


def _increasing_keys(con: duckdb.DuckDBPyConnection, relation: str, keys: set[str]) -> set[str]:
    """The keys (column or row tuple) whose non-NULL values are strictly increasing in one pass
    over the data: then no two are equal, and counting DISTINCT (hashing every key) is not needed.
    Whatever order DuckDB's window sees, strictly increasing in it proves all keys distinct; a
    comparison that is not TRUE (an equal key, a tuple with NULLs) only sends the key to the count."""

    def increasing(key: str, source: str) -> bool:
        pairs = f"SELECT k, lag(k) OVER () AS prev FROM (SELECT {key} AS k FROM {source} WHERE {key} IS NOT NULL)"
        row = con.execute(f"SELECT count_if(prev IS NOT NULL AND NOT coalesce(k > prev, false)) FROM ({pairs})")
        return row.fetchone() == (0,)

    probe = f"(SELECT * FROM {relation} LIMIT {_KEY_PROBE_ROWS})"  # shuffled keys fail fast here
    return {k for k in sorted(keys) if increasing(k, probe) and increasing(k, relation)}


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
