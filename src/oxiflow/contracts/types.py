"""Contract types -> Arrow types, the type families a logical type accepts, and the widening rules.

``contract test`` uses :func:`accepts` (logical type vs the data's type) and :func:`fits` (the
data's type fits the declared physical type); ``contract diff`` uses :func:`compare` (old vs new
declared type: same, widened or narrowed). One table of rules serves both.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import pyarrow as pa

    from oxiflow.contracts.model import Field

# physical type names (lower case, parameters stripped) -> Arrow type factory name
_SIMPLE = {
    "tinyint": "int8",
    "int8": "int8",
    "byte": "int8",
    "smallint": "int16",
    "int16": "int16",
    "short": "int16",
    "int": "int32",
    "int32": "int32",
    "integer": "int32",
    "int4": "int32",
    "bigint": "int64",
    "int64": "int64",
    "long": "int64",
    "int8_pg": "int64",
    "utinyint": "uint8",
    "uint8": "uint8",
    "usmallint": "uint16",
    "uint16": "uint16",
    "uinteger": "uint32",
    "uint32": "uint32",
    "ubigint": "uint64",
    "uint64": "uint64",
    "float": "float32",
    "float4": "float32",
    "float32": "float32",
    "real": "float32",
    "double": "float64",
    "float8": "float64",
    "float64": "float64",
    "double precision": "float64",
    "string": "string",
    "varchar": "string",
    "text": "string",
    "char": "string",
    "character varying": "string",
    "nvarchar": "string",
    "utf8": "string",
    "large_string": "string",
    "bool": "bool_",
    "boolean": "bool_",
    "date": "date32",
    "time": "time64",
    "bytes": "binary",
    "binary": "binary",
    "blob": "binary",
    "bytea": "binary",
    "varbinary": "binary",
}
_TIMESTAMPS_NAIVE = {"timestamp", "timestamp_ntz", "datetime", "timestamp without time zone"}
_TIMESTAMPS_TZ = {"timestamp_tz", "timestamptz", "timestamp with time zone", "timestamp_ltz"}
_DECIMAL = re.compile(r"^(decimal|numeric|number)\s*(\(\s*(\d+)\s*(,\s*(\d+)\s*)?\))?$")
_PARAMS = re.compile(r"\s*\(.*\)$")

# the Arrow type families each ODCS logical type accepts
LOGICAL_FAMILIES: dict[str, set[str]] = {
    "string": {"string"},
    "integer": {"integer"},
    "number": {"integer", "float", "decimal"},
    "boolean": {"boolean"},
    "date": {"date"},
    "timestamp": {"timestamp"},
    "time": {"time"},
    "object": {"struct", "map"},
    "array": {"list"},
    "bytes": {"binary"},
}
# the DuckDB type a value of a logical type must cast to, for text formats (CSV, JSON) whose
# column types were sniffed rather than declared
CAST_TARGET = {
    "integer": "HUGEINT",
    "number": "DOUBLE",
    "boolean": "BOOLEAN",
    "date": "DATE",
    "timestamp": "TIMESTAMPTZ",
    "time": "TIME",
}


def parse_physical(text: str | None) -> pa.DataType | None:
    """The Arrow type a physical type names, or None when it names none we know (``table``, ``json``)."""
    import pyarrow as pa

    if not text:
        return None
    name = " ".join(str(text).strip().lower().split())
    dec = _DECIMAL.match(name)
    if dec and dec.group(3):
        precision, scale = int(dec.group(3)), int(dec.group(5) or 0)
        if 1 <= precision <= 38 and scale <= precision:
            return pa.decimal128(precision, scale)
        return None
    if name in _TIMESTAMPS_NAIVE or name.startswith("timestamp("):
        return pa.timestamp("us")
    if name in _TIMESTAMPS_TZ:
        return pa.timestamp("us", tz="UTC")
    base = _PARAMS.sub("", name)
    factory = _SIMPLE.get(base)
    if factory == "time64":
        return pa.time64("us")
    return getattr(pa, factory)() if factory else None


def family(t: pa.DataType) -> str:
    """The family of an Arrow type: integer, float, decimal, string, boolean, date, timestamp, ..."""
    import pyarrow as pa
    import pyarrow.types as pt

    if pa.types.is_dictionary(t):
        return family(t.value_type)
    checks = [
        (pt.is_integer, "integer"),
        (pt.is_floating, "float"),
        (pt.is_decimal, "decimal"),
        (lambda x: pt.is_string(x) or pt.is_large_string(x) or pt.is_string_view(x), "string"),
        (pt.is_boolean, "boolean"),
        (pt.is_date, "date"),
        (pt.is_timestamp, "timestamp"),
        (pt.is_time, "time"),
        (lambda x: pt.is_binary(x) or pt.is_large_binary(x) or pt.is_fixed_size_binary(x), "binary"),
        (lambda x: pt.is_list(x) or pt.is_large_list(x) or pt.is_fixed_size_list(x), "list"),
        (pt.is_struct, "struct"),
        (pt.is_map, "map"),
        (pt.is_null, "null"),
    ]
    for check, name in checks:
        if check(t):
            return name
    return str(t)


def logical_of(t: pa.DataType) -> str:
    """The ODCS logical type for an Arrow type (used by ``infer`` and in messages)."""
    return {
        "integer": "integer",
        "float": "number",
        "decimal": "number",
        "string": "string",
        "boolean": "boolean",
        "date": "date",
        "timestamp": "timestamp",
        "time": "time",
        "list": "array",
        "struct": "object",
        "map": "object",
        "binary": "string",
    }.get(family(t), "string")


def normalize_logical(name: str | None) -> str | None:
    """ODCS logical type names plus the spellings seen in the wild (``int``, ``decimal``, ``record``)."""
    if name is None:
        return None
    n = str(name).strip().lower()
    aliases = {
        "int": "integer",
        "long": "integer",
        "bigint": "integer",
        "decimal": "number",
        "numeric": "number",
        "float": "number",
        "double": "number",
        "bool": "boolean",
        "text": "string",
        "varchar": "string",
        "datetime": "timestamp",
        "timestamp_tz": "timestamp",
        "timestamp_ntz": "timestamp",
        "record": "object",
        "struct": "object",
        "map": "object",
        "list": "array",
        "bytes": "bytes",
    }
    return aliases.get(n, n)


def accepts(logical: str, t: pa.DataType) -> bool:
    """Whether data of Arrow type ``t`` has the logical type (unknown logical types accept anything)."""
    fams = LOGICAL_FAMILIES.get(logical)
    return fams is None or family(t) in fams or family(t) == "null"


def _int_digits(t: pa.DataType) -> int:
    """Decimal digits an integer type needs (int32: 10, int64: 19, uint64: 20)."""
    return len(str(2 ** (t.bit_width - (0 if str(t).startswith("uint") else 1))))


def can_widen(old: pa.DataType, new: pa.DataType) -> bool:
    """Whether every value of type ``old`` is exactly a value of type ``new``."""
    import pyarrow as pa
    import pyarrow.types as pt

    if old.equals(new):
        return True
    fo, fn = family(old), family(new)
    if fo == "null":
        return True
    if fo == "integer" and fn == "integer":
        if pt.is_signed_integer(old) == pt.is_signed_integer(new):
            return bool(new.bit_width >= old.bit_width)
        return pt.is_unsigned_integer(old) and new.bit_width > old.bit_width  # uint32 -> int64
    if fo == "integer" and fn == "float":
        # a float's mantissa holds ints exactly up to 2^24 (float32) / 2^53 (float64)
        return bool(old.bit_width <= (16 if new.bit_width == 32 else 32))
    if fo == "float" and fn == "float":
        return bool(new.bit_width >= old.bit_width)
    if fo == "integer" and fn == "decimal":
        return bool(new.precision - new.scale >= _int_digits(old))
    if fo == "decimal" and fn == "decimal":
        return bool(new.scale >= old.scale and new.precision - new.scale >= old.precision - old.scale)
    if fo == fn == "string" or fo == fn == "binary" or fo == fn == "date":
        return True
    if fo == fn == "timestamp" or fo == fn == "time":
        units = ["s", "ms", "us", "ns"]
        same_zone = (getattr(old, "tz", None) is None) == (getattr(new, "tz", None) is None)
        return same_zone and units.index(new.unit) >= units.index(old.unit)
    if fo == "date" and fn == "timestamp":
        return getattr(new, "tz", None) is None
    if fo == fn == "list":
        return can_widen(old.value_type, new.value_type)
    if fo == fn == "struct":
        return {f.name for f in old} <= {f.name for f in new} and all(
            can_widen(old.field(f.name).type, new.field(f.name).type) for f in old
        )
    if fo == fn == "map":
        return can_widen(old.key_type, new.key_type) and can_widen(old.item_type, new.item_type)
    return bool(pa.types.is_dictionary(old) and can_widen(old.value_type, new))


def fits(actual: pa.DataType, declared: pa.DataType) -> bool:
    """Whether data of type ``actual`` fits a column declared ``declared`` (the data may be narrower:
    int32 data in a bigint column is fine; timestamps of any unit match a timestamp column)."""
    if family(actual) == family(declared) == "timestamp":
        return (getattr(actual, "tz", None) is None) == (getattr(declared, "tz", None) is None)
    if family(actual) == family(declared) == "decimal":
        return bool(
            actual.scale <= declared.scale and actual.precision - actual.scale <= declared.precision - declared.scale
        )
    return can_widen(actual, declared)


Change = Literal["same", "widened", "narrowed"]


def declared_type(f: Field) -> pa.DataType | None:
    """The Arrow type a field declares: its physical type when we can read it, else None."""
    import pyarrow as pa

    t = parse_physical(f.physical_type)
    if t is None and normalize_logical(f.logical_type) == "number" and f.precision:
        t = pa.decimal128(f.precision, f.scale or 0)
    return t


# logical types ordered by what they accept: integer -> number widens, number -> integer narrows
_LOGICAL_WIDENS = {("integer", "number")}


def compare(old: Field, new: Field) -> tuple[Change, str]:
    """How the declared type changed from ``old`` to ``new``, and a description of it."""
    to, tn = declared_type(old), declared_type(new)
    lo, ln = normalize_logical(old.logical_type), normalize_logical(new.logical_type)
    if to is not None and tn is not None:
        if to.equals(tn):
            return "same", str(tn)
        return ("widened" if can_widen(to, tn) else "narrowed"), f"{old.physical_type} -> {new.physical_type}"
    if lo == ln:
        return "same", str(ln)
    if lo is None:  # a type where there was none: narrower (any value was allowed)
        return "narrowed", f"(any) -> {ln}"
    if ln is None:
        return "widened", f"{lo} -> (any)"
    return ("widened" if (lo, ln) in _LOGICAL_WIDENS else "narrowed"), f"{lo} -> {ln}"
