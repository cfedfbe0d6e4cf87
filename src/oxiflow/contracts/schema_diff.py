"""Arrow schema vs Arrow schema: the drift between two versions of a dataset, and whether a new version
is compatible with the old one in the sense of a Kafka schema registry.

The type rules are those ``contract diff`` uses (:func:`oxiflow.contracts.types.can_widen`): int32 -> int64,
float32 -> float64, date -> timestamp widen; string -> int, int64 -> int32 do not.

Compatibility (a new version ``new`` registered after ``old``), as in Confluent's schema registry:

- ``backward``: a reader using ``new`` can read data written with ``old``: fields may be deleted, optional
  (nullable) fields added, types widened, NOT NULL relaxed.
- ``forward``: a reader using ``old`` can read data written with ``new``: fields may be added, optional fields
  deleted, types narrowed, NOT NULL added.
- ``full``: both. ``none``: anything goes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from oxiflow.contracts.types import can_widen

if TYPE_CHECKING:
    import pyarrow as pa

Compatibility = Literal["backward", "forward", "full", "none"]
COMPATIBILITY: tuple[str, ...] = ("backward", "forward", "full", "none")

# drift kinds, and the schema-contract entity (dlt's names) each belongs to
ENTITY = {
    "column_added": "columns",
    "column_removed": "columns",
    "type_widened": "data_type",
    "type_narrowed": "data_type",
    "type_changed": "data_type",
    "nullable": "data_type",
    "not_null": "data_type",
}


@dataclass(frozen=True)
class Drift:
    """One difference between an old and a new schema, column by column."""

    column: str
    kind: str  # a key of ENTITY
    old: str | None  # the old type ("int32", "int32 not null"), None for an added column
    new: str | None

    @property
    def entity(self) -> str:
        return ENTITY[self.kind]

    def describe(self) -> str:
        what = self.kind.replace("_", " ")
        if self.kind == "column_added":
            return f"column {self.column} added ({self.new})"
        if self.kind == "column_removed":
            return f"column {self.column} removed (was {self.old})"
        return f"column {self.column}: {what} ({self.old} -> {self.new})"

    def to_dict(self) -> dict[str, Any]:
        return {"column": self.column, "kind": self.kind, "entity": self.entity, "old": self.old, "new": self.new}


def type_text(f: pa.Field) -> str:
    return str(f.type) + ("" if f.nullable else " not null")


def diff_schemas(old: pa.Schema, new: pa.Schema) -> list[Drift]:
    """Every column added, removed, retyped or changed in nullability from ``old`` to ``new`` (old's order,
    then the added columns in new's order)."""
    out: list[Drift] = []
    new_names = set(new.names)
    for f in old:
        if f.name not in new_names:
            out.append(Drift(f.name, "column_removed", type_text(f), None))
            continue
        g = new.field(f.name)
        if not f.type.equals(g.type):
            if can_widen(f.type, g.type):
                kind = "type_widened"
            elif can_widen(g.type, f.type):
                kind = "type_narrowed"
            else:
                kind = "type_changed"
            out.append(Drift(f.name, kind, str(f.type), str(g.type)))
        if f.nullable != g.nullable:
            out.append(Drift(f.name, "nullable" if g.nullable else "not_null", type_text(f), type_text(g)))
    old_names = set(old.names)
    out.extend(Drift(g.name, "column_added", None, type_text(g)) for g in new if g.name not in old_names)
    return out


def _reads(reader: pa.Schema, writer: pa.Schema) -> list[str]:
    """Why a reader expecting ``reader`` cannot read data written with ``writer`` (empty: it can).
    A field the writer lacks reads as null, so the reader must allow null there; fields the reader
    does not know are ignored."""
    problems = []
    writer_names = set(writer.names)
    for r in reader:
        if r.name not in writer_names:
            if not r.nullable:
                problems.append(f"column {r.name} ({type_text(r)}) is required but absent from the other version")
            continue
        w = writer.field(r.name)
        if not can_widen(w.type, r.type):
            problems.append(f"column {r.name}: {w.type} values do not fit {r.type}")
        if w.nullable and not r.nullable:
            problems.append(f"column {r.name}: may hold nulls, which a NOT NULL reader rejects")
    return problems


def compatibility_problems(old: pa.Schema, new: pa.Schema, mode: str) -> list[str]:
    """Why ``new`` is not ``mode``-compatible with ``old`` (empty: it is)."""
    if mode == "none":
        return []
    if mode not in COMPATIBILITY:
        raise ValueError(f"unknown compatibility mode {mode!r} (expected one of {', '.join(COMPATIBILITY)})")
    problems = []
    if mode in ("backward", "full"):
        problems += [f"backward: {p}" for p in _reads(new, old)]
    if mode in ("forward", "full"):
        problems += [f"forward: {p}" for p in _reads(old, new)]
    return problems
