"""Checkpointed runs: an incremental source with ``checkpoint_every`` is loaded in slices, each one a
complete exactly-once load (state/loads.py) committed with its cursor before the next slice is read.

A run that fails or is stopped part-way keeps every slice it committed; the next run (``oxiflow run
--resume`` says so explicitly, see :func:`resume_point`) starts from the last committed cursor, so
nothing committed is read again. See docs/incremental.md#checkpoints.

Slices:

- ``rows`` mode: the source reports ``min``/``max`` of its cursor column (:meth:`Source.cursor_range`,
  one aggregate query); from the committed cursor (or ``initial``, or the minimum) the range is cut
  every ``checkpoint_every`` (a number in the cursor's unit, or a duration for dates and timestamps).
  Each slice is the pipeline with its cursor's ``end`` set to the slice's end (exclusive); the last
  slice has no end of its own, so rows that arrived during the run are loaded too.
- ``files`` mode: ``checkpoint_every`` new files per slice, oldest first, until a slice finds fewer.

Each slice runs on the ordinary engine; the run is recorded once, with the figures of all slices
added up, and ``metadata.checkpoints`` says how many slices committed.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from oxiflow.engine.local import LocalEngine, RunOptions, new_run_id, run_plan
from oxiflow.engine.metrics import RunResult, StepMetrics
from oxiflow.errors import ConfigError, OxiflowError, StepError
from oxiflow.incremental import CursorSlice, IncrementalConfig, incremental_of, parse_lag, to_json
from oxiflow.oxi import Source

if TYPE_CHECKING:
    from oxiflow.plan.build import Plan, PlannedStep
    from oxiflow.state.store import StateStore

log = logging.getLogger("oxiflow.checkpoints")


@dataclass(frozen=True)
class Checkpointed:
    step: PlannedStep
    incremental: IncrementalConfig


def checkpointed_source(plan: Plan) -> Checkpointed | None:
    """The pipeline's source with ``incremental.checkpoint_every`` (plan building has checked that
    there is at most one and that every sink accumulates: incremental.checkpoint_problems)."""
    for p in plan.steps:
        inc = incremental_of(p.config)
        if inc is not None and inc.checkpoint_every is not None:
            return Checkpointed(p, inc)
    return None


def run_pipeline(plan: Plan, options: RunOptions) -> RunResult:
    """Run ``plan``: in checkpoint slices when a source asks for them, else as one run."""
    target = checkpointed_source(plan) if options.state is not None and not options.explain else None
    if target is None:
        return run_plan(plan, options)
    return _run_slices(plan, options, target)


def _run_slices(plan: Plan, options: RunOptions, target: Checkpointed) -> RunResult:
    step, inc = target.step, target.incremental
    t0 = time.perf_counter()
    observers = _SliceObservers(options.observers)
    results: list[RunResult] = []
    full_refresh = options.full_refresh
    try:
        ends = None if inc.mode == "files" else _row_slice_ends(plan, options, target)
    except Exception as exc:
        # The probe (one min/max query) runs before any slice, outside the engine that turns step errors
        # into a failed run: do the same here, so the CLI reports it (no traceback) and the run is
        # recorded failed with its exit code, like any run that fails.
        failed = _probe_failed(plan, options, step, exc, time.perf_counter() - t0)
        observers.finish(failed)
        return failed
    index = 0
    while True:
        if inc.mode == "files":
            cut = CursorSlice(max_files=int(float(inc.checkpoint_every or 1)))
        else:
            assert ends is not None
            cut = CursorSlice(end=ends[index] if index < len(ends) else inc.end)
        sliced = replace(options, slices={step.id: cut}, observers=[observers], full_refresh=full_refresh)
        full_refresh = False  # the cursors are forgotten once, before the first slice
        result = run_plan(plan, sliced)
        results.append(result)
        index += 1
        log.info("checkpoint %d of %s: %s", index, plan.name, result.status)
        if result.status != "ok" or _last_slice(result, step.id, inc, cut, ends, index):
            break
    combined = _combine(results, time.perf_counter() - t0)
    observers.finish(combined)
    return combined


def _probe_failed(plan: Plan, options: RunOptions, step: PlannedStep, exc: Exception, seconds: float) -> RunResult:
    """The run, failed before its first slice because the source could not be probed for its cursor's range."""
    error = exc if isinstance(exc, OxiflowError) else StepError(f"{type(exc).__name__}: {exc}", step=step.id)
    error.context.setdefault("step", step.id)
    metrics = [StepMetrics(p.id, p.spec.name, p.spec.kind, reshapes=p.spec.reshapes) for p in plan.steps]
    for m in metrics:
        if m.step_id == step.id:
            m.status, m.error = "failed", str(error)
    return RunResult(
        run_id=options.run_id or new_run_id(),
        pipeline=plan.name,
        status="failed",
        steps=metrics,
        seconds=seconds,
        error=error,
        metadata={"checkpoints": {"committed": 0, "slices": 0}},
    )


