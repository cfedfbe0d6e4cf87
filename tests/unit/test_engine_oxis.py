"""Test-only oxis for the engine tests, registered programmatically, plus a sanity test.

Probes (module-level dicts keyed by a config ``probe`` name) let a test see what a step did:
attempt times, how far a source got ahead of its sink, what it read from DuckDB.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from oxiflow.data import OxiData
from oxiflow.engine.duck import connect
from oxiflow.oxi import OxiConfig, Sink, Source, StepContext, Transform, oxi
from oxiflow.registry import default_registry

PROBES: dict[str, dict[str, Any]] = {}
ID_SCHEMA = pa.schema([("id", pa.int64())])


def probe(name: str) -> dict[str, Any]:
    return PROBES.setdefault(name, {})


def id_batch(start: int, n: int) -> pa.RecordBatch:
    return pa.record_batch([pa.array(range(start, start + n), pa.int64())], schema=ID_SCHEMA)


class CountConfig(OxiConfig):
    batches: int = 3
    rows: int = 10
    start: int = 0
    probe: str | None = None
    report: dict[str, Any] = {}


@oxi("t_count", kind="source", config=CountConfig, summary="test: ids start.. in `batches` batches of `rows`")
class Count(Source):
    config: CountConfig

    def read(self, ctx: StepContext) -> OxiData:
        cfg = self.config
        ctx.metadata.update(cfg.report)
        pr = probe(cfg.probe) if cfg.probe else None

        def batches() -> Iterator[pa.RecordBatch]:
            for i in range(cfg.batches):
                if pr is not None:  # how many batches exist that the sink has not finished with
                    pr["ahead"] = max(pr.get("ahead", 0), i + 1 - pr.get("consumed", 0))
                yield id_batch(cfg.start + i * cfg.rows, cfg.rows)

        return OxiData(ID_SCHEMA, batches())


class BlockConfig(OxiConfig):
    how: str = "socket"  # socket | event | stubborn (ignores interrupts)
    probe: str = "block"


@oxi("t_block", kind="source", config=BlockConfig, summary="test: blocks until interrupted")
class Block(Source):
    config: BlockConfig

    def read(self, ctx: StepContext) -> OxiData:
        pr = probe(self.config.probe)
        how = self.config.how

        def batches() -> Iterator[pa.RecordBatch]:
            if how == "socket":
                a, b = socket.socketpair()
                # close() does not wake a blocked recv on Linux; shutdown() does
                ctx.on_interrupt(lambda: a.shutdown(socket.SHUT_RDWR))
                try:
                    pr["blocked"] = True
                    data = a.recv(1)  # nobody ever writes to b
                finally:
                    a.close()
                    b.close()
                pr["woke"] = data
            else:
                event = threading.Event()
                pr["event"] = event
                if how == "event":
                    ctx.on_interrupt(event.set)
                pr["blocked"] = True
                event.wait(60)
            ctx.check_cancelled()
            yield id_batch(0, 1)

        return OxiData(ID_SCHEMA, batches())


class DuckSlowConfig(OxiConfig):
    n: int = 1_000_000


@oxi("t_duck_slow", kind="source", config=DuckSlowConfig, summary="test: a DuckDB query that runs for ages")
class DuckSlow(Source):
    config: DuckSlowConfig

    def read(self, ctx: StepContext) -> OxiData:
        n = self.config.n

        def batches() -> Iterator[pa.RecordBatch]:
            con = connect(ctx)
            try:
                # n*n rows through a non-foldable aggregate: minutes of work
                row = con.execute(f"SELECT sum((a.range * b.range) % 7) FROM range({n}) a, range({n}) b").fetchone()
            finally:
                con.close()
            yield id_batch(int(row[0]) if row else 0, 1)

        return OxiData(ID_SCHEMA, batches())


class FlakyConfig(OxiConfig):
    fail_times: int = 1
    error: str = "connection"  # connection | value
    probe: str = "flaky"


@oxi("t_flaky", kind="source", config=FlakyConfig, summary="test: fails the first attempts")
class Flaky(Source):
    config: FlakyConfig

    def read(self, ctx: StepContext) -> OxiData:
        pr = probe(self.config.probe)
        times = pr.setdefault("times", [])
        times.append(time.monotonic())
        if len(times) <= self.config.fail_times:
            if self.config.error == "connection":
                raise ConnectionError(f"attempt {len(times)}: connection reset")
            raise ValueError(f"attempt {len(times)}: bad value")
        return OxiData(ID_SCHEMA, [id_batch(0, 5)])


class SettingConfig(OxiConfig):
    setting: str = "memory_limit"


@oxi("t_setting", kind="source", config=SettingConfig, summary="test: a DuckDB setting as seen by the step")
class Setting(Source):
    config: SettingConfig

    def read(self, ctx: StepContext) -> OxiData:
        con = connect(ctx)
        try:
            row = con.execute(f"SELECT current_setting('{self.config.setting}')").fetchone()
        finally:
            con.close()
        ctx.metadata["value"] = row[0] if row else None
        return OxiData.from_table(pa.table({"value": [str(ctx.metadata["value"])]}))


class UnionConfig(OxiConfig):
    pass


@oxi("t_union", kind="transform", config=UnionConfig, summary="test: concatenates its inputs", max_inputs=None)
class Union(Transform):
    def transform(self, inputs: list[OxiData], ctx: StepContext) -> OxiData:
        def batches() -> Iterator[pa.RecordBatch]:
            for data in inputs:
                yield from data

        return OxiData(inputs[0].schema, batches())


class FailAfterConfig(OxiConfig):
    ok_batches: int = 2


@oxi("t_fail_after", kind="transform", config=FailAfterConfig, summary="test: passes k batches then fails")
class FailAfter(Transform):
    config: FailAfterConfig

    def transform(self, inputs: list[OxiData], ctx: StepContext) -> OxiData:
        def batches() -> Iterator[pa.RecordBatch]:
            for i, batch in enumerate(inputs[0]):
                if i >= self.config.ok_batches:
                    raise ValueError(f"transform broke on batch {i}")
                yield batch

        return inputs[0].with_batches(batches())


class CollectConfig(OxiConfig):
    probe: str
    delay: float = 0.0
    fail: bool = False


@oxi("t_collect", kind="sink", config=CollectConfig, summary="test: keeps rows in a probe (optionally slowly)")
class Collect(Sink):
    config: CollectConfig

    def write(self, data: OxiData, ctx: StepContext) -> None:
        pr = probe(self.config.probe)
        ids: list[int] = pr.setdefault("ids", [])
        for batch in data:
            if self.config.delay:
                time.sleep(self.config.delay)  # the simulated slow write, not a synchronisation
            ids.extend(batch.column(0).to_pylist())
            pr["consumed"] = pr.get("consumed", 0) + 1
            if self.config.fail:
                raise ValueError("sink broke")
        ctx.metadata["rows"] = len(ids)


for _cls in (Count, Block, DuckSlow, Flaky, Setting, Union, FailAfter, Collect):
    default_registry().register(_cls)


def test_test_oxis_are_registered() -> None:
    names = default_registry().names()
    assert {"t_count", "t_block", "t_duck_slow", "t_flaky", "t_setting", "t_union", "t_collect"} <= set(names)
