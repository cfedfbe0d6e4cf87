"""Schema-contract modes: what a sink writes when its data's schema differs from the registered one.

:func:`plan_schema` decides, from the registered schema, the incoming one and the per-entity modes
(dlt's ``tables`` / ``columns`` / ``data_type`` with ``evolve`` / ``freeze`` / ``discard_row`` /
``discard_value``), the schema to write and what happens to each column; :class:`Conformer` applies
that plan to the stream, batch by batch, vectorised (DuckDB ``TRY_CAST`` for values, pyarrow for the
rest). The table of rules is in docs/schema-evolution.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from oxiflow.contracts.schema_diff import Drift, diff_schemas
from oxiflow.contracts.types import can_widen, family

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

    from oxiflow.contracts.enforcement import ContractShape
    from oxiflow.oxi import StepContext

MODES = ("evolve", "freeze", "discard_row", "discard_value")
ENTITIES = ("tables", "columns", "data_type")
RULE = "schema_contract"  # the DLQ rule name of rows this module rejects
# the DLQ rule of records of values `discard_value` set to null (or did not write): the row itself was written, so
# these records are not rejected rows and are never replayed
VALUES_RULE = "schema_contract:discard_value"


@dataclass
class ColumnPlan:
    """One column written: where its values come from."""

    name: str
    type: pa.DataType
    nullable: bool
    # pass: as is; cast: a lossless cast to the registered type; try: a cast that may fail per value
    # (``on_fail`` says what then); null: absent from the data, written as nulls
    source: Literal["pass", "cast", "try", "null"] = "pass"
    on_fail: Literal["row", "value"] | None = None
    reject_nulls: bool = False  # NOT NULL registered, the data may hold nulls: such rows go to the DLQ


@dataclass
class SchemaPlan:
    base: pa.Schema | None  # the registered schema (None: the dataset is new)
    incoming: pa.Schema
    target: pa.Schema  # the schema written (and registered)
    drift: list[Drift] = field(default_factory=list)
    # the schema of the conformed stream before the contract's rules ran: ``target`` with the contract's required
    # columns still nullable (their nulls are the `required` rule's to reject); None: ``target``
    unchecked: pa.Schema | None = None
    actions: list[str] = field(default_factory=list)  # what happens about each drift item
    blocked: list[str] = field(default_factory=list)  # changes a `freeze` mode forbids
    reject_all: str | None = None  # every row goes to the DLQ (tables: discard_*), with this reason
    columns: list[ColumnPlan] = field(default_factory=list)
    dropped: list[tuple[str, Literal["row", "value"]]] = field(default_factory=list)  # incoming columns not written

    @property
    def passthrough(self) -> bool:
        """The stream can be written as it is."""
        return (
            self.reject_all is None
            and not self.dropped
            and all(c.source == "pass" and not c.reject_nulls for c in self.columns)
            and self.target.equals(self.incoming)
        )

    @property
    def stream_schema(self) -> pa.Schema:
        """The schema of the conformed stream (before the contract's rules, when there are some)."""
        return self.unchecked if self.unchecked is not None else self.target

    def report(self) -> list[dict[str, Any]]:
        return [{**d.to_dict(), "action": a} for d, a in zip(self.drift, self.actions, strict=True)]


def resolve_modes(value: Any) -> dict[str, str]:
    """``schema_contract`` as configured (None, one mode, or per entity) -> a mode for every entity."""
    if value is None:
        return dict.fromkeys(ENTITIES, "evolve")
    if isinstance(value, str):
        # one mode governs the columns and types of a dataset that exists; its first write establishes the
        # baseline (refusing a new dataset takes an explicit `{tables: freeze}`)
        return {"tables": "evolve", "columns": value, "data_type": value}
    if isinstance(value, dict):
        return {e: str(value.get(e, "evolve")) for e in ENTITIES}
    return {e: str(getattr(value, e)) for e in ENTITIES}


def plan_schema(
    base: pa.Schema | None,
    incoming: pa.Schema,
    modes: dict[str, str],
    shape: ContractShape | None = None,
    *,
    new: bool = False,
) -> SchemaPlan:
    """What to write, given the registered schema ``base``. ``freeze`` plans as ``evolve`` (the schema the
    run would publish if a person approved it) and lists the change in ``blocked``.

    ``shape``: what a contract whose rules run on the conformed stream fixes. Its typed columns are cast to
    ``base``'s type in every mode (a CSV's integers under a `number` field are numbers, not a new type), values that
    do not fit going to the DLQ (nulled under ``discard_value``); its required columns are planned as NOT NULL, the
    `required` rule rejecting the rows with a null. ``new``: the dataset has no registered version (``base`` is a
    contract's schema), so the ``tables`` mode applies too."""
    import pyarrow as pa

    relaxed: set[str] = set()
    if shape is not None and shape.required:
        relaxed = {n for n in shape.required if n in incoming.names and incoming.field(n).nullable}
        incoming = pa.schema(
            [f.with_nullable(False) if f.name in relaxed else f for f in incoming], metadata=incoming.metadata
        )
    plan = _plan(base, incoming, modes, shape)
    if new and base is not None:
        _new_dataset(plan, modes["tables"])
    if relaxed:
        plan.unchecked = pa.schema(
            [f.with_nullable(True) if f.name in relaxed else f for f in plan.target], metadata=plan.target.metadata
        )
    return plan


def _plan(
    base: pa.Schema | None, incoming: pa.Schema, modes: dict[str, str], shape: ContractShape | None
) -> SchemaPlan:
    import pyarrow as pa

    typed = shape.typed if shape is not None else set()
    if base is None:
        plan = SchemaPlan(None, incoming, incoming)
        plan.columns = [ColumnPlan(f.name, f.type, f.nullable) for f in incoming]
        _new_dataset(plan, modes["tables"])
        return plan

    plan = SchemaPlan(base, incoming, base)
    plan.drift = diff_schemas(base, incoming)
    actions: dict[tuple[str, str], str] = {}

    def note(d: Drift, action: str) -> None:
        actions[(d.column, d.kind)] = action
        if action.startswith("blocked"):
            plan.blocked.append(d.describe())

    by_kind = {(d.column, d.kind): d for d in plan.drift}
    fields: list[pa.Field] = []
    for f in base:
        columns_mode, type_mode = modes["columns"], modes["data_type"]
        if f.name not in incoming.names:
            d = by_kind[(f.name, "column_removed")]
            if columns_mode in ("evolve", "freeze"):
                note(d, "blocked (columns: freeze)" if columns_mode == "freeze" else "accepted: column dropped")
                continue
            col = ColumnPlan(f.name, f.type, f.nullable, "null", reject_nulls=not f.nullable)
            plan.columns.append(col)
            fields.append(f)
            note(d, "rows to the dead-letter queue (NOT NULL column missing)" if not f.nullable else "written as null")
            continue
        g = incoming.field(f.name)
        col = ColumnPlan(f.name, f.type, f.nullable)
        keep_field = f
        if not f.type.equals(g.type):
            d = next(by_kind[k] for k in by_kind if k[0] == f.name and k[1].startswith("type_"))
            if can_widen(g.type, f.type):  # narrower data: cast up, the dataset's type stays
                col.source = "cast"
                note(d, "cast to the registered type")
            elif f.name in typed:  # the contract fixes the type: these are values to cast, not a new type
                col.source, col.on_fail = "try", "value" if type_mode == "discard_value" else "row"
                note(d, "cast to the contract's type; values that do not fit: "
                        + ("set to null" if col.on_fail == "value" else "rows to the dead-letter queue"))  # fmt: skip
            elif type_mode in ("evolve", "freeze"):
                col.type = g.type
                keep_field = pa.field(f.name, g.type, f.nullable, f.metadata)
                note(d, "blocked (data_type: freeze)" if type_mode == "freeze" else "accepted: new type")
            else:
                col.source, col.on_fail = "try", "row" if type_mode == "discard_row" else "value"
                note(d, "values that do not cast: " + ("rows to the dead-letter queue" if col.on_fail == "row"
                                                        else "set to null"))  # fmt: skip
        if g.nullable and not f.nullable:
            d = by_kind[(f.name, "nullable")]
            if type_mode in ("evolve", "freeze"):
                col.nullable = True
                keep_field = keep_field.with_nullable(True)
                note(d, "blocked (data_type: freeze)" if type_mode == "freeze" else "accepted: column nullable")
            else:
                col.reject_nulls = True
                note(d, "rows with nulls to the dead-letter queue")
        elif f.nullable and not g.nullable:
            note(by_kind[(f.name, "not_null")], "accepted: the registered column stays nullable")
        plan.columns.append(col)
        fields.append(keep_field)
    for g in incoming:
        if g.name in base.names:
            continue
        d = by_kind[(g.name, "column_added")]
        mode = modes["columns"]
        if mode in ("evolve", "freeze"):
            plan.columns.append(ColumnPlan(g.name, g.type, g.nullable))
            fields.append(g)
            note(d, "blocked (columns: freeze)" if mode == "freeze" else "accepted: column added")
        else:
            how: Literal["row", "value"] = "row" if mode == "discard_row" else "value"
            plan.dropped.append((g.name, how))
            note(d, "rows with a value in it to the dead-letter queue" if how == "row" else "values discarded")
    plan.actions = [actions[(d.column, d.kind)] for d in plan.drift]
    plan.target = pa.schema(fields, metadata=base.metadata)
    return plan


def _new_dataset(plan: SchemaPlan, mode: str) -> None:
    """The ``tables`` mode on a dataset's first write."""
    if mode == "freeze":
        plan.blocked.insert(0, "the dataset has no registered schema and tables: freeze allows no new one")
    elif mode in ("discard_row", "discard_value"):
        plan.reject_all = f"the dataset has no registered schema (tables: {mode})"


class Conformer:
    """Applies a :class:`SchemaPlan` to a stream: casts, nulls, rejected rows to the DLQ."""

    def __init__(self, plan: SchemaPlan, ctx: StepContext, dataset: str) -> None:
        self.plan = plan
        self.ctx = ctx
        self.dataset = dataset
        self.rows_rejected = 0
        self.values_nulled: dict[str, int] = {}
        self._con: duckdb.DuckDBPyConnection | None = None
        self._duck_types: dict[str, str] = {}

    def stream(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        try:
            for batch in batches:
                out = self.conform(batch)
                if out.num_rows or not self.plan.reject_all:
                    yield out
        finally:
            if self._con is not None:
                self._con.close()
            if self.values_nulled:
                self.ctx.metadata["schema_values_nulled"] = dict(self.values_nulled)
            if self.rows_rejected:
                self.ctx.metadata["schema_rows_rejected"] = self.rows_rejected

    def conform(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        import pyarrow as pa
        import pyarrow.compute as pc

        plan = self.plan
        n = batch.num_rows
        if plan.reject_all is not None:
            self._reject(batch, pa.repeat(True, n), [(pa.repeat(True, n), plan.reject_all, None)])
            return pa.RecordBatch.from_pylist([], schema=plan.stream_schema)
        reasons: list[tuple[pa.Array, str, str | None]] = []  # (row mask, reason, column)
        nulled: list[tuple[pa.Array, str, str]] = []  # (row mask, reason, column): values discard_value drops
        tried = self._try_casts(batch)
        arrays = []
        for col in plan.columns:
            if col.source == "null":
                arr = pa.nulls(n, col.type)
            elif col.source == "pass":
                arr = batch.column(col.name)
            elif col.source == "cast":
                arr = pc.cast(batch.column(col.name), col.type)  # lossless by the plan
            else:
                arr, failed = tried[col.name]
                why = f"column {col.name}: value does not fit the registered type {col.type}"
                if col.on_fail == "row":
                    reasons.append((failed, why, col.name))
                else:
                    nulled.append((failed, why + ": written as null", col.name))
            if col.reject_nulls:
                reasons.append((pc.is_null(arr), f"column {col.name} is NOT NULL in the registered schema", col.name))
            arrays.append(arr)
        for name, how in plan.dropped:
            present = pc.is_valid(batch.column(name))
            if how == "row":
                reasons.append((present, f"column {name} is not in the registered schema", name))
            else:
                nulled.append((present, f"column {name} is not in the registered schema: not written", name))
        out = pa.RecordBatch.from_arrays(arrays, schema=plan.stream_schema)
        bad = None
        if reasons:
            bad = reasons[0][0]
            for mask, _, _ in reasons[1:]:
                bad = pc.or_(bad, mask)
            bad = pc.fill_null(bad, False)
            if not pc.any(bad).as_py():
                bad = None
        if nulled:
            self._record_nulled(batch, bad, nulled)
        if bad is None:
            return out
        self._reject(batch, bad, reasons)
        return out.filter(pc.invert(bad))

    def _record_nulled(
        self, batch: pa.RecordBatch, bad: pa.Array | None, nulled: list[tuple[pa.Array, str, str]]
    ) -> None:
        """Count and record (a DLQ record per row, ``VALUES_RULE``) the values ``discard_value`` dropped, in rows that
        are written (a rejected row's record says it all)."""
        import pyarrow.compute as pc

        masks = [pc.fill_null(m, False) if bad is None else pc.and_(pc.fill_null(m, False), pc.invert(bad))
                 for m, _, _ in nulled]  # fmt: skip
        hit = masks[0]
        for m in masks[1:]:
            hit = pc.or_(hit, m)
        if not pc.any(hit).as_py():
            return
        for m, (_, _, column) in zip(masks, nulled, strict=True):
            self.values_nulled[column] = self.values_nulled.get(column, 0) + (pc.sum(m).as_py() or 0)
        if self.ctx.dlq is None:
            return
        rows = batch.filter(hit).to_pylist()  # the rows with a dropped value only
        flags = [m.filter(hit).to_pylist() for m in masks]
        for i, row in enumerate(rows):
            hits = [(why, column) for f, (_, why, column) in zip(flags, nulled, strict=True) if f[i]]
            self.ctx.dlq.put(
                step=self.ctx.step_id,
                oxi=self.ctx.oxi_name,
                reason=f"dataset {self.dataset}: " + "; ".join(why for why, _ in hits) + " (the row was written)",
                raw=row,
                values={column: row.get(column) for _, column in hits},
                column=hits[0][1],
                rule=VALUES_RULE,
                schema=batch.schema,
            )

    def _try_casts(self, batch: pa.RecordBatch) -> dict[str, tuple[pa.Array, pa.Array]]:
        """Each ``try`` column cast to its registered type, per value, in one DuckDB query: (values, failed)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        from oxiflow.engine.duck import connect, ident

        cols = [c for c in self.plan.columns if c.source == "try"]
        if not cols:
            return {}
        if self._con is None:
            self._con = connect(self.ctx)
        con = self._con
        exprs = []
        for c in cols:
            to = self._duck_type(c.type)
            value = f"TRY_CAST({ident(c.name)} AS {to})"
            source_type = self.plan.incoming.field(c.name).type
            if family(source_type) != "string":
                # exactly, or not at all: DuckDB rounds 2.5 -> 3 and truncates times when casting; a value
                # that does not come back unchanged does not fit
                back = self._duck_type(source_type)
                value = f"CASE WHEN TRY_CAST({value} AS {back}) = {ident(c.name)} THEN {value} END"
            exprs.append(f"{value} AS {ident(c.name)}")
        con.register("oxiflow_gate_batch", pa.Table.from_batches([batch]).select([c.name for c in cols]))
        try:
            got = con.sql(f"SELECT {', '.join(exprs)} FROM oxiflow_gate_batch").to_arrow_table()
        finally:
            con.unregister("oxiflow_gate_batch")
        out = {}
        for c in cols:
            values = pc.cast(got.column(c.name).combine_chunks(), c.type)
            failed = pc.and_(pc.is_valid(batch.column(c.name)), pc.is_null(values))
            out[c.name] = (values, failed)
        return out

    def _duck_type(self, t: pa.DataType) -> str:
        """DuckDB's name for an Arrow type (DuckDB's own mapping, not a table of ours)."""
        import pyarrow as pa

        key = str(t)
        if key not in self._duck_types:
            assert self._con is not None
            rel = self._con.from_arrow(pa.table({"x": pa.array([], t)}))
            self._duck_types[key] = str(rel.types[0])
        return self._duck_types[key]

    def _reject(self, batch: pa.RecordBatch, bad: pa.Array, reasons: list[tuple[pa.Array, str, str | None]]) -> None:
        """Rejected rows to the DLQ with every reason that applies (a loop over the rejected rows only)."""
        import pyarrow.compute as pc

        rows = batch.filter(bad).to_pylist()
        flags = [(pc.fill_null(mask, False).filter(bad).to_pylist(), why, column) for mask, why, column in reasons]
        self.ctx.reject(len(rows))
        self.rows_rejected += len(rows)
        if self.ctx.dlq is None:
            return
        for i, row in enumerate(rows):
            hits = [(why, column) for mask, why, column in flags if mask[i]]
            self.ctx.dlq.put(
                step=self.ctx.step_id,
                oxi=self.ctx.oxi_name,
                reason=f"dataset {self.dataset}: " + "; ".join(why for why, _ in hits),
                raw=row,
                values={column: row.get(column) for _, column in hits if column is not None} or None,
                column=hits[0][1] if hits else None,
                rule=RULE,
                schema=batch.schema,
            )
