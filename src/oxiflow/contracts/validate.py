"""The ``validate`` oxi: row rules per batch in DuckDB, dataset checks and anomaly checks at the end.

Row rules (a contract's field constraints and/or inline ``rules:``) are SQL predicates evaluated in
one DuckDB query per batch (vectorised; NULL passes, as in contracts: nullability is ``not_null``'s
business). Rows failing an ``error`` rule go to the dead-letter queue (``on_invalid: dlq``) with the
rule(s), the reason, the offending values, the run and step; are dropped (``drop``, counted as
filtered); or stop the run (``fail``). ``warn`` rules count and log; their rows pass.

``unique`` rules keep the keys already seen (``_SeenKeys``): increasing keys pass on two Arrow
comparisons, others are anti-joined with a DuckDB table of the seen keys (spilled to disk under the
step's memory limit). The FIRST occurrence passes, later ones are invalid. Only keys of rows that pass
the other error rules are remembered, so a rejected row does not make its fixed replay a duplicate.

Dataset checks (row count, null rate, unique, references, freshness, custom SQL, the contract's
aggregate rules) and anomaly checks measure the rows that pass: what the sink would commit. They run
when the input has ended, before the step ends its output: a failing ``error`` check (or more invalid
rows than ``max_invalid_ratio``) fails the step, so no sink downstream commits.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from oxiflow.config.model import SchemaContractModel, SchemaMode
from oxiflow.data import OxiData
from oxiflow.errors import ConfigError, DataError, RunCancelled
from oxiflow.oxi import OxiConfig, StepContext, Transform, oxi

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

    from oxiflow.contracts.checks import Check
    from oxiflow.contracts.enforce import Conformer, SchemaPlan
    from oxiflow.contracts.model import Contract, Dataset
    from oxiflow.plan.pushdown import PushdownInput

log = logging.getLogger("oxiflow.validate")

Severity = Literal["error", "warn"]
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class QualityError(DataError):
    """A quality check with severity error failed: the step fails and nothing downstream commits."""


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RangeBounds(_Part):
    min: Any = None
    """Smallest allowed value (inclusive); numbers, or dates/timestamps as strings."""
    max: Any = None
    """Largest allowed value (inclusive)."""


class RuleConfig(_Part):
    """One row rule: exactly one of not_null, range, enum, pattern, unique, sql."""

    name: str | None = None
    """Name in the DLQ and reports (default: `kind(column)`)."""
    column: str | list[str] | None = None
    """The column (a list for a composite `unique` key)."""
    not_null: bool = False
    range: RangeBounds | None = None
    enum: list[Any] | None = None
    pattern: str | None = None
    """A regular expression searched in the value (anchor it with ^...$ for a full match)."""
    unique: bool = False
    sql: str | None = None
    """A DuckDB boolean expression over the row's columns, TRUE when the row is valid."""
    severity: Severity = "error"

    @model_validator(mode="after")
    def _one_kind(self) -> RuleConfig:
        kinds = [k for k in ("not_null", "range", "enum", "pattern", "unique", "sql") if getattr(self, k)]
        if len(kinds) != 1:
            raise ValueError(f"a rule needs exactly one of not_null, range, enum, pattern, unique, sql (got {kinds})")
        if kinds[0] != "sql" and not self.column:
            raise ValueError(f"a {kinds[0]} rule needs a `column`")
        if isinstance(self.column, list) and kinds[0] != "unique":
            raise ValueError("only a unique rule takes a list of columns")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("not_null", "range", "enum", "pattern", "unique", "sql") if getattr(self, k))


class RowCountCheck(_Part):
    min: int | None = None
    max: int | None = None
    severity: Severity = "error"


class NullRateCheck(_Part):
    max: float = Field(ge=0, le=1)
    """Largest allowed share of nulls (0..1) in each column."""
    columns: list[str] | None = None
    """Columns checked (default: every column)."""
    severity: Severity = "error"


class UniqueCheck(_Part):
    columns: list[str] = Field(min_length=1)
    """Together a key no two passing rows share (duplicates fail the check; rows are not dead-lettered)."""
    severity: Severity = "error"


class ReferenceCheck(_Part):
    column: str
    """Column of this data whose non-null values must exist in the other dataset."""
    dataset: str
    """An input step id (listed in the step's `inputs:` after the data), or a file (csv, json, parquet ...)."""
    key: str | None = None
    """The column of the other dataset (default: the same name)."""
    severity: Severity = "error"


class FreshnessCheck(_Part):
    column: str
    """A date/timestamp column: its newest value ..."""
    max_age: str
    """... is at most this old: `30m`, `12h`, `2d`, `1w`."""
    severity: Severity = "error"


class SqlCheck(_Part):
    name: str | None = None
    query: str
    """A DuckDB query over the view `data` (the passing rows) selecting offending rows: fails when it returns any."""
    severity: Severity = "error"


class Anomaly(_Part):
    column: str | None = None
    """The column (null_rate and mean)."""
    z: float = Field(3.5, gt=0)
    """Largest allowed |robust z-score| against the history."""
    runs: int = Field(20, ge=2)
    """How many earlier runs of this dataset to compare with."""
    min_runs: int = Field(5, ge=2)
    """Fewer earlier runs than this: the check is skipped (with a logged note)."""
    severity: Severity = "warn"


class Anomalies(_Part):
    row_count: Anomaly | None = None
    null_rate: Anomaly | None = None
    mean: Anomaly | None = None


class DlqOptions(_Part):
    mask_pii: bool = True
    """Hash values of PII fields (the contract's `classification: pii` or tag `pii`, plus `pii_columns`) in the DLQ."""
    pii_columns: list[str] = []
    """More columns to treat as PII."""
    salt: SecretStr | None = None
    """Salt of the hashes (use `${DLQ_SALT}`); without one a random salt per run: hashes differ between runs."""


class ValidateConfig(OxiConfig):
    contract: str | None = None
    """An ODCS / datacontract-specification file: field constraints become row rules, aggregate rules dataset checks."""
    dataset: str | None = None
    """Which dataset of the contract (needed when it has several)."""
    rules: list[RuleConfig] = []
    """Inline row rules: `{name, column, not_null|range|enum|pattern|unique|sql, severity}`."""
    max_invalid_ratio: float = Field(0.05, ge=0, le=1)
    """Above this share of invalid rows (error rules) the step fails and nothing downstream commits."""
    on_invalid: Literal["dlq", "fail", "drop"] = "dlq"
    """Invalid rows: `dlq` dead-letters them, `drop` drops them (counted as filtered), `fail` stops at the first."""
    row_count: RowCountCheck | None = None
    """Passing rows must number between `min` and `max`."""
    null_rate: NullRateCheck | None = None
    """Largest share of nulls per column."""
    unique: UniqueCheck | None = None
    """Dataset-level uniqueness of a (composite) key."""
    references: list[ReferenceCheck] = []
    """Referential integrity against another dataset."""
    freshness: FreshnessCheck | None = None
    """The newest value of a time column is recent enough."""
    sql: list[SqlCheck] = []
    """Custom SQL checks over the passing rows (view `data`)."""
    anomalies: Anomalies | None = None
    """Robust z-score checks of row count, null rate, mean against earlier runs (state store)."""
    history_key: str | None = None
    """Name of the dataset's statistics history (default: the contract dataset, else `pipeline.step`)."""
    dlq: DlqOptions = Field(default_factory=DlqOptions)
    """Dead-letter options: PII masking."""
    schema_contract: SchemaMode | SchemaContractModel | None = None
    """Schema-contract modes against the contract's schema (`evolve`, `freeze`, `discard_row`, `discard_value`, or
    per entity `{columns, data_type}`); default: the contract's `oxiflowSchemaContract`, else none applied."""

    @model_validator(mode="after")
    def _something(self) -> ValidateConfig:
        if self.contract is None and not self.rules and not self._dataset_checks():
            raise ValueError("validate needs a `contract`, `rules`, or dataset checks")
        if self.dataset is not None and self.contract is None:
            raise ValueError("`dataset` names a dataset of the `contract`")
        if self.schema_contract is not None and self.contract is None:
            raise ValueError("`schema_contract` compares the data with the `contract`'s schema: give a contract")
        if self.freshness is not None:
            parse_age(self.freshness.max_age)
        a = self.anomalies
        for name in ("null_rate", "mean"):
            if a is not None and getattr(a, name) is not None and not getattr(a, name).column:
                raise ValueError(f"anomalies.{name} needs a `column`")
        return self

    def _dataset_checks(self) -> bool:
        return any(
            (self.row_count, self.null_rate, self.unique, self.references, self.freshness, self.sql, self.anomalies)
        )


