"""oxiflow.testing.check_oxi catches the mistakes it is there for (each broken oxi below breaks one rule)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pydantic import ConfigDict

from oxiflow.data import OxiData
from oxiflow.oxi import BatchTransform, OxiConfig, Sink, Source, StepContext, Transform, oxi
from oxiflow.testing import check_oxi

ROWS = pa.table({"id": [1, 2, 3, 4], "x": [1.0, 2.0, 3.0, 4.0]})


class GoodConfig(OxiConfig):
    factor: float = 2.0
    """Multiplier."""


@oxi("scale", kind="transform", config=GoodConfig, summary="Scale x.", example="- name: scale\n  config: {factor: 3}")
class Scale(BatchTransform):
    def transform_batch(self, batch: pa.RecordBatch, ctx: StepContext) -> pa.RecordBatch:
        i = batch.schema.get_field_index("x")
        return batch.set_column(i, "x", pc.multiply(batch.column(i), self.config.factor))


def failed(report) -> set[str]:  # type: ignore[no-untyped-def]
    return {r.name for r in report.failures}


def test_a_good_transform_passes(tmp_path: Path) -> None:
    report = check_oxi(Scale, config={}, sample=ROWS, workdir=tmp_path)
    assert report.passed and report.result("conservation").detail == "4 in = 4 out + 0 rejected + 0 filtered"


def test_failures_raise_with_every_failed_check() -> None:
    class Loose(OxiConfig):
        model_config = ConfigDict(extra="allow")
        factor: float = 1.0

    @oxi("write_Bad", kind="transform", config=Loose, summary="")
    class Bad(Scale):
        pass

    with pytest.raises(AssertionError) as err:
        check_oxi(Bad)
    text = str(err.value)
    for name in ("registration", "naming", "config_model", "config_documented", "example"):
        assert f"{name}: FAILED" in text
    assert "extra='forbid'" in text and "Loose.factor" in text


def test_an_example_that_does_not_validate_is_caught() -> None:
    @oxi("scale2", kind="transform", config=GoodConfig, summary="x", example="- name: scale2\n  config: {factr: 3}")
    class Scale2(Scale):
        pass

    assert failed(check_oxi(Scale2, raise_on_failure=False)) == {"example"}


def test_batches_off_the_declared_schema_and_nulls_in_not_null_fields(tmp_path: Path) -> None:
    class Cfg(OxiConfig):
        bad: str = "type"
        """Which lie to tell."""

    @oxi("read_liar", kind="source", config=Cfg, summary="Lies.", example="- name: read_liar")
    class Liar(Source):
        def read(self, ctx: StepContext) -> OxiData:
            declared = pa.schema([pa.field("id", pa.int64(), nullable=False)])

            def batches() -> Iterator[pa.RecordBatch]:
                if ctx.limit_rows == 0:
                    return
                if self.config.bad == "type":
                    yield pa.record_batch([pa.array([1.5])], names=["id"])
                else:
                    yield pa.RecordBatch.from_arrays([pa.array([1, None])], schema=declared)

            return OxiData(declared, batches())

    typed = check_oxi(Liar, config={"bad": "type"}, workdir=tmp_path, raise_on_failure=False)
    assert "source_schema" in failed(typed)
    nulls = check_oxi(Liar, config={"bad": "nulls"}, workdir=tmp_path, raise_on_failure=False)
    assert "declared not null" in nulls.result("source_schema").detail


def test_a_probe_that_declares_another_schema_is_caught(tmp_path: Path) -> None:
    @oxi("widen", kind="transform", config=GoodConfig, summary="x", example="- name: widen")
    class Widen(Transform):
        def transform(self, inputs: list[OxiData], ctx: StepContext) -> OxiData:
            table = inputs[0].read_all()
            if table.num_rows:  # a schema that depends on whether there are rows: explain would lie
                table = table.append_column("extra", pa.array([1] * table.num_rows))
            return OxiData.from_table(table)

    assert "probe_schema" in failed(check_oxi(Widen, config={}, sample=ROWS, workdir=tmp_path, raise_on_failure=False))


def test_rows_that_vanish_break_conservation(tmp_path: Path) -> None:
    @oxi("drop_quietly", kind="transform", config=GoodConfig, summary="x", example="- name: drop_quietly")
    class Drop(BatchTransform):
        def transform_batch(self, batch: pa.RecordBatch, ctx: StepContext) -> pa.RecordBatch:
            return batch.slice(1)  # neither rejected nor counted as filtered

    report = check_oxi(Drop, config={}, sample=ROWS, workdir=tmp_path, raise_on_failure=False)
    assert failed(report) == {"conservation"}
    assert report.result("conservation").detail == "4 rows in != 2 out + 0 rejected + 0 filtered"


def test_a_sink_that_leaves_a_partial_file_is_caught(tmp_path: Path) -> None:
    class Cfg(OxiConfig):
        path: str
        """Output file."""

    @oxi("write_lines", kind="sink", config=Cfg, summary="x", example="- name: write_lines\n  config: {path: o}")
    class Lines(Sink):
        def write(self, data: OxiData, ctx: StepContext) -> None:
            with ctx.output_path(self.config.path).open("w") as fh:  # not atomic: written in place
                for batch in data:
                    fh.write(f"{batch.num_rows}\n")

    report = check_oxi(Lines, config={"path": "out.txt"}, sample=ROWS, workdir=tmp_path, raise_on_failure=False)
    assert report.result("sink_writes").passed
    assert failed(report) == {"sink_atomic"} and "out.txt" in report.result("sink_atomic").detail


def test_checks_can_be_skipped_by_name(tmp_path: Path) -> None:
    report = check_oxi(Scale, config={}, sample=ROWS, workdir=tmp_path, skip={"conservation"})
    assert report.result("conservation").skipped
