"""batch: pass rows on re-chunked into batches of `batch_size` rows.

The engine already streams every step with backpressure, so `batch` is about the size of the
pieces the next steps see: `batch_size` rows, made smaller when a batch would exceed
`memory_limit_mb`. Order is always preserved and batches are passed on one at a time
(`parallel_batches` and `preserve_order` are accepted for compatibility). Every
`checkpoint_frequency` batches it logs progress and records the position (rows, batches) in its
metadata, which is what a resume would start from.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pyarrow as pa
from pydantic import Field

from oxiflow.data import OxiData
from oxiflow.oxi import OxiConfig, StepContext, Transform, oxi

# "oxiflow.progress": shown at INFO by the CLI (unlike the rest of oxiflow's INFO logs), since the
# progress messages are what `batch` promises
log = logging.getLogger("oxiflow.progress.batch")


class BatchConfig(OxiConfig):
    batch_size: int = Field(1000, ge=1)
    """Rows per batch passed on."""
    memory_limit_mb: float = Field(100, gt=0)
    """A batch is split further when it would hold more than this many MB."""
    parallel_batches: int = Field(1, ge=1)
    """Accepted for Oxide Flow compatibility; batches are passed on one at a time."""
    preserve_order: bool = True
    """Accepted for compatibility; the order of rows is always kept."""
    checkpoint_frequency: int = Field(10, ge=1)
    """Every this many batches: log progress and record the position in the step's metadata."""


@oxi(
    "batch",
    kind="transform",
    config=BatchConfig,
    summary="Pass rows on in batches of batch_size rows (bounded by memory_limit_mb), with progress.",
    example="- name: batch\n  config:\n    batch_size: 5000",
)
class Batch(Transform):
    config: BatchConfig

    def transform(self, inputs: list[OxiData], ctx: StepContext) -> OxiData:
        data = inputs[0]
        if data.kind != "arrow":
            return data  # text and bytes are chunks of one payload, not rows: nothing to batch
        return data.with_batches(self._rebatch(data, ctx))

    def _rebatch(self, data: OxiData, ctx: StepContext) -> Iterator[pa.RecordBatch]:
        cfg = self.config
        budget = int(cfg.memory_limit_mb * 2**20)
        pending: list[pa.RecordBatch] = []
        held = 0
        state = {"batches": 0, "rows": 0}

        def emit(batch: pa.RecordBatch) -> Iterator[pa.RecordBatch]:
            rows = cfg.batch_size
            if batch.num_rows and batch.nbytes > budget:
                rows = max(1, int(batch.num_rows * budget / batch.nbytes))
            for start in range(0, batch.num_rows, rows):
                piece = batch.slice(start, rows)
                state["batches"] += 1
                state["rows"] += piece.num_rows
                if state["batches"] % cfg.checkpoint_frequency == 0:
                    ctx.metadata.update(checkpoint_rows=state["rows"], checkpoint_batches=state["batches"])
                    log.info(
                        "step %s: %s rows in %s batches",
                        ctx.step_id,
                        f"{state['rows']:,}",
                        f"{state['batches']:,}",
                        extra={"step": ctx.step_id, "event": "batch_checkpoint", "rows": state["rows"]},
                    )
                yield piece

        for batch in data:
            pending.append(batch)
            held += batch.num_rows
            while held >= cfg.batch_size:
                table = pa.Table.from_batches(pending, schema=data.schema)
                head = table.slice(0, cfg.batch_size).combine_chunks().to_batches()
                yield from emit(head[0] if head else pa.RecordBatch.from_pylist([], schema=data.schema))
                rest = table.slice(cfg.batch_size)
                pending = rest.to_batches()
                held = rest.num_rows
        if held:
            table = pa.Table.from_batches(pending, schema=data.schema).combine_chunks()
            for b in table.to_batches():
                yield from emit(b)
        ctx.metadata.update(batches=state["batches"], rows=state["rows"])
