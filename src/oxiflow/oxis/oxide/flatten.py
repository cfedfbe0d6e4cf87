"""flatten: nested objects to flat columns (`user.address.city`), arrays kept, indexed or exploded.

- `array_mode: preserve` (or `preserve_arrays: true`): arrays stay list columns. Streams.
- `array_mode: index` (the default): an array becomes one column per position, `tags[0]`,
  `tags[1]` ...; how many depends on the longest array in the data, so this mode reads the
  whole input before it can emit (columns without arrays stream as in `preserve`).
- `array_mode: explode`: one row per array element (an empty or null array gives one row with
  null); elements that are objects are flattened too. Streams.
"""

from __future__ import annotations

from typing import Any, Literal

import pyarrow as pa
from pydantic import AliasChoices, Field, model_validator

from oxiflow.data import OxiData
from oxiflow.errors import DataError
from oxiflow.oxi import BatchTransform, OxiConfig, StepContext, oxi
from oxiflow.oxis.oxide.common import require_arrow


class FlattenConfig(OxiConfig):
    separator: str = Field(".", validation_alias=AliasChoices("separator", "delimiter"))
    """Joins the keys of nested objects (alias `delimiter`)."""
    max_depth: int | None = Field(None, ge=1)
    """Flatten at most this many levels of nesting; deeper objects stay nested (unset: all)."""
    preserve_arrays: bool = False
    """Keep arrays as list columns (same as `array_mode: preserve`)."""
    array_index_format: str = "[{index}]"
    """How an array position is appended to the column name in `index` mode."""
    array_mode: Literal["index", "preserve", "explode"] | None = None
    """`index` (`tags[0]` columns), `preserve` (keep lists) or `explode` (one row per element)."""

    @model_validator(mode="after")
    def _check(self) -> FlattenConfig:
        if "{index}" not in self.array_index_format:
            raise ValueError("array_index_format must contain {index}")
        return self

    @property
    def mode(self) -> str:
        return self.array_mode or ("preserve" if self.preserve_arrays else "index")


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def flatten_structs(batch: pa.RecordBatch, sep: str, max_depth: int | None) -> pa.RecordBatch:
    """Struct columns become one column per field, recursively, up to ``max_depth`` levels."""
    names: list[str] = []
    arrays: list[pa.Array] = []

    def add(name: str, arr: pa.Array, depth: int) -> None:
        if pa.types.is_struct(arr.type) and (max_depth is None or depth < max_depth) and arr.type.num_fields:
            for i in range(arr.type.num_fields):
                # A null struct makes each of its fields null.
                add(name + sep + arr.type.field(i).name, _child(arr, i), depth + 1)
        else:
            names.append(name)
            arrays.append(arr)

    for name, col in zip(batch.schema.names, batch.columns, strict=True):
        add(name, col, 0)
    return pa.RecordBatch.from_arrays(arrays, names=names)


def _child(arr: pa.StructArray, i: int) -> pa.Array:
    import pyarrow.compute as pc

    return pc.struct_field(arr, [i])


def explode_first_list(batch: pa.RecordBatch) -> pa.RecordBatch | None:
    """One row per element of the first list column (None when there is none)."""
    import pyarrow.compute as pc

    for pos, col in enumerate(batch.columns):
        if not _is_list(col.type):
            continue
        lengths = pc.fill_null(pc.list_value_length(col), 0)
        # Empty and null lists keep their row (with a null element), like pandas' explode.
        padded = pc.if_else(pc.equal(lengths, 0), pa.scalar(None, col.type), col)
        padded = pc.if_else(pc.is_null(padded), pa.array([[None]], col.type)[0], padded)
        parents = pc.list_parent_indices(padded)
        values = pc.list_flatten(padded)
        cols = [values if i == pos else c.take(parents) for i, c in enumerate(batch.columns)]
        return pa.RecordBatch.from_arrays(cols, names=batch.schema.names)
    return None


@oxi(
    "flatten",
    kind="transform",
    config=FlattenConfig,
    summary="Nested objects to flat columns (`user.address.city`); arrays kept, indexed (`tags[0]`) or exploded.",
    example="- name: flatten\n  config:\n    separator: '.'\n    array_mode: explode",
    reshapes=True,
)
class Flatten(BatchTransform):
    config: FlattenConfig

    def transform_batch(self, batch: pa.RecordBatch, ctx: StepContext) -> pa.RecordBatch:
        cfg = self.config
        out = flatten_structs(batch, cfg.separator, cfg.max_depth)
        if cfg.mode != "explode":
            return out
        for _ in range(64):  # each round explodes one list column; nested lists take several rounds
            exploded = explode_first_list(out)
            if exploded is None:
                return out
            out = flatten_structs(exploded, cfg.separator, cfg.max_depth)
        return out

    def transform(self, inputs: list[OxiData], ctx: StepContext) -> OxiData:
        data = inputs[0]
        require_arrow(data, ctx, "add parse_json (or parse_csv) before flatten")
        if self.config.mode != "index":
            return super().transform(inputs, ctx)
        flat_schema = flatten_structs(pa.RecordBatch.from_pylist([], schema=data.schema), self.config.separator, None)
        if not any(_is_list(f.type) for f in flat_schema.schema):
            return super().transform(inputs, ctx)
        return self._indexed(data, ctx)

    def _indexed(self, data: OxiData, ctx: StepContext) -> OxiData:
        """Arrays to positional columns: needs the longest array, so the input is read whole."""
        rows = [self._flat_row(r) for batch in data for r in batch.to_pylist()]
        names: dict[str, None] = {}
        for r in rows:
            names.update(dict.fromkeys(r))
        columns = {n: [r.get(n) for r in rows] for n in names}
        try:
            table = pa.table({n: pa.array(v) for n, v in columns.items()}) if columns else pa.table({})
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise DataError(f"flatten: a flattened column mixes types: {exc}", step=ctx.step_id) from None
        return OxiData(table.schema, table.to_batches(max_chunksize=ctx.batch_size), data.metadata)

    def _flat_row(self, row: dict[str, Any]) -> dict[str, Any]:
        cfg = self.config
        out: dict[str, Any] = {}

        def walk(prefix: str, value: Any, depth: int) -> None:
            deeper = cfg.max_depth is None or depth < cfg.max_depth
            if isinstance(value, dict) and value and deeper:
                for k, v in value.items():
                    walk(f"{prefix}{cfg.separator}{k}" if prefix else k, v, depth + 1)
            elif isinstance(value, list) and deeper:
                for i, v in enumerate(value):
                    walk(prefix + cfg.array_index_format.format(index=i), v, depth + 1)
            else:
                out[prefix] = value

        for k, v in row.items():
            walk(k, v, 0)
        return out
