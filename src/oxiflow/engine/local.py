"""The local engine: every step in its own thread, joined by bounded queues.

A producer blocks when its consumer's queue is full (backpressure), so memory stays bounded by
``queue_size`` batches per edge. Arrow compute, DuckDB and file I/O release the GIL, so decode,
transform and write overlap on several cores.

Failure handling, per step:
- ``timeout_seconds`` is per attempt: when it runs out the engine interrupts the step (DuckDB
  ``interrupt()``, closing its sockets/files through ``ctx.on_interrupt``) and, if it does not
  stop within a grace period, abandons its thread and fails the run.
- ``retry_attempts`` retries retryable errors with exponential backoff and jitter, as long as
  the attempt has neither consumed input nor emitted output: a stream half passed downstream
  cannot be replayed without duplicating rows (a rerun or ``--resume`` handles that case).
- ``continue_on_error``: after the final failure the step's remaining input is passed on
  unchanged; rows it had consumed without passing on are counted as rejected.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from oxiflow.config.substitute import resolve_step_references, step_references
from oxiflow.data import OxiData
from oxiflow.engine.dlq import DeadLetterQueue
from oxiflow.engine.metrics import RunResult, StepMetrics
from oxiflow.errors import ConfigError, OxiflowError, RunCancelled, StepError, StepTimeout, is_retryable
from oxiflow.oxi import Sink, Source, StepContext, Transform
from oxiflow.plan.build import Plan, PlannedStep, validate_step_config

log = logging.getLogger("oxiflow.engine")

_POLL = 0.05  # seconds between checks of cancel flags while blocked on a queue
_GRACE = 3.0  # seconds an interrupted step gets to stop before its thread is abandoned


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


class _Channel:
    """A bounded queue from one producer to one consumer."""

    def __init__(self, size: int, cancel: threading.Event) -> None:
        self.queue: queue.Queue[tuple[Any, ...]] = queue.Queue(size)
        self.cancel = cancel

    def put(self, item: tuple[Any, ...]) -> None:
        while True:
            try:
                self.queue.put(item, timeout=_POLL)
                return
            except queue.Full:
                if self.cancel.is_set():
                    raise RunCancelled("run cancelled") from None

    def get(self) -> tuple[Any, ...]:
        while True:
            try:
                return self.queue.get(timeout=_POLL)
            except queue.Empty:
                if self.cancel.is_set():
                    raise RunCancelled("run cancelled") from None


class UpstreamFailed(RunCancelled):
    """The step feeding this one failed; this one stops without an error of its own."""


class _Inlet:
    """The consumer end of a channel: yields the stream once its schema has arrived."""

    def __init__(self, channel: _Channel, source_id: str, metrics: StepMetrics, on_consume: Callable[[], None]) -> None:
        self.channel = channel
        self.source_id = source_id
        self.metrics = metrics
        self.on_consume = on_consume
        self.schema: pa.Schema | None = None
        self.kind = "arrow"
        self.metadata: dict[str, Any] = {}
        self.finished = False

    def open(self) -> None:
        if self.schema is not None:
            return
        msg = self.channel.get()
        if msg[0] == "error":
            raise UpstreamFailed(f"input {self.source_id!r} failed")
        _, self.schema, self.kind, self.metadata = msg

    def batches(self) -> Iterator[pa.RecordBatch]:
        while not self.finished:
            msg = self.channel.get()
            tag = msg[0]
            if tag == "batch":
                batch = msg[1]
                self.on_consume()
                self.metrics.rows_in += batch.num_rows
                self.metrics.bytes_in += batch.nbytes
                yield batch
            elif tag == "end":
                self.finished = True
            else:
                self.finished = True
                raise UpstreamFailed(f"input {self.source_id!r} failed")

    def data(self) -> OxiData:
        self.open()
        assert self.schema is not None
        return OxiData(self.schema, self.batches(), self.metadata, self.kind)  # type: ignore[arg-type]

    def drain(self) -> None:
        for _ in self.batches():
            pass


class _Outlet:
    """The producer end: fans each batch out to every consumer's channel."""

    def __init__(self) -> None:
        self.channels: list[_Channel] = []
        self.opened = False
        self.schema: pa.Schema | None = None

    def open(self, schema: pa.Schema, kind: str, metadata: dict[str, Any]) -> None:
        if self.opened:
            return
        self.opened = True
        self.schema = schema
        for ch in self.channels:
            ch.put(("schema", schema, kind, metadata))

    def emit(self, batch: pa.RecordBatch) -> None:
        for ch in self.channels:
            ch.put(("batch", batch))

    def close(self) -> None:
        for ch in self.channels:
            ch.put(("end",))

    def fail(self) -> None:
        for ch in self.channels:
            try:
                ch.queue.put_nowait(("error",))
            except queue.Full:
                pass  # the consumer sees the run's cancel flag instead


