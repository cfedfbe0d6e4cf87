"""``contract diff``: every change between two contract versions, classified breaking or not.

A change is breaking when data valid under the old contract may be invalid under the new one
(a tighter rule), or when something consumers read disappears (a field, a dataset, a key).
The rules, one per ``kind`` below, are tabled in docs/contracts.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from oxiflow.contracts.model import Contract, Dataset, Field, QualityRule
from oxiflow.contracts.types import compare


@dataclass
class Change:
    path: str
    kind: str
    breaking: bool
    description: str

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "kind": self.kind, "breaking": self.breaking, "description": self.description}


def diff_contracts(old: Contract, new: Contract) -> list[Change]:
    changes: list[Change] = []
    old_ds = {d.name: d for d in old.datasets}
    new_ds = {d.name: d for d in new.datasets}
    for name, d in old_ds.items():
        if name not in new_ds:
            changes.append(Change(name, "dataset_removed", True, f"dataset {name} removed"))
        else:
            changes.extend(_dataset(d, new_ds[name]))
    for name in new_ds.keys() - old_ds.keys():
        changes.append(Change(name, "dataset_added", False, f"dataset {name} added"))
    return changes


def _dataset(old: Dataset, new: Dataset) -> list[Change]:
    out: list[Change] = []
    out.extend(_fields(old.name, old.fields, new.fields))
    if old.primary_key() != new.primary_key():
        out.append(
            Change(
                old.name,
                "primary_key_changed",
                True,
                f"primary key ({', '.join(old.primary_key()) or 'none'}) -> ({', '.join(new.primary_key()) or 'none'})",
            )
        )
    out.extend(_rules(old.name, old.quality, new.quality))
    if (old.description or "") != (new.description or ""):
        out.append(Change(old.name, "description", False, "description changed"))
    return out


def _fields(prefix: str, old: list[Field], new: list[Field]) -> list[Change]:
    out: list[Change] = []
    new_by_name = {f.name: f for f in new}
    old_names = {f.name for f in old}
    for f in old:
        path = f"{prefix}.{f.name}"
        if f.name not in new_by_name:
            out.append(Change(path, "field_removed", True, f"field {f.name} removed"))
        else:
            out.extend(_field(path, f, new_by_name[f.name]))
    for f in new:
        if f.name not in old_names:
            path = f"{prefix}.{f.name}"
            if f.required:
                out.append(Change(path, "field_added_required", True, f"required field {f.name} added"))
            else:
                out.append(Change(path, "field_added_optional", False, f"optional field {f.name} added"))
    return out


def _bound_change(path: str, name: str, old: Any, new: Any, tighter_if_greater: bool) -> Change | None:
    """A lower bound (tighter when it grows) or upper bound (tighter when it shrinks)."""
    if old == new:
        return None
    if new is None:
        return Change(path, f"{name}_removed", False, f"{name} {old} removed")
    if old is None:
        return Change(path, f"{name}_added", True, f"{name} {new} added")
    try:
        tighter = (new > old) if tighter_if_greater else (new < old)
    except TypeError:  # e.g. a date string vs a number: cannot order, assume the worst
        tighter = True
    return Change(path, f"{name}_{'tightened' if tighter else 'loosened'}", tighter, f"{name} {old} -> {new}")


def _field(path: str, old: Field, new: Field) -> list[Change]:
    out: list[Change] = []
    how, desc = compare(old, new)
    if how != "same":
        out.append(Change(path, f"type_{how}", how == "narrowed", f"type {desc}"))
    if old.required != new.required:
        out.append(
            Change(
                path,
                "required" if new.required else "optional",
                new.required,
                "optional -> required" if new.required else "required -> optional",
            )
        )
    if old.unique != new.unique:
        out.append(
            Change(
                path,
                "unique_added" if new.unique else "unique_removed",
                new.unique,
                f"unique {old.unique} -> {new.unique}",
            )
        )
    if old.enum != new.enum:
        if new.enum is None:
            out.append(Change(path, "enum_removed", False, "enum constraint removed"))
        elif old.enum is None:
            out.append(Change(path, "enum_added", True, f"enum {new.enum} added"))
        else:
            gone = [v for v in old.enum if v not in new.enum]
            added = [v for v in new.enum if v not in old.enum]
            if gone:
                out.append(Change(path, "enum_value_removed", True, f"enum values removed: {gone}"))
            if added:
                out.append(Change(path, "enum_value_added", False, f"enum values added: {added}"))
    if old.pattern != new.pattern:
        if new.pattern is None:
            out.append(Change(path, "pattern_removed", False, f"pattern {old.pattern} removed"))
        else:  # a different regex may reject values the old one accepted: cannot prove looser
            out.append(Change(path, "pattern_changed", True, f"pattern {old.pattern} -> {new.pattern}"))
    for attr, greater_is_tighter in (
        ("minimum", True),
        ("exclusive_minimum", True),
        ("min_length", True),
        ("maximum", False),
        ("exclusive_maximum", False),
        ("max_length", False),
    ):
        change = _bound_change(path, attr, getattr(old, attr), getattr(new, attr), greater_is_tighter)
        if change:
            out.append(change)
    if old.classification != new.classification:
        out.append(
            Change(path, "classification", False, f"classification {old.classification} -> {new.classification}")
        )
    if (old.description or "") != (new.description or ""):
        out.append(Change(path, "description", False, "description changed"))
    if sorted(old.tags) != sorted(new.tags):
        out.append(Change(path, "tags", False, f"tags {old.tags} -> {new.tags}"))
    out.extend(_rules(path, old.quality, new.quality))
    if old.fields or new.fields:
        out.extend(_fields(path, old.fields, new.fields))
    if old.items is not None and new.items is not None:
        out.extend(_field(f"{path}[]", old.items, new.items))
    return out


def _rule_key(r: QualityRule) -> tuple[Any, ...]:
    return (
        r.type,
        r.metric,
        (r.query or "").strip(),
        repr(sorted(r.arguments.items())),
        r.operator,
        repr(r.value),
        r.unit,
    )


def _rules(path: str, old: list[QualityRule], new: list[QualityRule]) -> list[Change]:
    """Quality rules: one added (or changed) may fail data that passed, so it is breaking; removed is not."""
    old_keys = {_rule_key(r) for r in old}
    new_keys = {_rule_key(r) for r in new}
    out = [
        Change(path, "quality_added", r.severity == "error", f"quality rule added: {r.label()}")
        for r in new
        if _rule_key(r) not in old_keys
    ]
    out += [
        Change(path, "quality_removed", False, f"quality rule removed: {r.label()}")
        for r in old
        if _rule_key(r) not in new_keys
    ]
    return out
