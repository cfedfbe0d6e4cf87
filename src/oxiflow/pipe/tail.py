"""tail: the last n rows of a stream, keeping no more than n rows (plus one batch) in memory."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

import pyarrow as pa
from pydantic import Field

from oxiflow.data import OxiData
from oxiflow.oxi import OxiConfig, StepContext, Transform, oxi


class LastRows:
    """A bounded deque of batches: whole batches are dropped from the front once the ones behind
    them hold ``n`` rows, so memory is n rows plus at most one batch."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.batches: deque[pa.RecordBatch] = deque()
        self.rows = 0  # rows held
        self.seen = 0  # rows offered

    def add(self, batch: pa.RecordBatch) -> None:
        self.seen += batch.num_rows
        if self.n == 0 or batch.num_rows == 0:
            return
        self.batches.append(batch)
        self.rows += batch.num_rows
        while self.batches and self.rows - self.batches[0].num_rows >= self.n:
            self.rows -= self.batches.popleft().num_rows

    def result(self) -> list[pa.RecordBatch]:
        """The last ``n`` rows, as batches in stream order."""
        out = list(self.batches)
        extra = self.rows - self.n
        if extra > 0 and out:
            out[0] = out[0].slice(extra)
        return out


class TailConfig(OxiConfig):
    n: int = Field(10, ge=0)
    """How many rows to pass on: the last ones of the stream."""


@oxi(
    "tail",
    kind="transform",
    config=TailConfig,
    summary="Pass on the last n rows (holds n rows in memory, not the stream).",
    example="- name: tail\n  config:\n    n: 100",
)
class Tail(Transform):
    config: TailConfig

    def transform(self, inputs: list[OxiData], ctx: StepContext) -> OxiData:
        data = inputs[0]
        last = LastRows(self.config.n)

        def batches() -> Iterator[pa.RecordBatch]:
            for batch in data:
                ctx.check_cancelled()
                last.add(batch)
            kept = last.result()
            ctx.filtered(last.seen - sum(b.num_rows for b in kept))
            yield from kept

        return data.with_batches(batches())
