"""The relational verbs.

Per batch (streaming, constant memory): ``filter``, ``select``, ``rename``, ``cast``, ``derive``.
SQL expressions run in one DuckDB connection per step over each batch; untouched columns are
passed through as Arrow arrays, so their types and field metadata (contract facts) survive.
Over the whole stream (DuckDB, spilling past the memory limit): ``dedupe``, ``sort``.
``limit`` stops reading once it has its rows; the engine drains and counts the rest.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, Literal

import pyarrow as pa
from pydantic import Field, model_validator

from oxiflow.data import OxiData
from oxiflow.engine.duck import connect, ident
from oxiflow.errors import DataError
from oxiflow.oxi import BatchTransform, OxiConfig, StepContext, Transform, oxi
from oxiflow.oxis.transforms.sql import check_columns, conform, duck_error, step_error, stream_sql

SEQ = "__oxiflow_seq"  # input position, for stable sorts and first/last in dedupe


def _empty(schema: pa.Schema) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([], schema=schema)


class _DuckBatch(BatchTransform):
    """A per-batch transform that evaluates SQL over each batch, registered as ``input``."""

    what = "expression"
    _con: Any = None

    def sql(self, batch: pa.RecordBatch, query: str, ctx: StepContext) -> pa.Table:
        if self._con is None:
            self._con = connect(ctx)  # one connection per step: registering a batch is ~1 ms
        try:
            self._con.register("input", batch)
            return self._con.sql(query).to_arrow_table()
        except Exception as exc:
            raise duck_error(exc, ctx, self.what) from None

    def transform(self, inputs: list[OxiData], ctx: StepContext) -> OxiData:
        data = inputs[0]
        try:
            schema = self.output_schema(data.schema, ctx)
        except BaseException:
            self.close()
            raise

        def batches() -> Iterator[pa.RecordBatch]:
            try:
                for batch in data:
                    out = self.transform_batch(batch, ctx)
                    if out.num_rows:
                        yield conform(out, schema)
            finally:
                self.close()

        return data.with_batches(batches(), schema)

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None


def _column(table: pa.Table, i: int) -> pa.Array:
    return table.column(i).combine_chunks()


# -- filter -----------------------------------------------------------------------------------------
class FilterConfig(OxiConfig):
    expr: str = Field(min_length=1)
    """A DuckDB boolean expression over the columns, e.g. `amount > 100 and status = 'paid'`.
    Rows where it is false or null are dropped (counted as filtered)."""


@oxi(
    "filter",
    kind="transform",
    config=FilterConfig,
    summary="Keep the rows where a SQL expression is true.",
    example="- name: filter\n  config:\n    expr: amount > 100 and status <> 'cancelled'",
)
class Filter(_DuckBatch):
    config: FilterConfig
    what = "filter expression"

    def output_schema(self, schema: pa.Schema, ctx: StepContext) -> pa.Schema:
        typ = self.sql(_empty(schema), f"SELECT ({self.config.expr}) AS keep FROM input", ctx).schema.field(0).type
        if typ not in (pa.bool_(), pa.null()):
            raise step_error(
                ctx,
                f"filter expression must be true or false, but {self.config.expr!r} gives {typ}",
                "compare it with something, e.g. `x > 0` or `x is not null`",
            )
        return schema

    def transform_batch(self, batch: pa.RecordBatch, ctx: StepContext) -> pa.RecordBatch:
        mask = _column(self.sql(batch, f"SELECT COALESCE(({self.config.expr}), false) FROM input", ctx), 0)
        if mask.true_count == batch.num_rows:  # nothing dropped: pass the batch on without copying it
            return batch
        kept = batch.filter(mask)
        ctx.filtered(batch.num_rows - kept.num_rows)
        return kept


# -- select -----------------------------------------------------------------------------------------
class SelectConfig(OxiConfig):
    columns: list[str] | None = None
    """The columns to keep, in this order."""
    exclude: list[str] | None = None
    """Columns to drop (applied after `columns`)."""

    @model_validator(mode="after")
    def _one(self) -> SelectConfig:
        if not self.columns and not self.exclude:
            raise ValueError("give `columns` (to keep) or `exclude` (to drop)")
        return self


def _duplicates(names: list[str]) -> list[str]:
    seen: set[str] = set()
    return [n for n in names if n in seen or seen.add(n)]  # type: ignore[func-returns-value]


@oxi(
    "select",
    kind="transform",
    config=SelectConfig,
    summary="Keep (and reorder) some columns, or drop some.",
    example="- name: select\n  config:\n    columns: [order_id, amount]",
)
class Select(BatchTransform):
    config: SelectConfig
    _names: list[str]

    def output_schema(self, schema: pa.Schema, ctx: StepContext) -> pa.Schema:
        cfg = self.config
        names = list(cfg.columns or schema.names)
        check_columns(ctx, names + list(cfg.exclude or []), schema)
        if dup := _duplicates(names):
            raise step_error(ctx, f"column {dup[0]!r} is selected twice")
        names = [n for n in names if n not in set(cfg.exclude or [])]
        if not names:
            raise step_error(ctx, "select leaves no columns")
        self._names = names
        return pa.schema([schema.field(n) for n in names], metadata=schema.metadata)

    def transform_batch(self, batch: pa.RecordBatch, ctx: StepContext) -> pa.RecordBatch:
        return batch.select(self._names)


# -- rename -----------------------------------------------------------------------------------------
class RenameConfig(OxiConfig):
    columns: dict[str, str] = Field(min_length=1)
    """Old name -> new name. Other columns keep their names and order."""


@oxi(
    "rename",
    kind="transform",
    config=RenameConfig,
    summary="Rename columns (types and field metadata are kept).",
    example="- name: rename\n  config:\n    columns: {cust_id: customer_id}",
)
class Rename(BatchTransform):
    config: RenameConfig
    _schema: pa.Schema

    def output_schema(self, schema: pa.Schema, ctx: StepContext) -> pa.Schema:
        mapping = self.config.columns
        check_columns(ctx, list(mapping), schema)
        fields = [f.with_name(mapping.get(f.name, f.name)) for f in schema]
        if dup := _duplicates([f.name for f in fields]):
            raise step_error(ctx, f"renaming gives two columns named {dup[0]!r}")
        self._schema = pa.schema(fields, metadata=schema.metadata)
        return self._schema

    def transform_batch(self, batch: pa.RecordBatch, ctx: StepContext) -> pa.RecordBatch:
        return pa.RecordBatch.from_arrays(batch.columns, schema=self._schema)


# -- cast -------------------------------------------------------------------------------------------
class CastConfig(OxiConfig):
    columns: dict[str, str] = Field(min_length=1)
    """Column -> DuckDB type: `BIGINT`, `DOUBLE`, `DATE`, `TIMESTAMP`, `VARCHAR`, `DECIMAL(10,2)` ..."""
    on_error: Literal["fail", "null", "skip", "dlq"] = "fail"
    """A value that does not convert: `fail` names the column, value and row; `null` sets it to
    null (counted in the step's `cast_failures` metadata); `skip` rejects the row; `dlq` also
    writes it to the dead-letter queue."""
    try_cast: bool = Field(False, alias="try")
    """Shorthand for `on_error: null` (DuckDB's TRY_CAST)."""


@oxi(
    "cast",
    kind="transform",
    config=CastConfig,
    summary="Convert columns to other types (DuckDB CAST); bad values fail, become null, or are rejected.",
    example="- name: cast\n  config:\n    columns: {amount: 'DECIMAL(10,2)', created_at: TIMESTAMP}\n    on_error: dlq",
)
class Cast(_DuckBatch):
    config: CastConfig
    what = "cast"
    _schema: pa.Schema
    _rows = 0

    @property
    def mode(self) -> str:
        return "null" if self.config.try_cast and self.config.on_error == "fail" else self.config.on_error

    def output_schema(self, schema: pa.Schema, ctx: StepContext) -> pa.Schema:
        cols = self.config.columns
        check_columns(ctx, list(cols), schema)
        for col, typ in cols.items():
            if ";" in typ or "--" in typ:
                raise step_error(ctx, f"{typ!r} (for column {col!r}) is not a type name")
        out = self.sql(_empty(schema), self._query("CAST"), ctx)
        fields = [
            # on_error: null turns values that do not convert into nulls: the column becomes nullable
            f.with_type(out.schema.field(f.name).type).with_nullable(f.nullable or self.mode == "null")
            if f.name in cols
            else f
            for f in schema
        ]
        self._schema = pa.schema(fields, metadata=schema.metadata)
        return self._schema

    def _query(self, fn: str, flags: bool = False) -> str:
        items = list(self.config.columns.items())
        parts = [f"{fn}({ident(c)} AS {t}) AS {ident(c)}" for c, t in items]
        if flags:
            parts += [f"({ident(c)} IS NOT NULL AND TRY_CAST({ident(c)} AS {t}) IS NULL)" for c, t in items]
        return f"SELECT {', '.join(parts)} FROM input"

    def _assemble(self, batch: pa.RecordBatch, cast: pa.Table) -> pa.RecordBatch:
        arrays = [
            _column(cast, cast.schema.get_field_index(n)) if n in self.config.columns else c
            for n, c in zip(batch.schema.names, batch.columns, strict=True)
        ]
        return pa.RecordBatch.from_arrays(arrays, schema=self._schema)

    def transform_batch(self, batch: pa.RecordBatch, ctx: StepContext) -> pa.RecordBatch:
        import pyarrow.compute as pc  # lazily: 25 ms of every start-up

        first_row = self._rows + 1
        self._rows += batch.num_rows
        if self.mode == "fail":
            try:
                return self._assemble(batch, self.sql(batch, self._query("CAST"), ctx))
            except DataError:
                raise
            except Exception as exc:
                raise self._explain_failure(batch, first_row, ctx) or exc from None
        ncols = len(self.config.columns)
        out = self.sql(batch, self._query("TRY_CAST", flags=True), ctx)
        bad = [_column(out, ncols + i) for i in range(ncols)]
        counts = [pc.sum(b).as_py() or 0 for b in bad]
        if not any(counts):
            return self._assemble(batch, out)
        if self.mode == "null":
            failures = ctx.metadata.setdefault("cast_failures", {})
            for col, n in zip(self.config.columns, counts, strict=True):
                failures[col] = failures.get(col, 0) + n
            return self._assemble(batch, out)
        any_bad = bad[0]
        for b in bad[1:]:
            any_bad = pc.or_(any_bad, b)
        if self.mode == "dlq" and ctx.dlq is not None:
            self._dead_letter(batch, bad, any_bad, first_row, ctx)
        ctx.reject(pc.sum(any_bad).as_py())
        return self._assemble(batch, out).filter(pc.invert(any_bad))

    def _dead_letter(
        self, batch: pa.RecordBatch, bad: list[pa.Array], any_bad: pa.Array, first_row: int, ctx: StepContext
    ) -> None:
        import pyarrow.compute as pc  # lazily: 25 ms of every start-up

        assert ctx.dlq is not None
        indices = pc.indices_nonzero(any_bad).to_pylist()
        rows = batch.take(pa.array(indices, pa.int64())).to_pylist()
        cols = list(self.config.columns.items())
        for i, row in zip(indices, rows, strict=True):
            col, typ = next((c, t) for (c, t), b in zip(cols, bad, strict=True) if b[i].as_py())
            ctx.dlq.put(
                step=ctx.step_id,
                oxi=ctx.oxi_name,
                reason=f"cannot cast {row[col]!r} to {typ} (row {first_row + i} of the input)",
                raw=row,
                column=col,
            )

    def _explain_failure(self, batch: pa.RecordBatch, first_row: int, ctx: StepContext) -> DataError | None:
        """Find the first value that does not convert, to name it in the error."""
        import pyarrow.compute as pc  # lazily: 25 ms of every start-up

        for col, typ in self.config.columns.items():
            q = f"SELECT {ident(col)} IS NOT NULL AND TRY_CAST({ident(col)} AS {typ}) IS NULL FROM input"
            bad = _column(self.sql(batch, q, ctx), 0)
            idx = pc.index(bad, True).as_py()
            if idx is not None and idx >= 0:
                value = batch.column(col)[idx].as_py()
                return DataError(
                    f"column {col!r}: cannot cast {value!r} to {typ} (row {first_row + idx} of the input)",
                    step=ctx.step_id,
                    column=col,
                    hint="fix the data, or set on_error: null, skip or dlq",
                )
        return None


# -- derive -----------------------------------------------------------------------------------------
class DeriveConfig(OxiConfig):
    columns: dict[str, str] = Field(min_length=1)
    """New column -> DuckDB expression, row by row. A name that exists replaces that column in
    place; new ones are added at the end. An expression may use a new column defined before it
    (unless an input column has that name: input columns win)."""


@oxi(
    "derive",
    kind="transform",
    config=DeriveConfig,
    summary="Add or replace columns computed by SQL expressions.",
    example="- name: derive\n  config:\n    columns:\n      total: quantity * amount\n      day: created_at::date",
)
class Derive(_DuckBatch):
    config: DeriveConfig
    what = "derive expression"
    _schema: pa.Schema

    @property
    def query(self) -> str:
        return "SELECT " + ", ".join(f"{e} AS {ident(n)}" for n, e in self.config.columns.items()) + " FROM input"

    def output_schema(self, schema: pa.Schema, ctx: StepContext) -> pa.Schema:
        out = self.sql(_empty(schema), self.query, ctx).schema
        new = {f.name: f for f in out}
        fields = [new.pop(f.name).with_metadata(f.metadata) if f.name in new else f for f in schema]
        self._schema = pa.schema(fields + list(new.values()), metadata=schema.metadata)
        return self._schema

    def transform_batch(self, batch: pa.RecordBatch, ctx: StepContext) -> pa.RecordBatch:
        out = self.sql(batch, self.query, ctx)
        if out.num_rows != batch.num_rows:
            raise step_error(ctx, "derive expressions must give one value per row (no unnest or aggregates)")
        new = {n: _column(out, i) for i, n in enumerate(out.schema.names)}
        arrays = [new.pop(n) if n in new else c for n, c in zip(batch.schema.names, batch.columns, strict=True)]
        arrays += list(new.values())
        return pa.RecordBatch.from_arrays(arrays, schema=self._schema)


# -- ordering helpers -------------------------------------------------------------------------------
_TERM = re.compile(r"^(?P<col>.+?)(?:\s+(?P<dir>asc|desc))?(?:\s+nulls\s+(?P<nulls>first|last))?$", re.IGNORECASE)


def order_terms(specs: list[str], schema: pa.Schema, ctx: StepContext, *, reverse: bool = False) -> list[str]:
    """`["amount desc", "id"]` -> quoted ORDER BY terms. Nulls sort last unless asked otherwise
    (in either direction); ``reverse`` flips every direction but leaves nulls where they are."""
    terms = []
    for spec in specs:
        text = spec.strip()
        if text in schema.names:
            col, desc, nulls = text, False, "last"
        else:
            m = _TERM.match(text)
            assert m is not None  # the pattern matches any non-empty text
            col = m["col"].strip()
            if len(col) > 1 and col[0] == col[-1] == '"':
                col = col[1:-1].replace('""', '"')
            desc = (m["dir"] or "asc").lower() == "desc"
            nulls = (m["nulls"] or "last").lower()
        check_columns(ctx, [col], schema)
        if reverse:
            desc = not desc  # nulls keep their place: a null never wins a keep: last by default
        terms.append(f"{ident(col)} {'DESC' if desc else 'ASC'} NULLS {nulls.upper()}")
    return terms


class _Numbered:
    """Appends each row's position in the stream, and counts the rows read."""

    def __init__(self, data: OxiData) -> None:
        self.data = data
        self.rows = 0
        self._base = pa.array([], pa.int64())
        self.schema = data.schema.append(pa.field(SEQ, pa.int64(), nullable=False))

    def _seq(self, n: int) -> pa.Array:
        import pyarrow.compute as pc  # lazily: 25 ms of every start-up

        if len(self._base) < n:
            self._base = pa.array(range(max(n, 2 * len(self._base))), pa.int64())
        return pc.add(self._base.slice(0, n), pa.scalar(self.rows, pa.int64()))

    def batches(self) -> Iterator[pa.RecordBatch]:
        for batch in self.data:
            if batch.num_rows:
                yield batch.append_column(self.schema.field(SEQ), self._seq(batch.num_rows))
                self.rows += batch.num_rows

    def reader(self) -> pa.RecordBatchReader:
        return pa.RecordBatchReader.from_batches(self.schema, self.batches())


def _as_list(value: str | list[str] | None) -> list[str]:
    return [value] if isinstance(value, str) else list(value or [])


# -- dedupe -----------------------------------------------------------------------------------------
class DedupeConfig(OxiConfig):
    keys: list[str] | None = None
    """The columns that identify a row (default: all columns). Nulls in keys compare equal."""
    keep: Literal["first", "last"] = "first"
    """Which row of each key to keep: the first or last in `order_by` order (or stream order)."""
    order_by: str | list[str] | None = None
    """Column(s) deciding first/last, optionally `desc`, e.g. `updated_at`; ties go by stream order."""


@oxi(
    "dedupe",
    kind="transform",
    config=DedupeConfig,
    summary="Keep one row per key (first or last, by stream order or a column); drops are counted as filtered.",
    example="- name: dedupe\n  config:\n    keys: [order_id]\n    keep: last\n    order_by: updated_at",
)
class Dedupe(Transform):
    config: DedupeConfig

    def transform(self, inputs: list[OxiData], ctx: StepContext) -> OxiData:
        cfg = self.config
        data = inputs[0]
        keys = cfg.keys or data.schema.names
        check_columns(ctx, keys, data.schema, "key column")
        last = cfg.keep == "last"
        terms = order_terms(_as_list(cfg.order_by), data.schema, ctx, reverse=last)
        terms.append(f"{ident(SEQ)} {'DESC' if last else 'ASC'}")
        query = (
            f"SELECT * EXCLUDE ({ident(SEQ)}) FROM input QUALIFY row_number() OVER "
            f"(PARTITION BY {', '.join(ident(k) for k in keys)} ORDER BY {', '.join(terms)}) = 1 "
            f"ORDER BY {ident(SEQ)}"  # survivors keep their input order
        )
        numbered = _Numbered(data)

        def count(rows_out: int) -> None:
            ctx.filtered(numbered.rows - rows_out)

        out = stream_sql(query, {"input": numbered.reader()}, ctx, what="dedupe", schema=data.schema, on_end=count)
        return data.with_batches(out, out.schema)


# -- sort -------------------------------------------------------------------------------------------
class SortConfig(OxiConfig):
    by: str | list[str] = Field(min_length=1)
    """Columns, each optionally followed by `asc`/`desc` and `nulls first`/`nulls last`, e.g.
    `["amount desc", "id"]`. Nulls sort last by default; equal keys keep their input order."""


@oxi(
    "sort",
    kind="transform",
    config=SortConfig,
    summary="Sort the whole stream (DuckDB ORDER BY, spilling to disk past the memory limit).",
    example='- name: sort\n  config:\n    by: ["amount desc", order_id]',
)
class Sort(Transform):
    config: SortConfig

    def transform(self, inputs: list[OxiData], ctx: StepContext) -> OxiData:
        data = inputs[0]
        terms = [*order_terms(_as_list(self.config.by), data.schema, ctx), ident(SEQ)]
        query = f"SELECT * EXCLUDE ({ident(SEQ)}) FROM input ORDER BY {', '.join(terms)}"
        out = stream_sql(query, {"input": _Numbered(data).reader()}, ctx, what="sort", schema=data.schema)
        return data.with_batches(out, out.schema)


# -- limit ------------------------------------------------------------------------------------------
class LimitConfig(OxiConfig):
    n: int = Field(ge=0)
    """How many rows to pass on."""
    offset: int = Field(0, ge=0)
    """Rows to skip first."""


@oxi(
    "limit",
    kind="transform",
    config=LimitConfig,
    summary="Pass on the first n rows (after an optional offset) and stop reading.",
    example="- name: limit\n  config:\n    n: 1000",
)
class Limit(Transform):
    config: LimitConfig

    def input_rows_needed(self) -> int | None:
        return self.config.offset + self.config.n

    def transform(self, inputs: list[OxiData], ctx: StepContext) -> OxiData:
        data = inputs[0]
        skip, left = self.config.offset, self.config.n

        def batches() -> Iterator[pa.RecordBatch]:
            nonlocal skip, left
            if left == 0:
                return
            for batch in data:
                start = min(skip, batch.num_rows)
                skip -= start
                take = min(left, batch.num_rows - start)
                ctx.filtered(batch.num_rows - take)
                if take:
                    left -= take
                    yield batch.slice(start, take)
                if left == 0:
                    return  # the engine drains the rest of the input and counts it as filtered

        return data.with_batches(batches())
