"""OxiData: what flows between steps.

A one-shot stream of Arrow record batches with its schema known up front, plus the metadata a
step reports (``path``, ``rows`` ...). Contract facts (nullability, keys, PII tags) live in the
schema's field metadata. The Oxide Flow oxis also move text and binary payloads: those are
streams of a single ``text`` (large_string) or ``bytes`` (large_binary) column whose rows are
consecutive chunks of the payload, so a large file never has to sit in memory at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from functools import cache
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # imported where used: a pushed-down run or `oxiflow validate` never needs Arrow
    import pyarrow as pa

Kind = Literal["arrow", "text", "binary"]


@cache
def text_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema([pa.field("text", pa.large_string(), nullable=False)])


@cache
def binary_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema([pa.field("bytes", pa.large_binary(), nullable=False)])


class OxiData:
    """A stream of record batches. Iterate it once; ``schema`` is known before the first batch."""

    def __init__(
        self,
        schema: pa.Schema,
        batches: Iterable[pa.RecordBatch],
        metadata: dict[str, Any] | None = None,
        kind: Kind = "arrow",
    ) -> None:
        self.schema = schema
        self._batches: Iterator[pa.RecordBatch] | None = iter(batches)
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.kind: Kind = kind

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_table(cls, table: pa.Table, metadata: dict[str, Any] | None = None) -> OxiData:
        return cls(table.schema, table.to_batches(), metadata)

    @classmethod
    def from_reader(cls, reader: pa.RecordBatchReader, metadata: dict[str, Any] | None = None) -> OxiData:
        return cls(reader.schema, reader, metadata)

    @classmethod
    def empty(cls, schema: pa.Schema, metadata: dict[str, Any] | None = None) -> OxiData:
        return cls(schema, [], metadata)

    @classmethod
    def from_text(cls, chunks: Iterable[str] | str, metadata: dict[str, Any] | None = None) -> OxiData:
        import pyarrow as pa

        if isinstance(chunks, str):
            chunks = [chunks]
        schema = text_schema()
        batches = (pa.record_batch([pa.array([chunk], pa.large_string())], schema=schema) for chunk in chunks)
        return cls(schema, batches, metadata, kind="text")

    @classmethod
    def from_bytes(cls, chunks: Iterable[bytes] | bytes, metadata: dict[str, Any] | None = None) -> OxiData:
        import pyarrow as pa

        if isinstance(chunks, bytes):
            chunks = [chunks]
        schema = binary_schema()
        batches = (pa.record_batch([pa.array([chunk], pa.large_binary())], schema=schema) for chunk in chunks)
        return cls(schema, batches, metadata, kind="binary")

    # -- consumption --------------------------------------------------------------------------
    def __iter__(self) -> Iterator[pa.RecordBatch]:
        if self._batches is None:
            raise RuntimeError("this OxiData stream was already consumed")
        batches, self._batches = self._batches, None
        return batches

    def to_reader(self) -> pa.RecordBatchReader:
        """An Arrow stream for engines that speak the C stream interface (DuckDB, pyarrow)."""
        import pyarrow as pa

        return pa.RecordBatchReader.from_batches(self.schema, iter(self))

    def read_all(self) -> pa.Table:
        import pyarrow as pa

        return pa.Table.from_batches(list(self), schema=self.schema)

    def iter_text(self) -> Iterator[str]:
        """The chunks of a text payload (an Arrow table is rendered as JSON Lines)."""
        if self.kind == "binary":
            for batch in self:
                for chunk in batch.column(0).to_pylist():
                    yield chunk.decode(self.metadata.get("encoding", "utf-8"))
        elif self.kind == "text":
            for batch in self:
                yield from batch.column(0).to_pylist()
        else:
            import json

            for batch in self:
                for row in batch.to_pylist():
                    yield json.dumps(row, default=str) + "\n"

    def read_text(self) -> str:
        return "".join(self.iter_text())

    def with_batches(self, batches: Iterable[pa.RecordBatch], schema: pa.Schema | None = None) -> OxiData:
        """A new stream that keeps this one's metadata and kind."""
        return OxiData(schema or self.schema, batches, self.metadata, self.kind)