def _last_slice(
    result: RunResult, step_id: str, inc: IncrementalConfig, cut: CursorSlice, ends: list[Any] | None, index: int
) -> bool:
    if inc.mode == "files":
        picked = int(result.metadata.get(step_id, {}).get("files_new", 0))
        return picked < (cut.max_files or 0)
    assert ends is not None
    return index > len(ends)


def _row_slice_ends(plan: Plan, options: RunOptions, target: Checkpointed) -> list[Any]:
    """The exclusive ends of the slices before the last (JSON values, as ``incremental.end`` takes)."""
    step, inc = target.step, target.incremental
    source = step.spec.factory(step.config)
    probe = LocalEngine(plan, replace(options, observers=[]))
    bounds = source.cursor_range(inc.cursor, probe.step_context(step.id)) if isinstance(source, Source) else None
    if bounds is None:
        if isinstance(source, Source) and type(source).cursor_range is Source.cursor_range:
            raise ConfigError(
                f"{step.spec.name} cannot tell the range of its cursor, which `checkpoint_every` cuts into slices",
                step=step.id,
                hint="use a database source (read_postgres, read_mysql, read_sqlite, read_duckdb) or `mode: files`",
            )
        return []  # nothing to read
    lo, hi = (_temporal_text(v) for v in bounds)
    start = lo
    stored = None if options.full_refresh else _stored_last(options.state, plan.name, step.id)
    for known in (stored, inc.initial):
        if known is not None:
            start = max(start, _like(known, lo))
    end = _like(inc.end, lo) if inc.end is not None else None
    width = _width(inc.checkpoint_every, lo, step.id)
    out: list[Any] = []
    cut = start + width
    while cut <= hi and (end is None or cut < end):
        out.append(to_json(cut))
        cut = cut + width
    return out


def _temporal_text(value: Any) -> Any:
    """SQLite keeps dates and timestamps as ISO text: as datetimes they can be cut into slices."""
    if isinstance(value, str) and len(value) >= 10 and value[4] == "-" and value[7] == "-":
        try:
            return dt.datetime.fromisoformat(value)
        except ValueError:
            return value
    return value


def _stored_last(store: StateStore | None, pipeline: str, step_id: str) -> Any:
    from oxiflow.state.loads import CURSOR

    if store is None:
        return None
    stored = store.get_cursor(pipeline, step_id, CURSOR)
    value = stored.value if stored is not None and isinstance(stored.value, dict) else None
    return None if value is None else value.get("last")


def _like(value: Any, sample: Any) -> Any:
    """A JSON/config value in the Python type of ``sample`` (the probed cursor values)."""
    if isinstance(sample, dt.datetime):
        parsed = dt.datetime.fromisoformat(str(value)) if not isinstance(value, dt.datetime) else value
        if (parsed.tzinfo is None) != (sample.tzinfo is None):
            parsed = parsed.replace(tzinfo=sample.tzinfo)
        return parsed
    if isinstance(sample, dt.date):
        return dt.date.fromisoformat(str(value)[:10])
    if isinstance(sample, int | float) and not isinstance(value, bool):
        return type(sample)(float(value)) if isinstance(sample, float) else int(float(value))
    return value