def parse_age(text: str) -> float:
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"expected a duration like 30m, 12h, 2d or 1w, got {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


@dataclass
class RowRule:
    """A compiled row rule: a predicate (TRUE: valid) or a unique key."""

    name: str
    columns: list[str]
    severity: str
    describe: str  # what the rule demands, for reasons: "is not null", "in [0, 100]" ...
    predicate: str | None = None
    unique: bool = False
    # the same predicate in Arrow compute, for the simple kinds: no copy of the batch into DuckDB
    # (strings are converted on the way in), several times faster; None: DuckDB evaluates it
    arrow: Callable[[_Columns], pa.Array] | None = None
    encodes: bool = False  # its arrow test dictionary-encodes its column: run it before those that reuse it
    # for the fast path's one pass over the source (``_Validation.in_place``), as checks.evaluate measures it:
    kind: str = ""  # required | range | enum | pattern | sql | unique
    single_column: bool = False  # the predicate reads ``columns[0]`` alone (measurable per distinct value)
    proof: str | None = None  # an aggregate that, when TRUE, proves no row fails (min/max/null counts)
    check: Check | None = None  # a contract's rule: its compiled check, with the hints contract test uses


@dataclass
class Outcome:
    name: str
    kind: str
    severity: str
    status: str  # passed | failed | warning | skipped
    measured: Any = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("name", "kind", "severity", "status", "measured", "reason")}


@dataclass
class _Stats:
    """Streaming measurements of the passing rows (Arrow compute per batch, no row loop)."""

    rows_in: int = 0
    rows_out: int = 0
    invalid: int = 0
    nulls: dict[str, int] = field(default_factory=dict)
    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    newest: Any = None
    rule_failures: dict[str, int] = field(default_factory=dict)
    warnings: dict[str, int] = field(default_factory=dict)


def _inline_rule(i: int, r: RuleConfig) -> RowRule:
    from oxiflow.engine.duck import ident, literal

    kind = r.kind
    cols = (r.column if isinstance(r.column, list) else [r.column]) if r.column else []
    name = r.name or (f"{kind}({', '.join(cols)})" if cols else f"sql[{i}]")
    col = ident(cols[0]) if cols else ""
    if kind == "not_null":
        rule = RowRule(name, cols, r.severity, "must not be null", predicate=f"{col} IS NOT NULL")
        rule.arrow = lambda v: v.column(cols[0]).is_valid()
        rule.kind, rule.single_column, rule.proof = "required", True, f"count({col}) = count(*)"
        return rule
    if kind == "range":
        assert r.range is not None
        conds, words, proofs = [], [], []
        if r.range.min is not None:
            conds.append(f"{col} >= {literal(r.range.min)}")
            words.append(f">= {r.range.min}")
            proofs.append(f"coalesce(min({col}) >= {literal(r.range.min)}, true)")
        if r.range.max is not None:
            conds.append(f"{col} <= {literal(r.range.max)}")
            words.append(f"<= {r.range.max}")
            proofs.append(f"coalesce(max({col}) <= {literal(r.range.max)}, true)")
        if not conds:
            raise ConfigError(f"validate: range rule {name!r} needs a min or a max")
        rule = RowRule(
            name, cols, r.severity, "must be " + " and ".join(words), f"{col} IS NULL OR ({' AND '.join(conds)})"
        )
        rule.arrow = _arrow_range(cols[0], r.range.min, r.range.max)
        # min and max within the bounds: no row outside them (a string column's statistics may be cut short:
        # the fast path proves only numbers and times this way, see _Validation._as_check)
        rule.kind, rule.single_column, rule.proof = "range", True, " AND ".join(proofs)
        return rule
    if kind == "enum":
        values = [v for v in r.enum or [] if v is not None]
        text = all(isinstance(v, str) for v in values)
        target = f"CAST({col} AS VARCHAR)" if text else col
        pred = f"{col} IS NULL OR {target} IN ({', '.join(literal(v) for v in values)})"
        rule = RowRule(name, cols, r.severity, f"must be one of {values}", pred)
        rule.arrow = _arrow_enum(cols[0], values, text)
        rule.kind, rule.single_column = "enum", True
        return rule
    if kind == "pattern":
        assert r.pattern is not None
        pred = f"{col} IS NULL OR regexp_matches(CAST({col} AS VARCHAR), {literal(r.pattern)})"
        rule = RowRule(name, cols, r.severity, f"must match {r.pattern!r}", pred)
        rule.arrow = _arrow_pattern(cols[0], r.pattern)
        rule.encodes = True
        rule.kind, rule.single_column = "pattern", True
        return rule
    if kind == "unique":
        return RowRule(name, cols, r.severity, "must be unique (another row has this key)", unique=True, kind="unique")
    assert r.sql is not None
    return RowRule(name, _columns_in(r.sql), r.severity, f"must satisfy {r.sql.strip()}", f"({r.sql})", kind="sql")


def _null_passes(col: pa.Array, cond: pa.Array) -> pa.Array:
    import pyarrow.compute as pc

    return pc.fill_null(pc.or_kleene(pc.is_null(col), cond), True)


# (pyarrow.compute, ~0.1 s to import, is imported where a batch is tested: the fast path never loads it)
def _arrow_range(column: str, lo: Any, hi: Any) -> Callable[[_Columns], pa.Array]:
    import pyarrow as pa

    @functools.lru_cache(maxsize=8)
    def bound(value: Any, typ: pa.DataType) -> pa.Scalar:
        if isinstance(value, str) and not _is_text(typ):
            return pa.scalar(value).cast(typ)  # dates and timestamps given as ISO strings
        try:  # in the column's type when exact (1 for an int32 column): else Arrow casts every row
            return pa.scalar(value).cast(typ)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            return pa.scalar(value)  # 0.5 against integers, 1e12 against int32: compared as a wider type

    def check(v: _Columns) -> pa.Array:
        import pyarrow.compute as pc

        col = v.column(column)
        conds = []
        if lo is not None:
            conds.append(pc.greater_equal(col, bound(lo, col.type)))
        if hi is not None:
            conds.append(pc.less_equal(col, bound(hi, col.type)))
        cond = conds[0] if len(conds) == 1 else pc.and_kleene(conds[0], conds[1])
        return _null_passes(col, cond)

    return check


def _arrow_enum(column: str, values: list[Any], text: bool) -> Callable[[_Columns], pa.Array]:
    import pyarrow as pa

    value_set = pa.array(values)

    def check(v: _Columns) -> pa.Array:
        import pyarrow.compute as pc

        col = v.column(column)
        if text and not _is_text(col.type):
            raise TypeError("not a string column: DuckDB's CAST AS VARCHAR decides")
        allowed = value_set.cast(col.type)
        # is_in hashes each row, as an encoding would: reuse one a pattern rule made, never make one
        return _null_passes(col, v.per_value(column, lambda x: pc.is_in(x, value_set=allowed), encode=False))

    return check


def _arrow_pattern(column: str, pattern: str) -> Callable[[_Columns], pa.Array]:
    def check(v: _Columns) -> pa.Array:
        import pyarrow.compute as pc

        col = v.column(column)
        if not _is_text(col.type):
            raise TypeError("not a string column: DuckDB's CAST AS VARCHAR decides")
        # RE2, as DuckDB's regexp_matches
        return _null_passes(col, v.per_value(column, lambda x: pc.match_substring_regex(x, pattern)))

    return check


class _Columns:
    """One batch's columns for the Arrow tests of the rules.

    A string column whose rows share few values (codes, statuses, currencies: the usual targets of
    enum and pattern rules) is dictionary-encoded once per batch, and the tests run on its distinct
    values only: a regular expression per row is by far the costliest rule. A column found to have
    many distinct values (over 1/8 of the rows) is remembered in ``wide`` and tested row by row
    from then on, where the encoding would not pay for itself.
    """

    def __init__(self, batch: pa.RecordBatch, wide: set[str]) -> None:
        self.batch = batch
        self.wide = wide
        self.encoded: dict[str, pa.DictionaryArray] = {}

    def column(self, name: str) -> pa.Array:
        return self.batch.column(name)

    def per_value(self, name: str, test: Callable[[pa.Array], pa.Array], *, encode: bool = True) -> pa.Array:
        """``test`` of every row's value: computed on the distinct values when they are few."""
        import pyarrow.compute as pc

        col = self.column(name)
        enc = self.encoded.get(name)
        if enc is None:
            if not encode or name in self.wide or not _is_text(col.type) or len(col) < 64:
                return test(col)
            enc = self.encoded[name] = pc.dictionary_encode(col)
            if len(enc.dictionary) * 8 > len(col):
                self.wide.add(name)
        return pc.take(test(enc.dictionary), enc.indices)


