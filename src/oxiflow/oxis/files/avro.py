"""read_avro / write_avro: Avro object container files through fastavro (the `avro` extra).

Records stream in batches of ``ctx.batch_size``. Schemas map both ways: records <-> structs,
arrays <-> lists, maps <-> maps, unions with null <-> nullable fields, enums -> strings, logical
types (date, time, timestamp, decimal, uuid) <-> the matching Arrow types. A union of several
non-null types has no faithful Arrow column here: it is read as its JSON text.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any, Literal

import pyarrow as pa

from oxiflow.arrow_nested import cast_leaves, map_fixer
from oxiflow.data import OxiData
from oxiflow.errors import DataError
from oxiflow.oxi import Sink, Source, StepContext, oxi
from oxiflow.oxis.files.common import FileSinkConfig, FileSourceConfig, atomic_output, expand_paths

Convert = Callable[[Any], Any] | None  # None: the value needs no conversion

_PRIMITIVES: dict[str, pa.DataType] = {
    "null": pa.null(),
    "boolean": pa.bool_(),
    "int": pa.int32(),
    "long": pa.int64(),
    "float": pa.float32(),
    "double": pa.float64(),
    "bytes": pa.binary(),
    "string": pa.string(),
}
_LOGICAL: dict[str, pa.DataType] = {
    "date": pa.date32(),
    "time-millis": pa.time32("ms"),
    "time-micros": pa.time64("us"),
    "timestamp-millis": pa.timestamp("ms", tz="UTC"),
    "timestamp-micros": pa.timestamp("us", tz="UTC"),
    "timestamp-nanos": pa.timestamp("ns", tz="UTC"),
    "local-timestamp-millis": pa.timestamp("ms"),
    "local-timestamp-micros": pa.timestamp("us"),
    "local-timestamp-nanos": pa.timestamp("ns"),
    "uuid": pa.string(),
}


def _fastavro() -> Any:
    try:
        import fastavro
    except ImportError:
        raise DataError("Avro support needs fastavro", hint="pip install 'oxiflow[avro]'") from None
    return fastavro


def _to_json(value: Any) -> Any:
    return None if value is None else json.dumps(value, default=str, sort_keys=True)


def avro_to_arrow(schema: Any, seen: frozenset[str] = frozenset()) -> tuple[pa.DataType, bool, Convert]:
    """(Arrow type, nullable, value converter) for a parsed Avro schema."""
    if isinstance(schema, str):
        if schema in _PRIMITIVES:
            return _PRIMITIVES[schema], schema == "null", None
        raise DataError(f"unknown or recursive Avro type {schema!r}", hint="recursive Avro schemas are not supported")
    if isinstance(schema, list):
        branches = [b for b in schema if b != "null"]
        nullable = len(branches) < len(schema)
        if len(branches) == 1:
            arrow_type, _, inner = avro_to_arrow(branches[0], seen)
            return arrow_type, nullable, inner
        if not branches:
            return pa.null(), True, None
        return pa.string(), True, _to_json
    kind = schema.get("type")
    logical = schema.get("logicalType")
    if logical == "decimal" and kind in ("bytes", "fixed"):
        precision, scale = int(schema.get("precision", 38)), int(schema.get("scale", 0))
        if precision <= 38:
            return pa.decimal128(precision, scale), False, None
        return pa.decimal256(min(precision, 76), scale), False, None
    if logical in _LOGICAL and kind in ("int", "long", "string", "fixed"):
        if logical == "uuid":
            return pa.string(), False, lambda v: None if v is None else str(v)
        if logical.endswith("nanos"):
            return _LOGICAL[logical], False, None  # fastavro leaves nanos as int: Arrow takes the int
        return _LOGICAL[logical], False, None
    if kind == "record":
        name = schema.get("name", "")
        if name in seen:
            raise DataError(f"recursive Avro record {name!r}", hint="recursive Avro schemas are not supported")
        fields = []
        convs: dict[str, Callable[[Any], Any]] = {}
        for f in schema["fields"]:
            t, n, c = avro_to_arrow(f["type"], seen | {name})
            fields.append(pa.field(f["name"], t, nullable=n))
            if c is not None:
                convs[f["name"]] = c
        struct_conv = None
        if convs:

            def struct_conv(v: Any, convs: dict[str, Callable[[Any], Any]] = convs) -> Any:
                if v is None:
                    return None
                return {k: (convs[k](x) if k in convs else x) for k, x in v.items()}

        return pa.struct(fields), False, struct_conv
    if kind == "enum":
        return pa.string(), False, None
    if kind == "fixed":
        return pa.binary(int(schema["size"])), False, None
    if kind == "array":
        t, n, c = avro_to_arrow(schema["items"], seen)
        list_conv = None if c is None else (lambda v, c=c: None if v is None else [c(x) for x in v])
        return pa.list_(pa.field("item", t, nullable=n)), False, list_conv
    if kind == "map":
        t, n, c = avro_to_arrow(schema["values"], seen)
        if c is None:
            conv: Convert = lambda v: None if v is None else list(v.items())  # noqa: E731
        else:
            conv = lambda v, c=c: None if v is None else [(k, c(x)) for k, x in v.items()]  # noqa: E731
        return pa.map_(pa.string(), pa.field("value", t, nullable=n)), False, conv
    if isinstance(kind, str | list | dict):
        return avro_to_arrow(kind, seen)
    raise DataError(f"unsupported Avro schema: {json.dumps(schema)[:200]}")


BARE = "value"  # the column of a file whose values are not records


def arrow_schema_of(avro_schema: Any) -> tuple[pa.Schema, dict[str, Callable[[Any], Any]]]:
    if not (isinstance(avro_schema, dict) and avro_schema.get("type") == "record"):
        t, n, c = avro_to_arrow(avro_schema)  # a file of bare values: one column
        return pa.schema([pa.field(BARE, t, nullable=n)], metadata={b"oxiflow.avro.bare": b"1"}), (
            {BARE: c} if c else {}
        )
    fields, convs = [], {}
    for f in avro_schema["fields"]:
        t, n, c = avro_to_arrow(f["type"], frozenset({avro_schema.get("name", "")}))
        fields.append(pa.field(f["name"], t, nullable=n))
        if c is not None:
            convs[f["name"]] = c
    return pa.schema(fields), convs


class ReadAvroConfig(FileSourceConfig):
    pass


def _avro_error(path: str, exc: BaseException) -> DataError:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return DataError(
        f"cannot read Avro: {type(exc).__name__}: {reason}",
        file=path,
        hint="check that the file is a complete Avro object container file (codec installed?)",
    )


@oxi(
    "read_avro",
    kind="source",
    config=ReadAvroConfig,
    summary="Read Avro object container files (all codecs) as Arrow batches; records become structs.",
    example="- name: read_avro\n  config:\n    path: data/*.avro",
)
class ReadAvro(Source):
    config: ReadAvroConfig

    def read(self, ctx: StepContext) -> OxiData:
        fastavro = _fastavro()
        files = [str(p) for p in expand_paths(self.config.path, ctx, (".avro",))]
        ctx.metadata.update(path=files[0] if len(files) == 1 else files, files=len(files))
        schema, _ = self._open(fastavro, files[0])[1:]
        limit = ctx.limit_rows
        bare = schema.metadata is not None and b"oxiflow.avro.bare" in schema.metadata

        def batches() -> Iterator[pa.RecordBatch]:
            remaining = limit
            for path in files:
                fh, file_schema, convs = self._open(fastavro, path)
                if not file_schema.equals(schema):
                    fh[0].close()
                    raise DataError(f"schema differs from {files[0]}", file=path, hint="read them in separate steps")
                handle, reader = fh
                try:
                    rows: list[dict[str, Any]] = []
                    record_no = 0
                    try:
                        for record in reader:
                            record_no += 1
                            rows.append(_fix(record, convs, bare))
                            if len(rows) >= ctx.batch_size:
                                ctx.check_cancelled()
                                yield from _emit(rows, schema, path, record_no)
                                rows = []
                            if remaining is not None and record_no >= remaining:
                                break
                    except DataError:
                        raise
                    except Exception as exc:  # fastavro raises many types on corrupt input
                        raise _avro_error(path, exc) from None
                    yield from _emit(rows, schema, path, record_no)
                    if remaining is not None:
                        remaining -= record_no
                        if remaining <= 0:
                            return
                finally:
                    handle.close()

        if limit == 0:
            return OxiData.empty(schema)
        return OxiData(schema, batches())

    @staticmethod
    def _open(fastavro: Any, path: str) -> tuple[tuple[Any, Any], pa.Schema, dict[str, Callable[[Any], Any]]]:
        try:
            handle = open(path, "rb")  # noqa: SIM115 - closed by the batch generator
        except OSError as exc:
            raise DataError(f"cannot open: {exc}", file=path) from None
        try:
            reader = fastavro.reader(handle)
            schema, convs = arrow_schema_of(reader.writer_schema)
        except DataError as exc:
            handle.close()
            exc.context.setdefault("file", path)
            raise
        except Exception as exc:
            handle.close()
            raise _avro_error(path, exc) from None
        return (handle, reader), schema, convs


def _fix(record: Any, convs: dict[str, Callable[[Any], Any]], bare: bool) -> dict[str, Any]:
    if bare:
        conv = convs.get(BARE)
        return {BARE: conv(record) if conv else record}
    if convs:
        for k, c in convs.items():
            record[k] = c(record.get(k))
    return record


def _emit(rows: list[dict[str, Any]], schema: pa.Schema, path: str, upto: int) -> Iterator[pa.RecordBatch]:
    if not rows:
        return
    try:
        yield pa.RecordBatch.from_pylist(rows, schema=schema)
    except (pa.ArrowException, ValueError, TypeError, OverflowError) as exc:
        raise DataError(
            f"Avro records up to #{upto} do not fit the Arrow schema: {str(exc).splitlines()[0]}",
            file=path,
        ) from None


# -- writing ---------------------------------------------------------------------------------------


def arrow_to_avro(t: pa.DataType, name: str, counter: list[int]) -> Any:
    """The Avro schema (without null) of an Arrow type."""
    if pa.types.is_dictionary(t):
        return arrow_to_avro(t.value_type, name, counter)
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_integer(t):
        return "int" if t.bit_width <= 16 or (t.bit_width == 32 and pa.types.is_signed_integer(t)) else "long"
    if pa.types.is_float16(t) or pa.types.is_float32(t):
        return "float"
    if pa.types.is_float64(t):
        return "double"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "string"
    if pa.types.is_fixed_size_binary(t):
        counter[0] += 1
        return {"type": "fixed", "name": f"{name}_fixed{counter[0]}", "size": t.byte_width}
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return "bytes"
    if pa.types.is_date(t):
        return {"type": "int", "logicalType": "date"}
    if pa.types.is_time32(t):
        return {"type": "int", "logicalType": "time-millis"}
    if pa.types.is_time64(t):
        return {"type": "long", "logicalType": "time-micros"}
    if pa.types.is_timestamp(t):
        unit = "millis" if t.unit in ("s", "ms") else "micros"
        prefix = "timestamp" if t.tz else "local-timestamp"
        return {"type": "long", "logicalType": f"{prefix}-{unit}"}
    if pa.types.is_decimal(t):
        return {"type": "bytes", "logicalType": "decimal", "precision": t.precision, "scale": t.scale}
    if pa.types.is_struct(t):
        counter[0] += 1
        return {
            "type": "record",
            "name": f"{name}_record{counter[0]}",
            "fields": [_avro_field(t.field(i), name, counter) for i in range(t.num_fields)],
        }
    if pa.types.is_map(t):
        if not (pa.types.is_string(t.key_type) or pa.types.is_large_string(t.key_type)):
            raise DataError(f"Avro maps need string keys; column {name!r} has {t.key_type}")
        return {"type": "map", "values": _nullable(t.item_field, name, counter)}
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return {"type": "array", "items": _nullable(t.value_field, name, counter)}
    if pa.types.is_null(t):
        return "null"
    raise DataError(f"column {name!r} of type {t} has no Avro equivalent", hint="cast it first (e.g. to string)")


def _nullable(f: pa.Field, name: str, counter: list[int]) -> Any:
    inner = arrow_to_avro(f.type, name, counter)
    return ["null", inner] if f.nullable and inner != "null" else inner


def _avro_field(f: pa.Field, name: str, counter: list[int]) -> dict[str, Any]:
    out: dict[str, Any] = {"name": f.name, "type": _nullable(f, f"{name}_{f.name}", counter)}
    if f.nullable:
        out["default"] = None
    return out


def avro_schema_of(schema: pa.Schema, name: str = "Row") -> dict[str, Any]:
    counter = [0]
    return {"type": "record", "name": name, "fields": [_avro_field(f, name, counter) for f in schema]}


def _avro_unit(t: pa.DataType) -> pa.DataType:
    """Leaf: a date, time or timestamp in the unit its Avro logical type has (ns -> us, s -> ms)."""
    if pa.types.is_timestamp(t):
        return pa.timestamp("ms" if t.unit in ("s", "ms") else "us", t.tz)
    if pa.types.is_date(t):
        return pa.date32()
    if pa.types.is_time32(t):
        return pa.time32("ms")
    if pa.types.is_time64(t):
        return pa.time64("us")
    return t


def _avro_int(t: pa.DataType) -> pa.DataType:
    """Leaf: a date, time or timestamp as its integer. fastavro takes a logical type's integers as they
    are, so no value has to be a Python datetime (one past year 9999 has none; ints are cheaper too)."""
    if pa.types.is_timestamp(t) or pa.types.is_time64(t):
        return pa.int64()
    if pa.types.is_date32(t) or pa.types.is_time32(t):
        return pa.int32()
    return t


def _wire_batch(batch: pa.RecordBatch) -> pa.RecordBatch:
    """``batch`` as fastavro wants its values: units first (the truncation of ns is the schema's), then ints."""
    columns = [cast_leaves(col, _avro_unit, _avro_int) for col in batch.columns]
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)