def _width(every: float | str | None, sample: Any, step_id: str) -> Any:
    assert every is not None
    amount = parse_lag(every, "checkpoint_every")
    if isinstance(sample, dt.datetime):
        return dt.timedelta(seconds=amount)
    if isinstance(sample, dt.date):
        return dt.timedelta(days=max(1, math.ceil(amount / 86400)))
    if isinstance(sample, int):
        return max(1, math.ceil(amount))
    if isinstance(sample, float):
        return amount
    raise ConfigError(
        f"`checkpoint_every` needs a number, date or timestamp cursor; this one holds {type(sample).__name__}",
        step=step_id,
    )


def _combine(results: list[RunResult], seconds: float) -> RunResult:
    last = results[-1]
    steps: dict[str, StepMetrics] = {}
    for result in results:
        for m in result.steps:
            total = steps.get(m.step_id)
            if total is None:
                steps[m.step_id] = replace(m)
                continue
            for name in ("rows_in", "rows_out", "rows_rejected", "rows_filtered", "bytes_in", "bytes_out", "seconds"):
                setattr(total, name, getattr(total, name) + getattr(m, name))
            total.status, total.error, total.attempts = m.status, m.error, max(total.attempts, m.attempts)
    metadata = {k: dict(v) for k, v in last.metadata.items()}
    committed = sum(r.status == "ok" for r in results)
    metadata["checkpoints"] = {"committed": committed, "slices": len(results)}
    dlq = [r for r in results if r.dlq_count]
    return RunResult(
        run_id=last.run_id,
        pipeline=last.pipeline,
        status=last.status,
        steps=list(steps.values()),
        seconds=seconds,
        error=last.error,
        dlq_path=dlq[-1].dlq_path if dlq else None,
        dlq_count=sum(r.dlq_count for r in results),
        metadata=metadata,
    )


class _SliceObservers:
    """The run's observers, seen by each slice: everything passes through except the end of a slice,
    which only the end of the whole run (:meth:`finish`) reports to the state recorder."""

    def __init__(self, observers: list[Any]) -> None:
        self.observers = observers

    def __getattr__(self, event: str) -> Any:
        if event == "on_run_end":
            return self._slice_end

        def forward(*args: Any) -> None:
            for obs in self.observers:
                fn = getattr(obs, event, None)
                if fn is not None:
                    fn(*args)

        return forward

    def _slice_end(self, result: RunResult) -> None:
        for obs in self.observers:
            if not _records_runs(obs) and hasattr(obs, "on_run_end"):
                obs.on_run_end(result)  # progress bars and the like end with each slice

    def finish(self, result: RunResult) -> None:
        for obs in self.observers:
            if _records_runs(obs):
                obs.on_run_end(result)


def _records_runs(observer: Any) -> bool:
    from oxiflow.state.recorder import RunRecorder

    return isinstance(observer, RunRecorder)


# -- oxiflow run --resume -------------------------------------------------------------------------
@dataclass(frozen=True)
class ResumePoint:
    run_id: str
    status: str  # failed | cancelled | running (a run that was killed)
    checkpoints: int  # slices that run committed


def resume_point(store: StateStore, plan: Plan, current_run: str) -> ResumePoint | None:
    """The run ``--resume`` continues: the pipeline's latest run before ``current_run``, when it did not
    succeed; None when there is nothing to resume. ConfigError for a pipeline that keeps no cursor."""
    if not any(incremental_of(p.config) is not None for p in plan.steps):
        raise ConfigError(
            f"pipeline {plan.name!r} has no incremental source, so its runs keep no checkpoint to resume from",
            hint="rerun it, or give its source `incremental:` (with `checkpoint_every` to commit in slices)",
        )
    before = [r for r in store.runs(plan.name, limit=3) if r["run_id"] != current_run]
    if not before or before[0]["status"] == "ok":
        return None
    last = before[0]
    committed = [load for load in store.loads(plan.name, status="committed") if load.run_id == last["run_id"]]
    return ResumePoint(run_id=str(last["run_id"]), status=str(last["status"]), checkpoints=len(committed))