@dataclass
class _StepRun:
    planned: PlannedStep
    metrics: StepMetrics
    outlet: _Outlet = field(default_factory=_Outlet)
    inlets: list[_Inlet] = field(default_factory=list)
    thread: threading.Thread | None = None
    ctx: StepContext | None = None
    deadline: float | None = None
    timed_out: bool = False
    interrupted_at: float | None = None
    consumed: bool = False
    emitted: bool = False
    opened: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    started: float = 0.0


@dataclass
class RunOptions:
    variables: dict[str, str] = field(default_factory=dict)
    explain: bool = False  # probe schemas only: sources read nothing, sinks are skipped
    run_id: str | None = None
    observers: list[Any] = field(default_factory=list)


class LocalEngine:
    def __init__(self, plan: Plan, options: RunOptions | None = None) -> None:
        self.plan = plan
        self.options = options or RunOptions()
        self.run_id = self.options.run_id or new_run_id()
        self.cancel = threading.Event()
        self.failure: BaseException | None = None
        self.metadata: dict[str, dict[str, Any]] = {}
        self.schemas: dict[str, pa.Schema] = {}  # output schema of every step that produced one
        settings = plan.model.settings
        self.settings = settings
        dlq_dir = Path(settings.dlq_dir)
        if not dlq_dir.is_absolute():
            dlq_dir = (plan.project.root if plan.project else plan.base_dir) / dlq_dir
        self.dlq = DeadLetterQueue(dlq_dir / f"{plan.name}-{self.run_id}.jsonl", self.run_id, plan.name)
        self.runs: dict[str, _StepRun] = {}
        self._lock = threading.Lock()
        self._wire()

    # -- wiring -----------------------------------------------------------------------------------
    def _producer_of(self, step_id: str) -> str:
        """Sinks pass their input on: a step reading a sink reads what the sink read."""
        step = self.plan.step(step_id)
        while step.spec.kind == "sink" and step.inputs:
            step = self.plan.step(step.inputs[0])
        return step.id

    def _wire(self) -> None:
        for p in self.plan.steps:
            m = StepMetrics(p.id, p.spec.name, p.spec.kind, reshapes=p.spec.reshapes)
            if p.fused_from is not None:
                m.fused = [p.fused_from.id]
            self.runs[p.id] = _StepRun(p, m)
        for p in self.plan.steps:
            run = self.runs[p.id]
            for ref in p.inputs:
                producer = self.runs[self._producer_of(ref)]
                ch = _Channel(self.settings.queue_size, self.cancel)
                producer.outlet.channels.append(ch)

                def consumed(run: _StepRun = run) -> None:
                    run.consumed = True

                run.inlets.append(_Inlet(ch, ref, run.metrics, consumed))

    # -- running ----------------------------------------------------------------------------------
    def run(self) -> RunResult:
        t0 = time.perf_counter()
        self._notify("on_run_start", self)
        for run in self.runs.values():
            run.thread = threading.Thread(
                target=self._step_thread, args=(run,), name=f"oxi-{run.planned.id}", daemon=True
            )
        for run in self.runs.values():
            assert run.thread is not None
            run.thread.start()
        status = "ok"
        try:
            self._supervise()
        except KeyboardInterrupt:
            self._cancel_all(RunCancelled("interrupted (Ctrl-C)"))
            self._join_all()
        finally:
            self.dlq.close()
        if self.failure is not None:
            status = "cancelled" if isinstance(self.failure, RunCancelled) else "failed"
        result = RunResult(
            run_id=self.run_id,
            pipeline=self.plan.name,
            status=status,
            steps=[r.metrics for r in self.runs.values()],
            seconds=time.perf_counter() - t0,
            error=self.failure,
            dlq_path=str(self.dlq.path) if self.dlq.count else None,
            dlq_count=self.dlq.count,
            metadata=self.metadata,
        )
        self._notify("on_run_end", result)
        return result

    def _supervise(self) -> None:
        while True:
            alive = [r for r in self.runs.values() if r.thread is not None and r.thread.is_alive()]
            if not alive:
                return
            now = time.monotonic()
            for r in alive:
                if r.deadline is not None and not r.timed_out and now > r.deadline:
                    r.timed_out = True
                    r.interrupted_at = now
                    log.warning("step %s timed out; interrupting it", r.planned.id)
                    if r.ctx is not None:
                        r.ctx.interrupt()
                if r.interrupted_at is not None and now - r.interrupted_at > _GRACE and not r.done.is_set():
                    # Blocked in something that cannot be interrupted: abandon the thread.
                    r.metrics.status = "failed"
                    r.metrics.error = f"timed out after {r.planned.model.timeout_seconds}s and did not stop"
                    r.done.set()
                    r.thread = None
                    self._fail(r, StepTimeout(r.metrics.error, step=r.planned.id))
            self._check_memory()
            alive[0].thread.join(timeout=_POLL) if alive[0].thread is not None else None

    def _check_memory(self) -> None:
        limit = self.settings.memory_limit_mb
        if limit is None or self.failure is not None:
            return
        rss = current_rss_mb()
        if rss is not None and rss > limit * 1.5 + 200:
            # DuckDB honours memory_limit itself; this catches Python-side growth beyond the budget.
            self._cancel_all(OxiflowError(f"memory limit exceeded: {rss:.0f} MB RSS > {limit} MB budget"))

    def _join_all(self) -> None:
        deadline = time.monotonic() + _GRACE
        for r in self.runs.values():
            if r.thread is not None:
                r.thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def _cancel_all(self, reason: BaseException) -> None:
        with self._lock:
            if self.failure is None:
                self.failure = reason
        self.cancel.set()
        for r in self.runs.values():
            if r.ctx is not None:
                r.ctx.interrupt()

    def _fail(self, run: _StepRun, exc: BaseException) -> None:
        run.outlet.fail()
        self._cancel_all(exc)

    def _notify(self, event: str, *args: Any) -> None:
        for obs in self.options.observers:
            fn = getattr(obs, event, None)
            if fn is not None:
                try:
                    fn(*args)
                except Exception:  # an observer must never break a run
                    log.debug("observer %r failed on %s", obs, event, exc_info=True)

    # -- one step -------------------------------------------------------------------------------
    def _make_ctx(self, run: _StepRun) -> StepContext:
        p = run.planned
        settings = self.settings
        mem = p.model.max_memory_mb or settings.memory_limit_mb
        root = settings.output_root
        return StepContext(
            step_id=p.id,
            oxi_name=p.spec.name,
            run_id=self.run_id,
            base_dir=self.plan.base_dir,
            output_root=(self.plan.base_dir / root) if root else None,
            batch_size=settings.batch_size,
            memory_limit_mb=mem,
            limit_rows=0 if self.options.explain else None,
            input_ids=list(p.inputs),
            dlq=self.dlq,
        )

    def _config_for(self, p: PlannedStep) -> Any:
        if not p.deferred:
            return p.config
        ancestors = self._ancestors(p.id)
        for ref_id, _ in step_references(p.raw_config):
            target = self.runs.get(self.plan.fused.get(ref_id, ref_id))
            if target is None:
                continue
            event = target.opened if target.planned.id in ancestors else target.done
            while not event.wait(_POLL):
                if self.cancel.is_set():
                    raise RunCancelled("run cancelled")
        try:
            raw = resolve_step_references(p.raw_config, self.metadata)
        except KeyError as exc:
            raise StepError(str(exc.args[0]), step=p.id) from None
        from pydantic import ValidationError

        from oxiflow.config.load import pydantic_issues

        try:
            return validate_step_config(p.spec, raw)
        except ValidationError as exc:
            raise ConfigError(pydantic_issues(exc, self.plan.positions, ("pipeline", p.index, "config"))) from None

    def _ancestors(self, step_id: str) -> set[str]:
        out: set[str] = set()
        todo = [step_id]
        while todo:
            for ref in self.plan.step(todo.pop()).inputs:
                if ref not in out:
                    out.add(ref)
                    todo.append(ref)
        return out

    def _step_thread(self, run: _StepRun) -> None:
        p = run.planned
        m = run.metrics
        run.started = time.perf_counter()
        m.status = "running"
        self._notify("on_step_start", m)
        attempt = 0
        try:
            if self.options.explain and p.spec.kind == "sink":
                m.status = "skipped"
                try:
                    for inlet in run.inlets:
                        inlet.open()
                        inlet.drain()
                except RunCancelled:  # the step feeding it failed; that step reports the error
                    m.status = "cancelled"
                return
            while True:
                attempt += 1
                m.attempts = attempt
                ctx = self._make_ctx(run)
                run.ctx = ctx
                timeout = p.model.timeout_seconds
                run.timed_out = False
                run.interrupted_at = None
                run.deadline = time.monotonic() + timeout if timeout else None
                try:
                    if self.cancel.is_set():
                        raise RunCancelled("run cancelled")
                    self._attempt(run, ctx)
                    m.status = "ok"
                    return
                except BaseException as raw_exc:
                    exc = raw_exc
                    if run.timed_out:
                        exc = StepTimeout(f"timed out after {timeout}s", step=p.id)
                    if isinstance(exc, RunCancelled) and self.cancel.is_set() and not run.timed_out:
                        m.status = "cancelled"
                        run.outlet.fail()
                        return
                    retryable = isinstance(exc, StepTimeout) or is_retryable(exc)
                    if (
                        attempt <= p.model.retry_attempts
                        and retryable
                        and not run.emitted
                        and not run.consumed
                        and not self.cancel.is_set()
                    ):
                        delay = p.model.retry_delay_seconds * (2 ** (attempt - 1)) * (0.5 + random.random())
                        log.warning("step %s failed (%s); retry %d in %.2fs", p.id, exc, attempt, delay)
                        self._notify("on_step_retry", m, exc)
                        if self.cancel.wait(delay):
                            m.status = "cancelled"
                            run.outlet.fail()
                            return
                        continue
                    error = _as_step_error(exc, p)
                    m.error = str(error)
                    if p.model.continue_on_error and not isinstance(exc, ConfigError):
                        log.warning("step %s failed, continuing with its input: %s", p.id, error)
                        self._continue_after_failure(run, ctx)
                        m.status = "continued"
                        return
                    m.status = "failed"
                    self._fail(run, error)
                    return
        finally:
            if run.ctx is not None:
                m.rows_rejected = run.ctx.rows_rejected + m.rows_rejected
                m.rows_filtered = run.ctx.rows_filtered
                m.bytes_out = max(m.bytes_out, run.ctx.bytes_written)
                if p.spec.kind == "source":
                    m.rows_in = run.ctx.rows_read if run.ctx.rows_read is not None else m.rows_out + m.rows_rejected
                    m.bytes_in = run.ctx.bytes_read
                elif p.spec.kind == "sink" and m.status == "ok":
                    m.rows_out = m.rows_in - m.rows_rejected - m.rows_filtered
                    # every sink can be referenced as ${steps.ID.metadata.rows}, even one that forgot it
                    run.ctx.metadata.setdefault("rows", m.rows_out)
                with self._lock:
                    self.metadata.setdefault(p.id, {}).update(run.ctx.metadata)
            m.seconds = time.perf_counter() - run.started
            run.opened.set()
            run.done.set()
            self._notify("on_step_end", m)

    def _attempt(self, run: _StepRun, ctx: StepContext) -> None:
        p = run.planned
        config = self._config_for(p)
        oxi = p.spec.factory(config)
        inputs = []
        for inlet in run.inlets:
            inlet.open()
            inputs.append(inlet.data())
        data: OxiData | None
        if p.fused_from is not None:
            reader_config = self._config_for(p.fused_from)
            data = oxi.scan_file(reader_config, ctx)  # type: ignore[attr-defined]
            with self._lock:
                self.metadata.setdefault(p.fused_from.id, {}).update(data.metadata)
        elif isinstance(oxi, Source):
            data = oxi.read(ctx)
        elif isinstance(oxi, Transform):
            data = oxi.transform(inputs, ctx)
        elif isinstance(oxi, Sink):
            oxi.write(inputs[0], ctx)
            data = None
        else:
            raise StepError(f"{type(oxi).__name__} is neither a Source, Transform nor Sink", step=p.id)
        if data is None:
            self._drain_inputs(run)
            return
        with self._lock:
            # what read()/transform() reported so far must be visible to steps that wait on `opened`
            self.metadata.setdefault(p.id, {}).update(ctx.metadata)
            self.metadata[p.id].update(data.metadata)
        self.schemas[p.id] = data.schema
        run.outlet.open(data.schema, data.kind, data.metadata)
        run.opened.set()
        m = run.metrics
        for batch in data:
            if ctx.cancel.is_set():
                raise RunCancelled("step cancelled", step=p.id)
            run.emitted = True
            run.outlet.emit(batch)
            m.rows_out += batch.num_rows
            m.bytes_out += batch.nbytes
            self._notify("on_batch", m)
        self._drain_inputs(run)
        run.outlet.close()

    @staticmethod
    def _drain_inputs(run: _StepRun) -> None:
        # A step that stopped reading early (limit, head) must still free its producers; what it
        # did not read is counted as filtered so the conservation check holds.
        for inlet in run.inlets:
            before = run.metrics.rows_in
            inlet.drain()
            if run.ctx is not None:
                run.ctx.rows_filtered += run.metrics.rows_in - before

    def _continue_after_failure(self, run: _StepRun, ctx: StepContext) -> None:
        """Pass the rest of the input on; rows consumed but not passed on count as rejected."""
        m = run.metrics
        if run.planned.spec.kind == "sink" or not run.inlets:
            for inlet in run.inlets:
                inlet.drain()
            m.rows_rejected += max(0, m.rows_in - m.rows_out - ctx.rows_rejected - ctx.rows_filtered)
            if not run.outlet.opened:
                run.outlet.open(pa.schema([]), "arrow", {})
            run.outlet.close()
            return
        inlet = run.inlets[0]
        inlet.open()
        assert inlet.schema is not None
        if run.outlet.opened and run.outlet.schema != inlet.schema:
            raise StepError(
                "cannot continue after the failure: the step already emitted rows of another schema",
                step=run.planned.id,
            )
        before_in = m.rows_in
        m.rows_rejected += max(0, before_in - m.rows_out - ctx.rows_rejected - ctx.rows_filtered)
        run.outlet.open(inlet.schema, inlet.kind, inlet.metadata)
        for batch in inlet.batches():
            run.outlet.emit(batch)
            m.rows_out += batch.num_rows
        for extra in run.inlets[1:]:
            extra.drain()
        run.outlet.close()


def _as_step_error(exc: BaseException, p: PlannedStep) -> BaseException:
    if isinstance(exc, OxiflowError):
        exc.context.setdefault("step", p.id)
        return exc
    text = f"{type(exc).__name__}: {exc}"
    err = StepError(text, step=p.id, retryable=is_retryable(exc))
    err.__cause__ = exc
    return err


def current_rss_mb() -> float | None:
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
        import os

        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


def run_plan(plan: Plan, options: RunOptions | None = None) -> RunResult:
    return LocalEngine(plan, options).run()