def _columns_in(expr: str) -> list[str]:
    """Columns an SQL expression names (for the DLQ's offending values): bare or quoted words."""
    return list(dict.fromkeys(w.strip('"') for w in re.findall(r'"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_]*', expr)))


def _contract_rules(ds: Dataset, checks: list[Check], schema: pa.Schema) -> tuple[list[RowRule], list[Check]]:
    """Contract checks split into row rules (predicates, unique/primary key) and dataset checks."""
    rules: list[RowRule] = []
    rest: list[Check] = []
    for c in checks:
        severity = "warn" if c.severity == "warning" else "error"
        column = ds.field(c.field).column if c.field and ds.field(c.field) else None  # type: ignore[union-attr]
        demand = c.requirement or c.name  # "must be >= 0": the reason reads `amount = -5 must be >= 0`
        if c.predicate is not None:
            rules.append(RowRule(c.id, [column] if column else [], severity, demand, predicate=c.predicate, check=c))
        elif c.kind == "unique" and column:
            rules.append(RowRule(c.id, [column], severity, demand, unique=True, kind="unique"))
        elif c.kind == "primary_key":
            keys = [
                f.column
                for f in sorted((f for f in ds.fields if f.primary_key), key=lambda f: f.primary_key_position or 0)
            ]
            rules.append(RowRule(c.id, keys, severity, demand, unique=True, kind="unique"))
        else:
            rest.append(c)
    return [r for r in rules if all(col in schema.names for col in r.columns)], rest


# Fast-path keys wait as Arrow arrays; past this many bytes they move to the DuckDB table (which
# spills to disk under the step's memory limit), so the buffer stays bounded.
_FLUSH_BYTES = 64 << 20


class _SeenKeys:
    """The keys a unique rule has let through so far: exact across batches, no loop over rows.

    Keys often arrive in increasing order (auto-increment ids, extracts sorted by key). A batch
    whose candidate keys are strictly increasing and all above the largest key seen so far is
    unique without any lookup: two vectorised Arrow comparisons. Any other batch (or a composite
    or unorderable key) is checked in DuckDB: its first occurrences anti-joined with the seen
    keys' table. Keys admitted on the fast path wait in an Arrow buffer and are appended to that
    table in bulk when a lookup needs them or the buffer passes ``_FLUSH_BYTES``.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, table: str, columns: list[str], types: dict[str, str]) -> None:
        self.con = con
        self.table = table
        self.columns = columns
        self.buffer: list[pa.RecordBatch] = []
        self.buffered = 0
        self.largest: pa.Scalar | None = None  # of every remembered key, when the key is orderable
        self.orderable: bool | None = None if len(columns) == 1 else False  # known at the first batch
        cols = ", ".join(f"{_ident(c)} {types[c]}" for c in columns)
        con.execute(f"CREATE TEMP TABLE {table} ({cols})")

    def keys(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        import pyarrow as pa

        return pa.RecordBatch.from_arrays([batch.column(c) for c in self.columns], names=self.columns)

    def check(self, keys: pa.RecordBatch, ok: pa.Array) -> pa.Array:
        """TRUE where a row passes: the first occurrence of its key among passing rows, a NULL in
        the key, or a row rejected by another rule whose key no passing row has taken."""
        import pyarrow.compute as pc

        has_key = _no_nulls(keys)
        candidates = ok if has_key is None else pc.and_(ok, has_key)
        before = self.largest
        firsts = self._firsts(keys, candidates, before)
        new = keys if pc.all(firsts).as_py() else keys.filter(firsts)
        self._remember(new)
        passes = firsts if has_key is None else pc.or_(firsts, pc.invert(has_key))
        rejected = pc.invert(ok) if has_key is None else pc.and_(pc.invert(ok), has_key)
        if pc.any(rejected).as_py():
            passes = pc.or_(passes, pc.and_(rejected, pc.invert(self._taken(keys, rejected, new, before))))
        return passes

    def _increasing(self, keys: pa.RecordBatch, candidates: pa.Array) -> bool:
        """The fast path's test: candidate keys strictly increasing and above every key seen."""
        import pyarrow.compute as pc

        col = keys.column(0)
        if self.orderable is None:
            self.orderable = _orderable(col.type)
        if not self.orderable:
            return False
        if not pc.all(candidates).as_py():
            col = col.filter(candidates)
        n = len(col)
        if n == 0:
            return True
        if n > 1 and not pc.all(pc.less(col.slice(0, n - 1), col.slice(1))).as_py():
            return False  # NaN compares false: it never takes the fast path
        return self.largest is None or bool(pc.greater(col[0], self.largest).as_py())

    def _firsts(self, keys: pa.RecordBatch, candidates: pa.Array, before: pa.Scalar | None) -> pa.Array:
        """TRUE at the first occurrence in the batch of each candidate key not seen before."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if self._increasing(keys, candidates):
            return candidates
        col = keys.column(0)
        if not self.orderable or pa.types.is_floating(col.type):  # (NaN and -0.0: DuckDB's equality decides)
            return self._lookup(keys, candidates)
        # Mostly increasing keys with a few repeats or late keys: those above every key seen need only the
        # batch's own first occurrences (an Arrow hash aggregate); the others a lookup among the seen keys
        # between their min and max, which the seen keys' zone maps keep short when keys mostly increase.
        above = candidates
        if before is not None:
            above = pc.and_(candidates, pc.fill_null(pc.greater(col, before), False))
        index = _row_index(keys.num_rows)
        fresh = pa.table({"k": col.filter(above), "i": index.filter(above)})
        first = fresh.group_by("k", use_threads=False).aggregate([("i", "min")]).column("i_min")
        firsts = pc.is_in(index, value_set=first.combine_chunks().cast(index.type))
        below = pc.and_(candidates, pc.invert(above))
        if pc.any(below).as_py():
            firsts = pc.or_(firsts, self._lookup(keys, below, bounded=True))
        return firsts

    def _lookup(self, keys: pa.RecordBatch, candidates: pa.Array, *, bounded: bool = False) -> pa.Array:
        """First occurrences in the batch of candidate keys not seen before (DuckDB anti-join); ``bounded``
        (an orderable single-column key): against the seen keys within the candidates' min and max only."""
        import pyarrow.compute as pc

        self._flush()
        index = _row_index(keys.num_rows)
        frame = _with(keys, oxiflow_i=index, oxiflow_c=candidates)
        names = ", ".join(f"f.{_ident(c)}" for c in self.columns)
        seen = self.table
        if bounded:  # the bounds computed by DuckDB, in its own types (no round trip through Python values)
            key = _ident(self.columns[0])
            lo, hi = (f"(SELECT {f}({key}) FROM oxiflow_validate_keys WHERE oxiflow_c)" for f in ("min", "max"))
            seen = f"(SELECT {key} FROM {self.table} WHERE {key} BETWEEN {lo} AND {hi})"
        self.con.register("oxiflow_validate_keys", frame)
        try:
            firsts = self.con.sql(
                f"SELECT min(f.oxiflow_i) FROM oxiflow_validate_keys f ANTI JOIN {seen} s ON {self._match()} "
                f"WHERE f.oxiflow_c GROUP BY {names}"
            ).to_arrow_table()
        finally:
            self.con.unregister("oxiflow_validate_keys")
        return pc.is_in(index, value_set=firsts.column(0).combine_chunks().cast(index.type))

    def _taken(
        self, keys: pa.RecordBatch, rejected: pa.Array, new: pa.RecordBatch, before: pa.Scalar | None
    ) -> pa.Array:
        """Of the rejected rows, TRUE where a passing row (this batch or earlier) has the key."""
        import pyarrow.compute as pc

        if not self.orderable:
            return self._in_table(keys, rejected)  # this batch's keys are remembered: one lookup
        col = keys.column(0)
        taken = pc.fill_null(pc.is_in(col, value_set=new.column(0)), False)
        if before is not None:  # only keys up to the largest seen before can be in the table
            old = pc.and_(rejected, pc.invert(pc.fill_null(pc.greater(col, before), True)))  # NaN: looked up
            if pc.any(old).as_py():
                taken = pc.or_(taken, self._in_table(keys, old))
        return taken

    def _in_table(self, keys: pa.RecordBatch, rows: pa.Array) -> pa.Array:
        import pyarrow.compute as pc

        self._flush()
        index = _row_index(keys.num_rows)
        frame = _with(keys, oxiflow_i=index, oxiflow_c=rows)
        self.con.register("oxiflow_validate_keys", frame)
        try:
            hits = self.con.sql(
                f"SELECT f.oxiflow_i FROM oxiflow_validate_keys f SEMI JOIN {self.table} s ON {self._match()} "
                "WHERE f.oxiflow_c"
            ).to_arrow_table()
        finally:
            self.con.unregister("oxiflow_validate_keys")
        return pc.is_in(index, value_set=hits.column(0).combine_chunks().cast(index.type))

    def _match(self) -> str:
        return " AND ".join(f"s.{_ident(c)} = f.{_ident(c)}" for c in self.columns)

    def _remember(self, new: pa.RecordBatch) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        if not new.num_rows:
            return
        if self.orderable:
            top = pc.max(new.column(0))
            if top.is_valid and (self.largest is None or pc.greater(top, self.largest).as_py()):
                self.largest = top
        # a copy: the batch's columns may share one allocation with every other column of it, which
        # a reference to the key column would keep alive (about 5x the keys' own memory)
        self.buffer.append(pa.RecordBatch.from_arrays([pa.concat_arrays([c]) for c in new.columns], names=self.columns))
        self.buffered += new.nbytes
        if self.buffered > _FLUSH_BYTES:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if not self.buffer:
            return
        pending = pa.Table.from_batches(self.buffer)
        self.con.register("oxiflow_validate_seen", pending)
        try:
            self.con.execute(f"INSERT INTO {self.table} SELECT * FROM oxiflow_validate_seen")
        finally:
            self.con.unregister("oxiflow_validate_seen")
        self.buffer, self.buffered = [], 0


