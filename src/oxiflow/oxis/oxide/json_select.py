"""json_select: pick one part of a JSON document by a path like `[0].users` or `data.items[2].meta`.

The document is what parse_json read: the rows when it was an array (so `[0]` is the first row),
the single row when it was one object. The selected part becomes the output the same way
parse_json would have produced it from that part alone: an array of objects becomes rows, an
object one row, scalars a `value` column.
"""

from __future__ import annotations

import re
from typing import Any

import pyarrow as pa
from pydantic import field_validator

from oxiflow.data import OxiData
from oxiflow.errors import DataError
from oxiflow.oxi import OxiConfig, StepContext, Transform, oxi
from oxiflow.oxis.oxide.common import JSON_SHAPE, require_arrow
from oxiflow.oxis.oxide.parse import _shape, document_table

_SEGMENT = re.compile(r"\.?([A-Za-z_$][\w$\-]*)|\.?\[(-?\d+)\]|\.?\[\"((?:[^\"\\]|\\.)*)\"\]")
Segment = str | int


def parse_path(path: str) -> list[Segment]:
    """`data.items[2].meta` -> ["data", "items", 2, "meta"]; `["odd key"]` quotes any key."""
    text = path.strip()
    if text in ("", ".", "$"):
        return []
    if text.startswith("$"):
        text = text[1:]
    out: list[Segment] = []
    pos = 0
    while pos < len(text):
        m = _SEGMENT.match(text, pos)
        if m is None or m.end() == pos:
            raise ValueError(f"cannot read the path at character {pos + 1}: {text[pos:]!r}")
        if m.group(1) is not None:
            out.append(m.group(1))
        elif m.group(2) is not None:
            out.append(int(m.group(2)))
        else:
            out.append(m.group(3).replace('\\"', '"'))
        pos = m.end()
    return out


def _show(segments: list[Segment]) -> str:
    text = "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in segments)
    return text.lstrip(".") or "(the document)"


class JsonSelectConfig(OxiConfig):
    path: str
    """Where to go: keys joined by `.`, list indexes in `[n]` (negative counts from the end)."""
    strict: bool = True
    """A missing key, an index out of range or a type mismatch is an error; `false`: null."""
    default_on_missing: Any = None
    """Value to output when the path does not exist (instead of an error or null)."""

    @field_validator("path")
    @classmethod
    def _valid_path(cls, value: str) -> str:
        parse_path(value)
        return value


class _Missing(Exception):
    pass


@oxi(
    "json_select",
    kind="transform",
    config=JsonSelectConfig,
    summary="Pick part of a JSON document by path (`[0].users`, `data.items[2].meta`).",
    example="- name: json_select\n  config:\n    path: data.items[0]\n    default_on_missing: null",
    reshapes=True,
)
class JsonSelect(Transform):
    config: JsonSelectConfig

    def transform(self, inputs: list[OxiData], ctx: StepContext) -> OxiData:
        data = inputs[0]
        require_arrow(data, ctx, "add parse_json before json_select")
        segments = parse_path(self.config.path)
        shape = data.metadata.get(JSON_SHAPE, "array")
        where = str(data.metadata.get("path", "<input>"))
        meta = {k: v for k, v in data.metadata.items() if k != JSON_SHAPE}
        if ctx.limit_rows == 0:
            # explain's probe: no document to walk, but its types are known: follow the path through them
            schema = probe_schema(data.schema, shape, segments)
            return OxiData(schema, [], {**meta, JSON_SHAPE: "array"})
        try:
            value = self._select(data, shape, segments, ctx)
        except DataError as exc:
            exc.context.setdefault("file", where)
            exc.context.setdefault("step", ctx.step_id)
            raise
        except _Missing as exc:
            value = self.config.default_on_missing
            if "default_on_missing" not in self.config.model_fields_set and self.config.strict:
                raise DataError(
                    str(exc),
                    file=where,
                    step=ctx.step_id,
                    hint="check the path, or set default_on_missing or strict: false",
                ) from None
        out_shape = _shape(value)
        table = document_table(value, out_shape, where)
        return OxiData(table.schema, table.to_batches(max_chunksize=ctx.batch_size), {**meta, JSON_SHAPE: out_shape})

    def _select(self, data: OxiData, shape: str, segments: list[Segment], ctx: StepContext) -> Any:
        strict = self.config.strict
        if shape in ("object", "value"):
            rows = data.read_all().to_pylist()
            doc: Any = rows[0] if rows else None
            if shape == "value" and isinstance(doc, dict):
                doc = doc.get("value")
            return _walk(doc, segments, [], strict)
        unwrap = shape == "values"
        if segments and isinstance(segments[0], int) and segments[0] >= 0:
            # The first step picks one row: read only as far as that row.
            index, seen = segments[0], 0
            for batch in data:
                if index < seen + batch.num_rows:
                    row = batch.slice(index - seen, 1).to_pylist()[0]
                    return _walk(row.get("value") if unwrap else row, segments[1:], segments[:1], strict)
                seen += batch.num_rows
            raise _Missing(f"index {index} is out of range: the document is an array of {seen} item(s)")
        rows = data.read_all().to_pylist()
        return _walk([r.get("value") for r in rows] if unwrap else rows, segments, [], strict)