class WriteAvroConfig(FileSinkConfig):
    codec: Literal["null", "deflate", "snappy", "zstandard", "bzip2", "xz"] = "deflate"
    """Block compression codec."""
    record_name: str = "Row"
    """Name of the top-level Avro record."""


@oxi(
    "write_avro",
    kind="sink",
    config=WriteAvroConfig,
    summary="Write an Avro object container file (schema derived from Arrow), atomically.",
    example="- name: write_avro\n  config:\n    path: out/events.avro\n    codec: zstandard",
)
class WriteAvro(Sink):
    config: WriteAvroConfig

    def write(self, data: OxiData, ctx: StepContext) -> None:
        fastavro = _fastavro()
        cfg = self.config
        target = ctx.output_path(cfg.path)
        schema = fastavro.parse_schema(avro_schema_of(data.schema, cfg.record_name))
        rows = 0

        fixers = {f.name: fix for f in data.schema if (fix := map_fixer(f.type)) is not None}

        def records() -> Iterator[dict[str, Any]]:
            nonlocal rows
            for batch in data:
                ctx.check_cancelled()
                rows += batch.num_rows
                for record in _wire_batch(batch).to_pylist():
                    for name, fix in fixers.items():
                        record[name] = fix(record[name])
                    yield record

        with atomic_output(target, ctx, overwrite=cfg.overwrite) as tmp, open(tmp, "wb") as fh:
            try:
                fastavro.writer(fh, schema, records(), codec=cfg.codec)
            except (ValueError, TypeError) as exc:
                raise DataError(f"cannot write Avro: {exc}", file=str(target)) from None
        ctx.metadata["rows"] = rows
