"""Arrow values for writers that take Python objects (fastavro, ``json``), nested types included.

``Array.to_pylist`` turns timestamps and dates into Python datetimes, which end at year 9999 (Arrow's
go on: a value past that raises ``OverflowError``), and maps into lists of (key, value) pairs. Writers
that want something else cast the leaves first, at any depth (:func:`cast_leaves`), and turn the
pairs into dicts (:func:`map_fixer`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

Leaf = Callable[["pa.DataType"], "pa.DataType"]


def retype(t: pa.DataType, leaf: Leaf) -> pa.DataType:
    """``t`` with every leaf type replaced by ``leaf(type)``, through structs, lists and map values
    (dictionaries are decoded)."""
    import pyarrow as pa

    def field(f: pa.Field) -> pa.Field:
        return pa.field(f.name, retype(f.type, leaf), f.nullable, f.metadata)

    if pa.types.is_dictionary(t):
        return retype(t.value_type, leaf)
    if pa.types.is_struct(t):
        return pa.struct([field(t.field(i)) for i in range(t.num_fields)])
    if pa.types.is_map(t):
        return pa.map_(field(t.key_field), field(t.item_field))
    if pa.types.is_large_list(t):
        return pa.large_list(field(t.value_field))
    if pa.types.is_fixed_size_list(t):
        return pa.list_(field(t.value_field), t.list_size)
    if pa.types.is_list(t):
        return pa.list_(field(t.value_field))
    return leaf(t)


def cast_leaves(col: pa.Array | pa.ChunkedArray, *leaves: Leaf) -> pa.Array | pa.ChunkedArray:
    """``col`` cast through each ``retype(type, leaf)`` in turn (unsafe casts: a truncation the caller
    chose, such as nanoseconds to the microseconds a format holds); as it is when nothing changes."""
    import pyarrow as pa

    for leaf in leaves:
        target = retype(col.type, leaf)
        if not target.equals(col.type):
            try:
                col = col.cast(target, safe=False)
            except pa.ArrowNotImplementedError:
                return col  # (a dictionary of lists of dictionaries): to_pylist takes it as it is
    return col


def as_text(t: pa.DataType) -> pa.DataType:
    """Leaf: dates, times, timestamps and durations as Arrow's ISO text of them."""
    import pyarrow as pa

    return pa.string() if pa.types.is_temporal(t) else t


def _same(value: Any) -> Any:
    return value


def map_fixer(t: pa.DataType) -> Callable[[Any], Any] | None:
    """A function turning the (key, value) pairs ``to_pylist`` gives for the maps in a value of type ``t``
    into dicts, at any depth; None when ``t`` holds no map."""
    import pyarrow as pa

    if pa.types.is_map(t):
        values = map_fixer(t.item_type) or _same
        return lambda v: None if v is None else {k: values(x) for k, x in v}
    if pa.types.is_struct(t):
        found = {t.field(i).name: map_fixer(t.field(i).type) for i in range(t.num_fields)}
        fixers = {k: f for k, f in found.items() if f is not None}
        if not fixers:
            return None
        return lambda v: None if v is None else {k: (fixers[k](x) if k in fixers else x) for k, x in v.items()}
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        inner = map_fixer(t.value_type)
        if inner is None:
            return None
        items: Callable[[Any], Any] = inner
        return lambda v: None if v is None else [items(x) for x in v]
    if pa.types.is_dictionary(t):
        return map_fixer(t.value_type)
    return None