@oxi(
    "validate",
    kind="transform",
    config=ValidateConfig,
    summary="Quality gate: row rules (contract and/or inline) to the DLQ, dataset and anomaly checks before commit.",
    example=(
        "- name: validate\n  config:\n    contract: contracts/orders.odcs.yaml\n    rules:\n"
        "      - {column: amount, range: {min: 0, max: 10000}}\n      - {column: order_id, unique: true}\n"
        "    max_invalid_ratio: 0.05\n    row_count: {min: 1}\n    anomalies: {row_count: {z: 3.5, runs: 20}}"
    ),
    max_inputs=None,
)
class Validate(Transform):
    config: ValidateConfig

    def transform(self, inputs: list[OxiData], ctx: StepContext) -> OxiData:
        loaded, plan, dataset = self._prepare(inputs[0].schema, ctx)
        return enforce(self.config, inputs, ctx, loaded=loaded, plan=plan, dataset=dataset)

    def _prepare(
        self, schema: pa.Schema, ctx: StepContext
    ) -> tuple[tuple[Contract, Dataset] | None, SchemaPlan | None, str]:
        """The contract and dataset (None without a contract), the schema-contract plan for data of this schema
        (None without modes), the dataset's name."""
        cfg = self.config
        if cfg.contract is None:
            return None, None, ""
        from oxiflow.contracts import load_contract
        from oxiflow.contracts.enforce import plan_schema, resolve_modes
        from oxiflow.contracts.enforcement import contract_settings, contract_shape

        contract = load_contract(str(ctx.input_path(cfg.contract)))
        ds = contract.dataset(cfg.dataset)
        modes = cfg.schema_contract or contract_settings(contract, ds).schema_contract
        plan = None
        if modes is not None:  # the data's shape against the contract's schema (no registry here)
            base, shape = contract_shape(ds, schema)
            plan = plan_schema(base, schema, resolve_modes(modes), shape)
            report = plan.report()
            ctx.metadata["schema_drift"] = report
            for item in report:
                log.warning("validate %s: contract %s: %s: %s", ctx.step_id, ds.name, _describe(item), item["action"])
            if plan.blocked:
                raise QualityError(
                    f"the data does not have the schema of contract {cfg.contract} (dataset {ds.name}) and "
                    f"schema_contract forbids the change: {'; '.join(plan.blocked)}",
                    step=ctx.step_id,
                    hint="fix the data or the contract, or choose another schema_contract mode",
                )
        return (contract, ds), plan, ds.name

    # -- the fast path: checked in place, then pushed down (plan/pushdown.py) ------------------------------
    def pushdown_ready(self) -> bool:
        return True  # decided at run time, by pushdown_check

    def pushdown_check(self, source: PushdownInput, ctx: StepContext) -> int:
        """Before a pushed-down write: measure every rule and check in one aggregate pass over the source
        (``_Validation.in_place``). When no row fails and every check passes, the step reports what streaming
        would have reported and its rows go on as they are (``pushdown_sql``); else StreamInstead, before
        anything is written. Errors (an unknown column, a broken SQL rule) stream too: the streaming path
        reports them as it always has. Returns the input's row count."""
        import duckdb

        from oxiflow.engine.duck import connect
        from oxiflow.plan.pushdown import StreamInstead

        if not source.narrow_scans:  # a CSV would be parsed twice: the pass would cost a second read
            raise StreamInstead(f"validate {ctx.step_id}: its input is not columnar")
        with _held_logs() as held:
            con = connect(ctx)
            try:
                schema = con.sql(f"SELECT * FROM ({source.sql}) LIMIT 0").to_arrow_table().schema
                loaded, plan, _ = self._prepare(schema, ctx)
                if plan is not None and not (
                    plan.passthrough and plan.unchecked is None and plan.target.equals(schema, check_metadata=True)
                ):
                    raise StreamInstead(f"validate {ctx.step_id}: schema_contract conforms the rows' schema")
                inputs = [OxiData(schema, iter(()))]
                rows = _Validation(self.config, inputs, ctx, loaded=loaded, con=con, probe=False).in_place(source)
            except (StreamInstead, RunCancelled):
                raise
            except Exception as exc:
                if ctx.cancel.is_set() or isinstance(exc, duckdb.InterruptException) or "INTERRUPT Error" in str(exc):
                    raise RunCancelled("query interrupted", step=ctx.step_id) from None
                text = " ".join(str(exc).split())[:300] or type(exc).__name__
                raise StreamInstead(f"validate {ctx.step_id}: {text}") from exc
            finally:
                con.close()
        for record in held:  # what compiling the rules logged (unsupported contract parts, drift, skipped checks)
            log.handle(record)
        log.info("validate %s: every rule and check passed in one pass over the input: written as read", ctx.step_id)
        self._checked = True
        return rows

    def pushdown_sql(self, input_view: str, ctx: StepContext) -> tuple[str, list[tuple[str, str]]]:
        from oxiflow.engine.duck import ident
        from oxiflow.plan.pushdown import StreamInstead

        if not getattr(self, "_checked", False):  # never write rows whose rules were not measured
            raise StreamInstead(f"validate {ctx.step_id}: its rules were not checked first")
        return f"SELECT * FROM {ident(input_view)}", []


@contextlib.contextmanager
def _held_logs() -> Iterator[list[logging.LogRecord]]:
    """This thread's records of the ``oxiflow.validate`` logger, held back: the fast path's pass compiles the
    rules as streaming would, and when it declines, streaming logs the same lines itself."""
    held: list[logging.LogRecord] = []
    me = threading.get_ident()

    def hold(record: logging.LogRecord) -> bool:
        if record.thread != me:
            return True
        held.append(record)
        return False

    log.addFilter(hold)
    try:
        yield held
    finally:
        log.removeFilter(hold)


def enforce(
    cfg: ValidateConfig,
    inputs: list[OxiData],
    ctx: StepContext,
    *,
    loaded: tuple[Contract, Dataset] | None = None,
    plan: SchemaPlan | None = None,
    dataset: str = "",
) -> OxiData:
    """``inputs[0]`` through ``plan``'s schema-contract modes (when given: contracts/enforce.py) and then ``cfg``'s
    rules and checks: what the ``validate`` step does, and what a sink does with its ``contract:``. The result has
    ``plan.target`` as its schema (the contract's required columns NOT NULL: their nulls were rejected)."""
    from oxiflow.contracts.enforce import Conformer

    data = inputs[0]
    conformer: Conformer | None = None
    if plan is not None and not (plan.passthrough and plan.unchecked is None):
        conformer = Conformer(plan, ctx, dataset)
        data = data.with_batches(conformer.stream(iter(data)), plan.stream_schema)
    # (the conformer's generator has not started: nothing to release when this raises)
    run = _Validation(cfg, [data, *inputs[1:]], ctx, loaded=loaded, upstream=conformer)
    out = plan.target if plan is not None else data.schema
    return data.with_batches(_seal(run.batches(), out), out)


