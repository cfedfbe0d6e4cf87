"""Pushdown: run ``source -> [transform] -> sink`` as one DuckDB statement when all of it is SQL.

``read_csv -> write_parquet`` then becomes ``COPY (SELECT * FROM read_csv(...)) TO ...``, and
``read_parquet -> sql -> write_duckdb`` one ``INSERT ... SELECT`` in the warehouse: no Arrow hop
between threads, DuckDB's own parallelism and projection/filter pushdown into the scan.

A chain is pushed down only when the result cannot differ from streaming it:
- every step opts in for its config (``pushdown_ready``: e.g. not ``on_error: dlq``, which needs
  the streaming reader's reject handling) and none has ``continue_on_error`` (its fallback passes
  the input on, which only the streaming path can), an ``incremental`` source (its cursor is
  tracked on the rows passed on), a sink behind the schema gate (``dataset``/``schema_contract``:
  it may cast and dead-letter rows) or a config waiting on ``${steps...}``;
- each step feeds only the next one, and the sink feeds nobody;
- with a transform in the middle, the source can count its rows from metadata
  (``pushdown_counts``, Parquet footers), so every step's rows in/out stay exact.

A transform may also decide at run time, before anything is written: its ``pushdown_check(input,
ctx)`` (optional; ``validate`` measures every rule and check in one aggregate pass over the source;
it returns the input's row count when it has it, or None) or its ``pushdown_sql`` raises
:class:`StreamInstead`, and the engine streams the chain instead, as if it had never been folded.
``explain`` says so ("... checked first").

``settings.pushdown: false`` turns it off; ``oxiflow explain`` shows the chains.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from oxiflow.plan.build import Plan, PlannedStep


class StreamInstead(Exception):
    """Raised by the transform of a pushed-down chain before anything is written (``pushdown_check``,
    ``pushdown_sql``): stream the chain instead. The message says why (logged at INFO, and in the
    transform's metadata as ``pushdown_declined``)."""


@dataclass(frozen=True)
class PushdownInput:
    """What a transform's ``pushdown_check`` gets: its input as a DuckDB query, and how it reads."""

    view: str  # the source step's id: the view name ``pushdown_sql`` is given
    sql: str  # the source's rows (ScanSQL.sql)
    count_sql: str | None = None
    narrow_scans: bool = False  # one column reads without the others (the source's ``narrow_scans``)
    metadata_stats: bool = False  # min/max/null counts come from file metadata (``metadata_stats``)


@dataclass(frozen=True)
class Pushdown:
    source: PlannedStep
    transform: PlannedStep | None
    sink: PlannedStep
    checked: bool = False  # the transform measures its input first and may have the chain streamed

    @property
    def members(self) -> list[PlannedStep]:
        """The steps that run inside the sink's statement."""
        return [self.source] + ([self.transform] if self.transform is not None else [])

    def describe(self) -> str:
        steps = " -> ".join(s.id for s in [*self.members, self.sink])
        if self.checked and self.transform is not None:
            first = f"{self.transform.id} checked first (streamed when a row or check fails)"
            return f"{steps}: one DuckDB statement, {first}"
        return f"{steps}: one DuckDB statement"


def find_pushdowns(plan: Plan) -> dict[str, Pushdown]:
    """The chains to push down, by sink id."""
    if not plan.model.settings.pushdown:
        return {}
    found: dict[str, Pushdown] = {}
    for sink in plan.steps:
        if sink.spec.kind != "sink" or len(sink.inputs) != 1 or plan.consumers(sink.id) or not _ready(sink):
            continue
        upstream = plan.step(sink.inputs[0])
        transform = None
        if upstream.spec.kind == "transform":
            if len(upstream.inputs) != 1 or len(plan.consumers(upstream.id)) != 1 or not _ready(upstream):
                continue
            transform, upstream = upstream, plan.step(upstream.inputs[0])
        if upstream.spec.kind != "source" or len(plan.consumers(upstream.id)) != 1 or not _ready(upstream):
            continue
        if transform is not None and not getattr(upstream.spec.factory, "pushdown_counts", False):
            continue
        checked = transform is not None and hasattr(transform.spec.factory, "pushdown_check")
        found[sink.id] = Pushdown(upstream, transform, sink, checked)
    return found


def _ready(step: PlannedStep) -> bool:
    from oxiflow.contracts import gate as schema_gate
    from oxiflow.incremental import incremental_of

    if step.deferred or step.fused_from is not None or step.model.continue_on_error:
        return False
    if incremental_of(step.config) is not None:
        return False  # the engine filters the rows and tracks the cursor as they stream past
    if step.spec.kind == "sink" and schema_gate.configured(step.model):
        return False  # the schema gate may cast values and dead-letter rows on their way in
    ready = getattr(step.spec.factory(step.config), "pushdown_ready", None)
    return bool(ready and ready())