def probe_schema(schema: pa.Schema, shape: str, segments: list[Segment]) -> pa.Schema:
    """The schema the selection would have, from the document's types alone (no rows to look at); an
    empty schema where the path leaves what the types tell."""
    if not schema.names:
        return pa.schema([])
    row = pa.struct(list(schema))
    typ: pa.DataType
    if shape in ("object", "value"):
        typ = schema.field("value").type if shape == "value" and schema.names == ["value"] else row
    elif shape == "values" and schema.names == ["value"]:
        typ = pa.list_(schema.field("value").type)
    else:
        typ = pa.list_(row)
    for seg in segments:
        if isinstance(seg, int) and (pa.types.is_list(typ) or pa.types.is_large_list(typ)):
            typ = typ.value_type
        elif isinstance(seg, str) and pa.types.is_struct(typ) and typ.get_field_index(seg) >= 0:
            typ = typ.field(typ.get_field_index(seg)).type
        else:
            return pa.schema([])
    if (pa.types.is_list(typ) or pa.types.is_large_list(typ)) and pa.types.is_struct(typ.value_type):
        fields = list(typ.value_type)
    elif pa.types.is_struct(typ):
        fields = list(typ)
    elif pa.types.is_list(typ) or pa.types.is_large_list(typ):
        fields = [pa.field("value", typ.value_type)]
    else:
        fields = [pa.field("value", typ)]
    return pa.schema([pa.field(f.name, _plain(f.type)) for f in fields])


def _plain(typ: pa.DataType) -> pa.DataType:
    """A type as the rows rebuilt from Python values come out: nullable fields, lists of `item`."""
    if pa.types.is_struct(typ):
        return pa.struct([pa.field(f.name, _plain(f.type)) for f in typ])
    if pa.types.is_list(typ) or pa.types.is_large_list(typ):
        return pa.list_(_plain(typ.value_type))
    return typ


def _walk(doc: Any, segments: list[Segment], done: list[Segment], strict: bool) -> Any:
    for seg in segments:
        here = _show(done)
        if isinstance(seg, int):
            if not isinstance(doc, list):
                if strict:
                    raise DataError(f"type mismatch at {here}: [{seg}] needs an array but found {_kind(doc)}")
                return None
            if not -len(doc) <= seg < len(doc):
                raise _Missing(f"index {seg} is out of range at {here}: the array has {len(doc)} item(s)")
            doc = doc[seg]
        else:
            if not isinstance(doc, dict):
                if strict:
                    raise DataError(f"type mismatch at {here}: key {seg!r} needs an object but found {_kind(doc)}")
                return None
            if seg not in doc:
                keys = ", ".join(sorted(doc)[:10])
                raise _Missing(f"key {seg!r} is missing at {here} (keys there: {keys or 'none'})")
            doc = doc[seg]
        done = [*done, seg]
    return doc


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return f"an array of {len(value)} item(s)"
    return f"a {type(value).__name__} ({value!r})"