def _seal(batches: Iterator[pa.RecordBatch], schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """The validated batches with ``schema``: the same columns, required ones declared NOT NULL (no null is left)."""
    import pyarrow as pa

    for batch in batches:
        yield batch if batch.schema.equals(schema) else pa.RecordBatch.from_arrays(batch.columns, schema=schema)


def _describe(item: dict[str, Any]) -> str:
    from oxiflow.contracts.schema_diff import Drift

    return Drift(item["column"], item["kind"], item["old"], item["new"]).describe()


class _Validation:
    """One attempt of the step: its DuckDB connection, compiled rules, counters."""

    def __init__(
        self,
        cfg: ValidateConfig,
        inputs: list[OxiData],
        ctx: StepContext,
        *,
        loaded: tuple[Contract, Dataset] | None = None,
        upstream: Conformer | None = None,
        con: duckdb.DuckDBPyConnection | None = None,
        probe: bool = True,
    ) -> None:
        from oxiflow.contracts.dlq_masking import pii_columns, protect
        from oxiflow.engine.duck import connect

        self.cfg = cfg
        self.loaded = loaded
        self.upstream = upstream  # schema-contract rejects before the rules: they count as invalid rows too
        self.max_invalid_ratio = cfg.max_invalid_ratio
        self.ctx = ctx
        self.data = inputs[0]
        self.schema = self.data.schema
        self.refs = dict(zip(ctx.input_ids[1:], inputs[1:], strict=False))
        self.stats = _Stats()
        self.outcomes: list[Outcome] = []
        self.con = connect(ctx) if con is None else con  # given: the caller closes it
        self.probe = probe  # try the rules on an empty batch (not for the fast path, which measures them in SQL)
        self.ds: Dataset | None = None
        self.contract_checks: list[Check] = []
        self.rules: list[RowRule] = []
        try:
            self._compile()
        except BaseException:
            if con is None:
                self.con.close()
            raise
        # every DLQ record is masked by the DLQ itself (contracts/dlq_masking.py): this step's policy
        self.masking = protect(
            ctx,
            pii_columns(self.ds) | set(cfg.dlq.pii_columns) if cfg.dlq.mask_pii else set(),
            salt=cfg.dlq.salt.get_secret_value() if cfg.dlq.salt else None,
            enabled=cfg.dlq.mask_pii,
        )
        self.materialise = bool(cfg.sql or cfg.references or self.contract_checks)
        self.history = cfg.history_key or (self.ds.name if self.ds else f"{ctx.pipeline or 'pipeline'}.{ctx.step_id}")

    # -- compiling -----------------------------------------------------------------------------------
    def _compile(self) -> None:
        from oxiflow.contracts.checks import DataShape, compile_checks

        cfg = self.cfg
        missing = {
            c
            for r in cfg.rules
            if r.kind != "sql"
            for c in ([r.column] if isinstance(r.column, str) else r.column or [])
        }
        missing -= set(self.schema.names)
        if missing:
            raise ConfigError(
                f"validate: rule column(s) not in the data: {', '.join(sorted(missing))}",
                step=self.ctx.step_id,
                hint=f"columns: {', '.join(self.schema.names)}",
            )
        if cfg.contract:
            from oxiflow.contracts import load_contract
            from oxiflow.contracts.enforcement import contract_settings

            if self.loaded is not None:
                contract, self.ds = self.loaded
            else:
                contract = load_contract(str(self.ctx.input_path(cfg.contract)))
                self.ds = contract.dataset(cfg.dataset)
            declared = contract_settings(contract, self.ds).max_invalid_ratio
            if declared is not None and "max_invalid_ratio" not in cfg.model_fields_set:
                self.max_invalid_ratio = declared  # the contract's own threshold, unless the step sets one
            self._report_unsupported(contract)
            duck_types = self._duck_types()
            # types sniffed or not, values are checked by casting them (a CSV's `id` read as integer
            # still satisfies `logicalType: string`): what matters is the value, not the reader's guess
            checks = compile_checks(self.ds, DataShape(self.schema, duck_types, sniffed=True), contract.sla)
            for c in checks:
                if c.schema_only and c.static_failure is not None:
                    if c.severity == "warning":
                        log.warning("validate %s: %s", self.ctx.step_id, c.static_failure)
                        continue
                    raise QualityError(
                        f"contract {cfg.contract}: {c.static_failure}",
                        step=self.ctx.step_id,
                        hint="fix the data's schema or the contract",
                    )
            row_rules, self.contract_checks = _contract_rules(
                self.ds, [c for c in checks if not c.schema_only], self.schema
            )
            self.rules.extend(row_rules)
        self.rules.extend(_inline_rule(i, r) for i, r in enumerate(cfg.rules))
        for r in self.rules:  # an sql rule's offending values: the words of its expression that are columns
            r.columns = [c for c in r.columns if c in self.schema.names]
        types = self._duck_types()
        self.seen = {
            i: _SeenKeys(self.con, f"seen_{i}", r.columns, types) for i, r in enumerate(self.rules) if r.unique
        }
        self.seen_dataset = (
            _SeenKeys(self.con, "seen_dataset", cfg.unique.columns, types) if cfg.unique is not None else None
        )
        self.dup_keys = 0
        self.wide: set[str] = set()  # string columns with too many distinct values to encode
        if not self.probe:
            return
        # checked now, not after the whole stream: a typo in an expression fails before any row moves
        probe = __import__("pyarrow").RecordBatch.from_pylist([], schema=self.schema)
        for r in self.rules:
            if r.arrow is not None:
                try:
                    r.arrow(_Columns(probe, set()))
                except Exception:  # a type Arrow cannot compare this way: DuckDB evaluates the SQL form
                    r.arrow = None
        self._evaluate(probe)

    def _report_unsupported(self, contract: Contract) -> None:
        """The parts of the contract this run does not check, in the log and the step's metadata (as `lint` lists
        them): a contract's promise that is not kept must not look kept."""
        if not contract.unsupported:
            return
        self.ctx.metadata["contract_unsupported"] = list(contract.unsupported)
        log.warning(
            "%s %s: contract %s has %d part(s) oxiflow does not check: %s",
            self.ctx.oxi_name, self.ctx.step_id, self.cfg.contract, len(contract.unsupported),
            "; ".join(contract.unsupported),
        )  # fmt: skip

    def _duck_types(self) -> dict[str, str]:
        """Column -> the DuckDB type DuckDB gives it (for the seen-keys tables and bounds)."""
        import pyarrow as pa

        self.con.register("oxiflow_validate_shape", pa.RecordBatch.from_pylist([], schema=self.schema))
        try:
            return {n: str(t) for n, t, *_ in self.con.execute("DESCRIBE oxiflow_validate_shape").fetchall()}
        finally:
            self.con.unregister("oxiflow_validate_shape")

    # -- per batch -----------------------------------------------------------------------------------
    def _evaluate(self, batch: pa.RecordBatch) -> list[pa.Array]:
        """Per predicate rule a boolean array, TRUE where the row passes (one query for all)."""
        import duckdb

        out: dict[int, pa.Array] = {}
        view = _Columns(batch, self.wide)
        for i, r in sorted(enumerate(self.rules), key=lambda ir: not ir[1].encodes):
            if r.arrow is not None:
                out[i] = r.arrow(view)
        preds = [(i, r) for i, r in enumerate(self.rules) if r.predicate is not None and r.arrow is None]
        order = [i for i, r in enumerate(self.rules) if r.predicate is not None]
        if not preds:
            return [out[i] for i in order]
        cols = ", ".join(f"coalesce({r.predicate}, true) AS r{i}" for i, r in preds)
        self.con.register("oxiflow_validate_batch", batch)
        try:
            table = self.con.sql(f"SELECT {cols} FROM oxiflow_validate_batch").to_arrow_table()
        except duckdb.Error as exc:
            bad = next((r for _, r in preds if not self._compiles(r)), None)
            what = f"rule {bad.name!r} ({bad.predicate})" if bad else "a rule"
            raise ConfigError(
                f"validate: {what} is not valid SQL here: {str(exc).splitlines()[0]}", step=self.ctx.step_id
            ) from None
        finally:
            self.con.unregister("oxiflow_validate_batch")
        for k, (i, _) in enumerate(preds):
            out[i] = table.column(k).combine_chunks()
        return [out[i] for i in order]

    def _compiles(self, rule: RowRule) -> bool:
        import duckdb

        try:
            self.con.sql(f"SELECT coalesce({rule.predicate}, true) FROM oxiflow_validate_batch LIMIT 0").fetchall()
            return True
        except duckdb.Error:
            return False

    def _check_batch(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        import pyarrow as pa
        import pyarrow.compute as pc

        n = batch.num_rows
        results: list[pa.Array | None] = [None] * len(self.rules)
        for (i, _), arr in zip(
            ((i, r) for i, r in enumerate(self.rules) if r.predicate is not None), self._evaluate(batch), strict=True
        ):
            results[i] = arr
        ok = pa.repeat(True, n)
        ok = _all_true(
            ok, [a for a, r in zip(results, self.rules, strict=True) if a is not None and r.severity == "error"]
        )
        for i, r in enumerate(self.rules):
            if r.unique:
                seen = self.seen[i]
                results[i] = seen.check(seen.keys(batch), ok)
                if r.severity == "error":
                    ok = pc.and_(ok, results[i])
        for r, arr in zip(self.rules, results, strict=True):
            assert arr is not None
            failed = n - (pc.sum(arr).as_py() or 0)
            if failed:
                counter = self.stats.rule_failures if r.severity == "error" else self.stats.warnings
                counter[r.name] = counter.get(r.name, 0) + failed
        bad = n - (pc.sum(ok).as_py() or 0) if n else 0
        if bad:
            self._reject(batch, ok, results, bad)
        return batch if not bad else batch.filter(ok)

    def _reject(self, batch: pa.RecordBatch, ok: pa.Array, results: list[Any], bad: int) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        ctx = self.ctx
        self.stats.invalid += bad
        invalid = pc.invert(ok)
        idx = pc.indices_nonzero(invalid)
        first_row = self.stats.rows_in - batch.num_rows
        errors = [
            (r, a.take(idx).to_pylist()) for r, a in zip(self.rules, results, strict=True) if r.severity == "error"
        ]
        if self.cfg.on_invalid == "fail":
            row = batch.take(pa.array(idx[:1])).to_pylist()[0]
            r = next(r for r, passed in errors if passed[0] is False)
            raise QualityError(
                f"row {first_row + idx[0].as_py() + 1} of the input fails {r.name}: {self._why(r, row)}",
                step=ctx.step_id,
                column=r.columns[0] if r.columns else None,
                hint="fix the data, or set on_invalid: dlq (or drop)",
            )
        if self.cfg.on_invalid == "drop":
            ctx.filtered(bad)
            return
        ctx.reject(bad)
        if ctx.dlq is None:
            return
        rows = batch.take(idx).to_pylist()
        # only the rejected rows become Python objects: the DLQ stores them as JSON records (masking PII itself)
        for k, row in enumerate(rows):
            failed = [r for r, passed in errors if passed[k] is False]
            values = {c: row.get(c) for r in failed for c in r.columns if c in row}
            ctx.dlq.put(
                step=ctx.step_id,
                oxi=ctx.oxi_name,
                rule=", ".join(r.name for r in failed),
                reason="; ".join(self._why(r, row) for r in failed),
                raw=row,
                values=values,
                column=failed[0].columns[0] if failed and len(failed[0].columns) == 1 else None,
                schema=self.schema,
            )

    def _why(self, rule: RowRule, row: dict[str, Any]) -> str:
        shown = ", ".join(f"{c} = {self._show(c, row.get(c))}" for c in rule.columns if c in row)
        return f"{shown} {rule.describe}" if shown else rule.describe

    def _show(self, column: str, value: Any) -> str:
        return self.masking.show(column, value)

    def _measure(self, batch: pa.RecordBatch) -> None:
        import pyarrow.compute as pc

        s = self.stats
        s.rows_out += batch.num_rows
        for name, col in zip(batch.schema.names, batch.columns, strict=True):
            s.nulls[name] = s.nulls.get(name, 0) + col.null_count
            if _numeric(col.type) and batch.num_rows:
                total = pc.sum(col).as_py()
                if total is not None:
                    s.sums[name] = s.sums.get(name, 0.0) + float(total)
                s.counts[name] = s.counts.get(name, 0) + batch.num_rows - col.null_count
        fresh = self.cfg.freshness
        if fresh is not None and batch.num_rows:
            newest = pc.max(batch.column(fresh.column)).as_py()
            if newest is not None and (s.newest is None or newest > s.newest):
                s.newest = newest
        if self.cfg.unique is not None and batch.num_rows:
            self._dataset_unique(batch)
        if self.materialise and batch.num_rows:
            self.con.register("oxiflow_validate_batch", batch)
            try:
                if not getattr(self, "_data_created", False):
                    self.con.execute("CREATE TEMP TABLE oxiflow_validated AS SELECT * FROM oxiflow_validate_batch")
                    self._data_created = True
                else:
                    self.con.execute("INSERT INTO oxiflow_validated SELECT * FROM oxiflow_validate_batch")
            finally:
                self.con.unregister("oxiflow_validate_batch")

    def _dataset_unique(self, batch: pa.RecordBatch) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        seen = self.seen_dataset
        assert seen is not None
        passes = seen.check(seen.keys(batch), pa.repeat(True, batch.num_rows))  # a NULL in the key passes
        self.dup_keys += batch.num_rows - (pc.sum(passes).as_py() or 0)

    def batches(self) -> Iterator[pa.RecordBatch]:
        ctx = self.ctx
        try:
            for batch in self.data:
                if ctx.limit_rows == 0:  # explain probes the schema: no checks
                    continue
                self.stats.rows_in += batch.num_rows
                out = self._check_batch(batch) if batch.num_rows else batch
                self._measure(out)
                yield out
            if ctx.limit_rows == 0:
                return
            self._finish()
        finally:
            self.con.close()

    # -- the fast path: the same figures from one pass over the source, in place ---------------------
    def in_place(self, source: PushdownInput) -> int:
        """Measure every rule, the figures of the dataset checks and of the history, in one aggregate pass over
        the source (``checks.evaluate``, with the columnar shortcuts of ``oxi contract test``), then conclude as
        at the end of a stream. Raises StreamInstead unless no row fails any rule (whatever its severity) and
        every check passes: only then are the figures exactly those streaming would have measured, since every
        row passes and dataset checks measure the passing rows. Nothing is recorded before that is known."""
        import pyarrow as pa

        from oxiflow.contracts.checks import Check, evaluate
        from oxiflow.contracts.model import Dataset
        from oxiflow.plan.pushdown import StreamInstead

        con, cfg, s = self.con, self.cfg, self.stats
        step = self.ctx.step_id
        nested = [f.name for f in self.schema if pa.types.is_nested(f.type) and _holds_floats(f.type)]
        if nested:  # see below: a NaN in them could not be ruled out
            raise StreamInstead(f"validate {step}: column {nested[0]} holds nested floating-point values")
        con.execute(f"CREATE TEMP VIEW oxiflow_input AS {source.sql}")
        types = self._duck_types()
        rules: list[tuple[RowRule, Check]] = []
        for i, r in enumerate(self.rules):
            check = self._as_check(i, r, types)
            if check is None:
                raise StreamInstead(f"validate {step}: rule {r.name} has no SQL form")
            rules.append((r, check))
        # The figures _measure takes from the stream, for the history and null_rate: null counts (count(col) is
        # count(*) from the footers when they say there are none) and sums. A floating-point column's sum is
        # taken anyway: it is NaN when the column holds a NaN, and then the pass cannot stand in for streaming
        # (Arrow, the streaming range test, fails NaN against any bound where DuckDB calls it the largest value,
        # and DuckDB's scan of a Parquet file whose statistics leave NaN out, as pyarrow writes them, folds
        # predicates as if there were none). fsum: correctly rounded, where DuckDB's parallel sum of doubles
        # varies in the last digits from run to run.
        figures: list[Check] = []
        counted = self._table() is not None or cfg.null_rate is not None
        for f in self.schema:
            col = _ident(f.name)
            if counted:
                figures.append(Check(f"oxiflow.count:{f.name}", "", f.name, "figure", "n", aggregate=f"count({col})"))
            if pa.types.is_floating(f.type) or (counted and _numeric(f.type)):
                adding = f"fsum({col})" if pa.types.is_floating(f.type) else f"sum({col})"
                figures.append(Check(f"oxiflow.sum:{f.name}", "", f.name, "figure", "sum", aggregate=adding))
        if cfg.unique is not None:
            figures.append(_repeats_check("oxiflow.unique", "figure", "duplicates", cfg.unique.columns))
        ds = self.ds or Dataset("data")
        found = evaluate(
            con, "oxiflow_input", ds, [c for _, c in rules] + figures,
            narrow_scans=source.narrow_scans, metadata_stats=source.metadata_stats,
        )  # fmt: skip
        measured = {r.check.id: r.measured for r in found.results}
        for f in self.schema:
            sum_ = measured.get(f"oxiflow.sum:{f.name}")
            if isinstance(sum_, float) and math.isnan(sum_):
                raise StreamInstead(f"validate {step}: column {f.name} holds NaN (or both infinities)")
        for r, c in rules:
            if measured[c.id]:
                raise StreamInstead(f"validate {step}: {measured[c.id]} row(s) fail {r.name}")
        s.rows_in = s.rows_out = found.rows
        if found.rows and counted:
            for f in self.schema:
                present = int(measured[f"oxiflow.count:{f.name}"])
                s.nulls[f.name] = found.rows - present
                if _numeric(f.type):
                    s.counts[f.name] = present
                    total = measured[f"oxiflow.sum:{f.name}"]
                    if total is not None:
                        s.sums[f.name] = float(total)
        if cfg.unique is not None:
            self.dup_keys = int(measured["oxiflow.unique"])
        if cfg.freshness is not None and found.rows:
            # through Arrow, as the stream's batches: the same Python value (dates, zones, units)
            newest = con.sql(f"SELECT max({_ident(cfg.freshness.column)}) FROM oxiflow_input").to_arrow_table()
            s.newest = newest.column(0)[0].as_py()
        # the dataset checks that need the rows (references, sql, the contract's aggregates) read them in place
        con.execute("CREATE TEMP VIEW oxiflow_validated AS SELECT * FROM oxiflow_input")
        self._data_created = True
        self._conclude()
        off = next((o for o in self.outcomes if o.status not in ("passed", "skipped")), None)
        if off is not None:
            raise StreamInstead(f"validate {step}: check {off.name} {off.status}: {off.reason}")
        self._record_stats()
        return found.rows

    def _as_check(self, i: int, r: RowRule, types: dict[str, str]) -> Check | None:
        """The rule as ``checks.evaluate`` measures it: the number of rows failing it (all rows pass the other
        rules here, so a unique key fails on its repeats: non-NULL keys, as the streaming rule counts them).
        None when it has no SQL form."""
        import dataclasses

        import pyarrow as pa

        from oxiflow.contracts.checks import Check

        cid = f"oxiflow.rule[{i}]"
        if r.unique:
            return _repeats_check(cid, "unique", r.name, r.columns)
        if r.predicate is None:
            return None
        if r.check is not None:  # a contract's: compiled for this schema, with contract test's hints
            return dataclasses.replace(r.check, id=cid)
        col = r.columns[0] if r.single_column and r.columns else None
        typ = self.schema.field(col).type if col is not None else None
        text = col if col is not None and types.get(col) == "VARCHAR" else None
        # min/max proofs for numbers and times only (string statistics may be truncated)
        provable = typ is not None and (pa.types.is_integer(typ) or pa.types.is_floating(typ)
                                        or pa.types.is_decimal(typ) or pa.types.is_temporal(typ))  # fmt: skip
        proof = r.proof if text is None and (r.kind == "required" or provable) else None
        return Check(cid, "", col, r.kind or "sql", r.name, predicate=r.predicate, text_column=text, proof=proof)

    # -- at the end of the stream --------------------------------------------------------------------
    def _finish(self) -> None:
        failed = self._conclude()
        if failed:
            first = failed[0]
            more = f" (and {len(failed) - 1} more check(s) failed)" if len(failed) > 1 else ""
            raise QualityError(
                f"quality check {first.name} failed: {first.reason}{more}; nothing downstream is committed",
                step=self.ctx.step_id,
                hint="see the step's metadata `validate.checks`; invalid rows are in the DLQ (`oxiflow dlq list`)",
            )
        self._record_stats()

    def _conclude(self) -> list[Outcome]:
        """Every check's outcome from the figures in ``self.stats``, into the step's metadata; the failed ones."""
        s, ctx = self.stats, self.ctx
        if self.upstream is not None and self.upstream.rows_rejected:
            # rows the schema-contract modes rejected before the rules saw them are invalid input rows too
            s.rows_in += self.upstream.rows_rejected
            s.invalid += self.upstream.rows_rejected
        ratio = s.invalid / s.rows_in if s.rows_in else 0.0
        limit = self.max_invalid_ratio
        self.outcomes.append(
            Outcome(
                "max_invalid_ratio",
                "invalid_ratio",
                "error",
                "passed" if ratio <= limit else "failed",
                round(ratio, 6),
                "" if ratio <= limit else
                f"{s.invalid} of {s.rows_in} rows invalid ({ratio:.2%}) > max_invalid_ratio {limit:.2%}",
            )
        )  # fmt: skip
        self._dataset_checks()
        self._anomalies()
        for r, n in s.warnings.items():
            log.warning("validate %s: %d row(s) fail %s (severity warn: they pass)", ctx.step_id, n, r)
        failed = [o for o in self.outcomes if o.status == "failed"]
        for o in self.outcomes:
            if o.status == "warning":
                log.warning("validate %s: %s: %s", ctx.step_id, o.name, o.reason)
        ctx.metadata["validate"] = {
            "rows_in": s.rows_in,
            "rows_valid": s.rows_out,
            "rows_invalid": s.invalid,
            "invalid_ratio": round(ratio, 6),
            "rule_failures": s.rule_failures,
            "warnings": s.warnings,
            "checks": [o.to_dict() for o in self.outcomes],
        }
        return failed

    def _add(self, name: str, kind: str, severity: str, ok: bool, measured: Any, reason: str) -> None:
        status = "passed" if ok else ("warning" if severity == "warn" else "failed")
        self.outcomes.append(Outcome(name, kind, severity, status, _plain(measured), "" if ok else reason))

    def _dataset_checks(self) -> None:
        s, cfg = self.stats, self.cfg
        if cfg.row_count is not None:
            rc = cfg.row_count
            ok = (rc.min is None or s.rows_out >= rc.min) and (rc.max is None or s.rows_out <= rc.max)
            self._add("row_count", "row_count", rc.severity, ok, s.rows_out,
                      f"{s.rows_out} rows, expected between {rc.min if rc.min is not None else '-'} and "
                      f"{rc.max if rc.max is not None else '-'}")  # fmt: skip
        if cfg.null_rate is not None:
            nr = cfg.null_rate
            for c in nr.columns or self.schema.names:
                rate = s.nulls.get(c, 0) / s.rows_out if s.rows_out else 0.0
                self._add(f"null_rate({c})", "null_rate", nr.severity, rate <= nr.max, round(rate, 6),
                          f"{rate:.2%} of {c} is null > {nr.max:.2%}")  # fmt: skip
        if cfg.unique is not None:
            u = cfg.unique
            self._add(f"unique({', '.join(u.columns)})", "unique", u.severity, self.dup_keys == 0, self.dup_keys,
                      f"{self.dup_keys} duplicate key(s)")  # fmt: skip
        if cfg.freshness is not None:
            self._freshness(cfg.freshness)
        for ref in cfg.references:
            self._reference(ref)
        if self.materialise:
            self._ensure_data()
            for i, q in enumerate(cfg.sql):
                self._sql_check(i, q)
            if self.contract_checks and self.ds is not None:
                self._contract_aggregates()

    def _ensure_data(self) -> None:
        if not getattr(self, "_data_created", False):
            empty = __import__("pyarrow").RecordBatch.from_pylist([], schema=self.schema)
            self.con.register("oxiflow_validate_batch", empty)
            self.con.execute("CREATE TEMP TABLE oxiflow_validated AS SELECT * FROM oxiflow_validate_batch")
            self.con.unregister("oxiflow_validate_batch")
            self._data_created = True
        self.con.execute("CREATE OR REPLACE TEMP VIEW data AS SELECT * FROM oxiflow_validated")

    def _freshness(self, f: FreshnessCheck) -> None:
        from datetime import UTC, date, datetime

        max_age = parse_age(f.max_age)
        newest = self.stats.newest
        if newest is None:
            self._add(f"freshness({f.column})", "freshness", f.severity, False, None, f"no {f.column} values")
            return
        if isinstance(newest, datetime):
            now = datetime.now(UTC) if newest.tzinfo else datetime.now(UTC).replace(tzinfo=None)
            age = (now - newest).total_seconds()
        elif isinstance(newest, date):
            age = (datetime.now(UTC).date() - newest).days * 86400.0
        else:
            self._add(
                f"freshness({f.column})",
                "freshness",
                f.severity,
                False,
                str(newest),
                f"{f.column} is not a date or timestamp",
            )
            return
        self._add(f"freshness({f.column})", "freshness", f.severity, age <= max_age, str(newest),
                  f"newest {f.column} {newest} is {age / 3600:.1f}h old > {f.max_age}")  # fmt: skip

    def _reference(self, ref: ReferenceCheck) -> None:
        key = ref.key or ref.column
        name = f"references({ref.column} -> {ref.dataset}.{key})"
        create = f"CREATE OR REPLACE TEMP TABLE oxiflow_ref AS SELECT DISTINCT {_ident(key)} AS k FROM "
        if ref.dataset in self.refs:
            self._ref_from_stream(create, self.refs[ref.dataset])
        else:
            from oxiflow.pipe.inputs import open_input

            opened = open_input(str(self.ctx.input_path(ref.dataset)), None)
            scan = opened.scan()
            if scan is not None:
                self.con.execute(f"{create}({scan.sql})")
            else:
                self._ref_from_stream(create, opened.data())
        self._ensure_data()
        col = _ident(ref.column)
        row = self.con.execute(
            f"SELECT count(*), any_value({col}) FROM oxiflow_validated WHERE {col} IS NOT NULL "
            f"AND {col} NOT IN (SELECT k FROM oxiflow_ref WHERE k IS NOT NULL)"
        ).fetchone()
        missing, example = (int(row[0]), row[1]) if row else (0, None)
        self._add(name, "references", ref.severity, missing == 0, missing,
                  f"{missing} row(s) have a {ref.column} not in {ref.dataset}.{key} (e.g. {example!r})")  # fmt: skip

    def _ref_from_stream(self, create: str, data: OxiData) -> None:
        self.con.register("oxiflow_validate_ref_stream", data.to_reader())
        try:
            self.con.execute(create + "oxiflow_validate_ref_stream")
        finally:
            self.con.unregister("oxiflow_validate_ref_stream")

    def _sql_check(self, i: int, q: SqlCheck) -> None:
        import duckdb

        name = q.name or f"sql[{i}]"
        try:
            row = self.con.execute(f"SELECT count(*) FROM ({q.query.strip().rstrip(';')})").fetchone()
        except duckdb.Error as exc:
            raise ConfigError(
                f"validate: sql check {name!r} failed: {str(exc).splitlines()[0]}", step=self.ctx.step_id
            ) from None
        n = int(row[0]) if row else 0
        self._add(name, "sql", q.severity, n == 0, n, f"the query returned {n} offending row(s)")

    def _contract_aggregates(self) -> None:
        from oxiflow.contracts.checks import run_checks

        assert self.ds is not None
        for name in {self.ds.name, self.ds.physical_name} - {None}:
            self.con.execute(f"CREATE OR REPLACE TEMP VIEW {_ident(str(name))} AS SELECT * FROM oxiflow_validated")
        for r in run_checks(self.con, "oxiflow_validated", self.ds, self.contract_checks):
            severity = "warn" if r.check.severity == "warning" else "error"
            status = {"passed": "passed", "warning": "warning"}.get(r.status, "failed")
            self.outcomes.append(Outcome(r.check.id, r.check.kind, severity, status, _plain(r.measured), r.reason))

    # -- anomalies -----------------------------------------------------------------------------------
    def _table(self) -> Any:
        store = getattr(self.ctx.dlq, "store", None)
        if store is None:
            return None
        from oxiflow.state.dlq import DlqTable

        return DlqTable(store)

    def _current(self) -> tuple[int, dict[str, float], dict[str, float | None]]:
        s = self.stats
        rates = {c: (s.nulls.get(c, 0) / s.rows_out if s.rows_out else 0.0) for c in self.schema.names}
        means = {c: (s.sums[c] / s.counts[c] if s.counts.get(c) and c in s.sums else None) for c in s.counts}
        return s.rows_out, rates, means

    def _anomalies(self) -> None:
        a = self.cfg.anomalies
        if a is None:
            return
        from oxiflow.contracts.anomaly import robust_z

        table = self._table()
        if table is None:
            log.info("validate %s: anomaly checks skipped: the run has no state store (--no-state)", self.ctx.step_id)
            for kind in ("row_count", "null_rate", "mean"):
                if getattr(a, kind) is not None:
                    self._skip(f"anomaly {kind}", kind, "no state store")
            return
        rows, rates, means = self._current()
        for kind in ("row_count", "null_rate", "mean"):
            check: Anomaly | None = getattr(a, kind)
            if check is None:
                continue
            label = f"anomaly {kind}" + (f"({check.column})" if check.column else "")
            history = table.stats_history(self.history, check.runs, exclude_run=self.ctx.run_id)
            if kind == "row_count":
                values, x = [float(h["row_count"]) for h in history], float(rows)
            elif kind == "null_rate":
                values = [
                    float(h["null_rate"][check.column]) for h in history if h["null_rate"].get(check.column) is not None
                ]
                x = rates.get(check.column or "", 0.0)
            else:
                values = [float(h["means"][check.column]) for h in history if h["means"].get(check.column) is not None]
                mean = means.get(check.column or "")
                if mean is None:
                    self._skip(label, f"anomaly_{kind}", f"no numeric values in {check.column}")
                    continue
                x = mean
            if len(values) < check.min_runs:
                log.info("validate %s: %s skipped: %d earlier run(s) of %s, needs %d",
                         self.ctx.step_id, label, len(values), self.history, check.min_runs)  # fmt: skip
                self._skip(label, f"anomaly_{kind}", f"{len(values)} earlier run(s), needs {check.min_runs}")
                continue
            z = robust_z(x, values)
            self._add(label, f"anomaly_{kind}", check.severity, abs(z) <= check.z, {"value": x, "z": _round(z)},
                      f"{x:g} is {_round(z)} robust z from the last {len(values)} runs (|z| > {check.z})")  # fmt: skip

    def _skip(self, name: str, kind: str, reason: str) -> None:
        self.outcomes.append(Outcome(name, kind, "warn", "skipped", None, reason))

    def _record_stats(self) -> None:
        table = self._table()
        if table is None:
            return
        rows, rates, means = self._current()
        try:
            table.record_stats(
                self.history, self.ctx.run_id, pipeline=self.ctx.pipeline, step=self.ctx.step_id,
                row_count=rows, null_rate=rates, means=means,
            )  # fmt: skip
        except Exception as exc:  # history is a convenience: a store hiccup must not fail valid data
            log.warning("validate %s: could not record statistics for anomaly checks: %s", self.ctx.step_id, exc)


def _repeats_check(cid: str, kind: str, name: str, columns: list[str]) -> Check:
    """The rows a unique key rejects as repeats, as ``checks.evaluate`` measures them: the key is the column, or
    the tuple when no part of it is NULL (a NULL anywhere in a key passes), and ``count(key) - count(DISTINCT
    key)`` counts its repeats."""
    from oxiflow.contracts.checks import Check

    if len(columns) == 1:
        key = _ident(columns[0])
    else:
        cols = [_ident(c) for c in columns]
        key = f"CASE WHEN {' AND '.join(f'{c} IS NOT NULL' for c in cols)} THEN row({', '.join(cols)}) END"
    return Check(cid, "", None, kind, name, aggregate=f"count({key}) - count(DISTINCT {key})", key=key)


def _holds_floats(t: pa.DataType) -> bool:
    import pyarrow as pa

    if pa.types.is_floating(t):
        return True
    return any(_holds_floats(t.field(i).type) for i in range(t.num_fields)) if pa.types.is_nested(t) else False


def _all_true(ok: pa.Array, arrays: list[pa.Array]) -> pa.Array:
    import pyarrow.compute as pc

    for a in arrays:
        ok = pc.and_(ok, a)
    return ok


def _numeric(t: pa.DataType) -> bool:
    import pyarrow as pa

    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)


def _ident(name: str) -> str:
    from oxiflow.engine.duck import ident

    return ident(name)


def _round(z: float) -> float | str:
    return str(z) if math.isinf(z) else round(z, 3)


def _plain(value: Any) -> Any:
    from oxiflow.contracts.checks import _plain as plain

    return plain(value)


def _row_index(n: int) -> pa.Array:
    """0 .. n-1 as an Arrow array, without a Python range."""
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.indices_nonzero(pa.repeat(True, n))


def _with(keys: pa.RecordBatch, **extra: pa.Array) -> pa.RecordBatch:
    import pyarrow as pa

    return pa.RecordBatch.from_arrays([*keys.columns, *extra.values()], names=[*keys.schema.names, *extra])


def _no_nulls(keys: pa.RecordBatch) -> pa.Array | None:
    """TRUE where no key column is NULL; None when no column has a NULL at all."""
    import pyarrow.compute as pc

    valid = [pc.is_valid(c) for c in keys.columns if c.null_count]
    return _all_true(valid[0], valid[1:]) if valid else None


def _orderable(typ: pa.DataType) -> bool:
    """Arrow can compare values of this type (the fast path's test)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        empty = pa.array([], typ)
        pc.less(empty, empty)
        return True
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid, TypeError):
        return False


def _is_text(t: pa.DataType) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_string(t) or pa.types.is_large_string(t))
