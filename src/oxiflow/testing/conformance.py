"""The checks every oxi must pass: the registration, the config model, and what the runtime promises.

Static checks need nothing but the registration; runtime checks run the oxi in a scratch folder with
a config (and, for transforms and sinks, a sample table) the caller gives:

======================  =========================================================================
check                   what it asks
======================  =========================================================================
registration            a snake_case name, a kind, a one-line summary, inputs that fit the kind
naming                  sources are ``read_<what>``, sinks ``write_<what>``, transforms neither
config_model            an :class:`~oxiflow.oxi.OxiConfig` that forbids unknown keys (nested ones
                        too) and renders a JSON Schema
config_documented       every field, nested models' too, has a docstring (docs, ``plugins describe``)
example                 the example is one YAML step of this oxi whose config validates
source_schema           every batch a source yields has the schema it declared; no nulls where a
                        field is declared not null
probe_schema            the zero-row probe (``explain``: ``limit_rows = 0``) declares the same schema
                        as the real run and yields no rows
transform_schema        as ``source_schema``, for a transform's output
conservation            rows in = rows out + rejected + filtered (unless the oxi ``reshapes``)
sink_writes             the sink consumes the whole stream without error
sink_atomic             a stream that fails half way leaves nothing behind in the scratch folder
                        (no partial output, no temporary files)
======================  =========================================================================

Learned from the Singer SDK's standard tap/target tests: one kit, the same for built-ins and plugins.
"""

from __future__ import annotations

import re
import tempfile
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, ValidationError

from oxiflow.data import OxiData
from oxiflow.oxi import OxiConfig, OxiSpec, Sink, Source, StepContext, Transform, field_docs

NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass
class CheckResult:
    name: str
    passed: bool
    detail: str = ""
    skipped: bool = False

    def __str__(self) -> str:
        mark = "skipped" if self.skipped else ("ok" if self.passed else "FAILED")
        return f"{self.name}: {mark}" + (f" ({self.detail})" if self.detail else "")


@dataclass
class ConformanceReport:
    """What :func:`check_oxi` found, check by check."""

    oxi: str
    results: list[CheckResult] = field(default_factory=list)

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if not r.passed and not r.skipped]

    @property
    def passed(self) -> bool:
        return not self.failures

    def result(self, name: str) -> CheckResult:
        return next(r for r in self.results if r.name == name)

    def __str__(self) -> str:
        return "\n".join([f"oxi {self.oxi}:", *(f"  {r}" for r in self.results)])


class _Failed(Exception):
    pass


class _Skip(Exception):
    pass


def check_oxi(
    target: Any,
    *,
    config: dict[str, Any] | None = None,
    sample: pa.Table | str | None = None,
    workdir: Path | None = None,
    skip: set[str] | frozenset[str] = frozenset(),
    raise_on_failure: bool = True,
) -> ConformanceReport:
    """Run the conformance checks on one oxi.

    ``target``: the plugin class (decorated with :func:`oxiflow.oxi.oxi`), its :class:`OxiSpec`, or a
    registered name. ``config``: a config for the runtime checks (relative paths start at ``workdir``,
    a fresh scratch folder by default); without one only the static checks run. ``sample``: the input
    of a transform or a sink: a table of rows, or a string for a text payload (what read_file passes
    on). ``skip``: checks that do not apply (e.g. ``sink_atomic`` for a sink
    that prints). Raises ``AssertionError`` listing every failure unless ``raise_on_failure`` is false.

    Example, in a plugin's tests::

        from oxiflow.testing import check_oxi

        def test_conformance(tmp_path):
            check_oxi(ScaleColumn, config={"column": "amount"}, sample=pa.table({"amount": [1.0, 2.0]}),
                      workdir=tmp_path)
    """
    spec = _spec(target)
    report = ConformanceReport(spec.name)

    def run(name: str, check: Callable[[], str | None]) -> None:
        if name in skip:
            report.results.append(CheckResult(name, True, "skipped by the caller", skipped=True))
            return
        try:
            detail = check() or ""
        except _Skip as exc:
            report.results.append(CheckResult(name, True, str(exc), skipped=True))
        except (_Failed, AssertionError) as exc:
            report.results.append(CheckResult(name, False, str(exc)))
        except Exception as exc:
            report.results.append(CheckResult(name, False, f"{type(exc).__name__}: {exc}"))
        else:
            report.results.append(CheckResult(name, True, detail))

    run("registration", lambda: _registration(spec))
    run("naming", lambda: _naming(spec))
    run("config_model", lambda: _config_model(spec))
    run("config_documented", lambda: _documented(spec.config))
    run("example", lambda: _example(spec))

    scratch: tempfile.TemporaryDirectory[str] | None = None
    if workdir is None:
        scratch = tempfile.TemporaryDirectory(prefix="oxiflow-conformance-")
        workdir = Path(scratch.name)
    try:
        runtime = _Runtime(spec, config, sample, workdir)
        if spec.kind == "source":
            run("source_schema", runtime.source_schema)
            run("probe_schema", runtime.probe_schema)
        elif spec.kind == "transform":
            run("transform_schema", runtime.transform_schema)
            run("probe_schema", runtime.probe_schema)
            run("conservation", runtime.conservation)
        else:
            run("sink_writes", runtime.sink_writes)
            run("sink_atomic", runtime.sink_atomic)
    finally:
        if scratch is not None:
            scratch.cleanup()
    if raise_on_failure and not report.passed:
        raise AssertionError(f"oxi {spec.name!r} fails conformance:\n" + "\n".join(f"  {f}" for f in report.failures))
    return report


def _spec(target: Any) -> OxiSpec:
    if isinstance(target, OxiSpec):
        return target
    if isinstance(target, str):
        from oxiflow.registry import default_registry

        return default_registry().get(target)
    spec = getattr(target, "spec", None)
    if not isinstance(spec, OxiSpec):
        raise TypeError(f"{target!r} is not an oxi: decorate the class with @oxiflow.oxi.oxi(...)")
    return spec


# -- static checks -------------------------------------------------------------------------------
def _registration(spec: OxiSpec) -> None:
    problems = []
    if not NAME.match(spec.name):
        problems.append(f"name {spec.name!r} is not snake_case")
    if spec.kind not in ("source", "transform", "sink"):
        problems.append(f"kind {spec.kind!r}")
    if not spec.summary.strip() or "\n" in spec.summary.strip():
        problems.append("the summary must be one non-empty line")
    if spec.kind == "source" and (spec.min_inputs, spec.max_inputs) != (0, 0):
        problems.append(f"a source takes no inputs, not {spec.min_inputs}..{spec.max_inputs}")
    if spec.kind != "source" and spec.min_inputs < 1:
        problems.append(f"a {spec.kind} takes at least one input, not {spec.min_inputs}")
    if spec.max_inputs is not None and spec.max_inputs < spec.min_inputs:
        problems.append("max_inputs < min_inputs")
    base = {"source": Source, "transform": Transform, "sink": Sink}.get(spec.kind)
    if base is not None and isinstance(spec.factory, type) and not issubclass(spec.factory, base):
        problems.append(f"a {spec.kind} class must subclass oxiflow.oxi.{base.__name__}")
    if problems:
        raise _Failed("; ".join(problems))


def _naming(spec: OxiSpec) -> None:
    name = spec.name
    if spec.kind == "source" and not name.startswith("read_"):
        raise _Failed(f"sources are named read_<format or system>, not {name!r}")
    if spec.kind == "sink" and not name.startswith("write_"):
        raise _Failed(f"sinks are named write_<format or system>, not {name!r}")
    if spec.kind == "transform" and name.startswith(("read_", "write_")):
        raise _Failed(f"transforms are verbs, not {name!r}")


def _models(model: type[BaseModel]) -> Iterator[type[BaseModel]]:
    """The model and every model nested in its fields (through Optional, list, dict ...)."""
    seen: set[type[BaseModel]] = set()
    todo = [model]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        yield m
        for info in m.model_fields.values():
            todo.extend(_nested(info.annotation))


def _nested(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _nested(arg)]


def _config_model(spec: OxiSpec) -> None:
    cfg = spec.config
    if not (isinstance(cfg, type) and issubclass(cfg, OxiConfig)):
        raise _Failed("the config model must subclass oxiflow.oxi.OxiConfig")
    lenient = [m.__name__ for m in _models(cfg) if m.model_config.get("extra") != "forbid"]
    if lenient:
        raise _Failed(f"unknown keys must be errors (extra='forbid'); not so in {', '.join(lenient)}")
    try:
        cfg.model_validate({"__not_a_key__": 1})
    except ValidationError as exc:
        if not any(e["type"] == "extra_forbidden" for e in exc.errors()):
            raise _Failed("an unknown key was not reported as one") from None
    else:
        raise _Failed("an unknown key was accepted") from None
    cfg.model_json_schema()


def _documented(model: type[BaseModel]) -> str:
    missing = [f"{m.__name__}.{name}" for m in _models(model) for name, doc in field_docs(m).items() if not doc]
    if missing:
        raise _Failed(f"fields without a docstring: {', '.join(missing)}")
    return f"{len(model.model_fields)} field(s)"


def _example(spec: OxiSpec) -> None:
    import yaml

    if not spec.example.strip():
        raise _Failed("no example: `plugins describe` and the docs show one")
    doc = yaml.safe_load(spec.example)
    step = doc[0] if isinstance(doc, list) and len(doc) == 1 else doc
    if not isinstance(step, dict) or step.get("name") != spec.name:
        raise _Failed(f"the example must be one step with `name: {spec.name}`")
    try:
        spec.config.model_validate(step.get("config") or {})
    except ValidationError as exc:
        raise _Failed(f"the example's config does not validate: {exc.errors()[0]['msg']}") from None


# -- runtime checks ------------------------------------------------------------------------------
class _Runtime:
    def __init__(
        self, spec: OxiSpec, config: dict[str, Any] | None, sample: pa.Table | str | None, workdir: Path
    ) -> None:
        self.spec, self.raw, self.sample, self.workdir = spec, config, sample, workdir
        self.consumed = 0  # input rows the oxi read

    def ctx(self, **kw: Any) -> StepContext:
        return StepContext(self.spec.name, self.spec.name, "conformance", base_dir=self.workdir, **kw)

    def oxi(self) -> Any:
        if self.raw is None:
            raise _Skip("no config given")
        return self.spec.factory(self.spec.config.model_validate(self.raw))

    def input(self, *, empty: bool = False, fail_after: int | None = None) -> OxiData:
        if self.sample is None:
            raise _Skip("no sample input given")
        if isinstance(self.sample, str):
            text = "" if empty else self.sample
            if fail_after is None:
                return OxiData.from_text([text] if text else [])

            def chunks() -> Iterator[str]:
                yield text[: len(text) // 2]
                raise RuntimeError("conformance: the input failed half way")

            return OxiData.from_text(chunks())
        table = self.sample.slice(0, 0) if empty else self.sample
        batches = table.to_batches(max_chunksize=max(1, (table.num_rows + 1) // 2)) or []
        self.consumed = 0

        def stream() -> Iterator[pa.RecordBatch]:
            for i, batch in enumerate(batches):
                if fail_after is not None and i >= fail_after:
                    raise RuntimeError("conformance: the input failed half way")
                self.consumed += batch.num_rows  # what the oxi took: a limit may stop early
                yield batch
            if fail_after is not None:
                raise RuntimeError("conformance: the input failed half way")

        return OxiData(table.schema, stream())

    # sources and transforms
    def _produce(self, ctx: StepContext, *, empty: bool = False) -> OxiData:
        oxi = self.oxi()
        if self.spec.kind == "source":
            return oxi.read(ctx)
        return oxi.transform([self.input(empty=empty)], ctx)

    def source_schema(self) -> str:
        data = self._produce(self.ctx())
        return _check_batches(data)

    transform_schema = source_schema

    def probe_schema(self) -> str:
        real = self._produce(self.ctx())
        rows = _consume(real)
        probe = self._produce(self.ctx(limit_rows=0), empty=True)
        probed = _consume(probe)
        if probe.kind != real.kind:
            raise _Failed(f"the probe yields {probe.kind}, the run {real.kind}")
        if self.spec.reshapes and not probe.schema.equals(real.schema):
            return "reshapes rows: its schema may depend on the data (the probe ran without an error)"
        if real.kind == "arrow" and not probe.schema.equals(real.schema):
            raise _Failed(f"the probe declares\n{probe.schema}\nbut the run\n{real.schema}")
        if self.spec.kind == "source" and probed:
            raise _Failed(f"a source probed with limit_rows = 0 yielded {probed} row(s)")
        return f"{rows} row(s) in the run"

    def conservation(self) -> str:
        ctx = self.ctx()
        out = _consume(self._produce(ctx))
        if self.sample is None:
            raise _Skip("no sample input given")
        if isinstance(self.sample, str):
            return f"text in, {out} out (a payload is not rows)"
        rows_in = self.consumed
        if self.spec.reshapes:
            return f"{rows_in} in, {out} out (reshapes rows: not counted one for one)"
        if rows_in != out + ctx.rows_rejected + ctx.rows_filtered:
            raise _Failed(
                f"{rows_in} rows in != {out} out + {ctx.rows_rejected} rejected + {ctx.rows_filtered} filtered"
            )
        return f"{rows_in} in = {out} out + {ctx.rows_rejected} rejected + {ctx.rows_filtered} filtered"

    # sinks
    def sink_writes(self) -> str:
        oxi = self.oxi()
        ctx = self.ctx()
        oxi.write(self.input(), ctx)
        return f"metadata: {sorted(ctx.metadata)}"

    def sink_atomic(self) -> str:
        oxi = self.oxi()
        target = self.workdir / "atomic"
        target.mkdir(exist_ok=True)
        before = _listing(self.workdir)
        ctx = StepContext(self.spec.name, self.spec.name, "conformance-fail", base_dir=self.workdir)
        try:
            oxi.write(self.input(fail_after=1), ctx)
        except Exception:
            pass
        else:
            raise _Failed("the write succeeded although its input failed half way")
        left = sorted(set(_listing(self.workdir)) - set(before))
        changed = sorted(p for p, stamp in _listing(self.workdir).items() if p in before and before[p] != stamp)
        if left or changed:
            raise _Failed(f"a failed write left {', '.join(left + changed)} behind")
        return "a failed write leaves nothing behind"


def _consume(data: OxiData) -> int:
    return sum(b.num_rows for b in data) if data.kind == "arrow" else sum(1 for _ in data)


def _check_batches(data: OxiData) -> str:
    if data.kind != "arrow":
        chunks = sum(1 for _ in data)
        return f"{data.kind} payload in {chunks} chunk(s)"
    rows = 0
    for i, batch in enumerate(data):
        if not batch.schema.equals(data.schema):
            raise _Failed(f"batch {i} has schema\n{batch.schema}\nbut the stream declared\n{data.schema}")
        for f, col in zip(data.schema, batch.columns, strict=True):
            if not f.nullable and col.null_count:
                raise _Failed(f"batch {i}: {col.null_count} null(s) in {f.name!r}, declared not null")
        rows += batch.num_rows
    return f"{rows} row(s) match the declared schema"


def _listing(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder below ``folder`` with its size and modification time."""
    out = {}
    for p in folder.rglob("*"):
        try:
            st = p.stat()
        except OSError:
            continue
        out[str(p.relative_to(folder))] = (st.st_size if p.is_file() else 0, st.st_mtime_ns if p.is_file() else 0)
    return out
