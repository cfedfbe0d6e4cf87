"""plan/build.py: inputs by default and by id, input counts, numbering of unnamed repeats, topological
order, cycles, deferred configs; every problem reported at once with its position."""

from __future__ import annotations

from pathlib import Path

import pytest

from oxiflow.config.load import load_pipeline
from oxiflow.errors import ConfigError
from oxiflow.plan.build import Plan


def plan(tmp_path: Path, text: str) -> Plan:
    path = tmp_path / "p.yaml"
    path.write_text(text, encoding="utf-8")
    return load_pipeline(path)


def problems(tmp_path: Path, text: str) -> list[tuple[int | None, str, str | None]]:
    with pytest.raises(ConfigError) as err:
        plan(tmp_path, text)
    return [(i.line, i.message, i.hint) for i in err.value.issues]


def test_each_step_reads_the_previous_one_and_sources_read_nothing(tmp_path: Path) -> None:
    p = plan(
        tmp_path,
        """\
pipeline:
  - {name: read_csv, id: a, config: {path: a.csv}}
  - {name: filter, config: {expr: "x > 1"}}
  - {name: read_csv, id: b, config: {path: b.csv}}
  - {name: sql, inputs: [filter, b], config: {query: "select * from filter join b using (x)"}}
  - {name: write_csv, config: {path: o.csv}}
""",
    )
    assert [(s.id, s.inputs) for s in p.steps] == [
        ("a", []),
        ("filter", ["a"]),
        ("b", []),
        ("sql", ["filter", "b"]),
        ("write_csv", ["sql"]),
    ]


def test_unnamed_repeats_of_an_oxi_get_numbered_ids(tmp_path: Path) -> None:
    p = plan(
        tmp_path,
        """\
pipeline:
  - {name: read_csv, config: {path: a.csv}}
  - {name: filter, config: {expr: "x > 1"}}
  - {name: filter, config: {expr: "x > 2"}}
  - {name: write_csv, config: {path: o.csv}}
""",
    )
    assert [s.id for s in p.steps] == ["read_csv", "filter", "filter_3", "write_csv"]
    assert p.step("filter_3").inputs == ["filter"]


def test_steps_run_in_dependency_order_whatever_the_file_order(tmp_path: Path) -> None:
    p = plan(
        tmp_path,
        """\
pipeline:
  - {name: write_csv, id: out, inputs: [f], config: {path: o.csv}}
  - {name: filter, id: f, inputs: [src], config: {expr: "x > 1"}}
  - {name: read_csv, id: src, config: {path: a.csv}}
""",
    )
    assert [s.id for s in p.steps] == ["src", "f", "out"]
    assert [s.id for s in p.consumers("src")] == ["f"]


def test_input_counts_are_checked(tmp_path: Path) -> None:
    got = problems(
        tmp_path,
        """\
pipeline:
  - {name: filter, config: {expr: "x > 1"}}
  - {name: read_csv, id: a, config: {path: a.csv}}
  - {name: read_csv, id: b, config: {path: b.csv}}
  - {name: filter, id: two, inputs: [a, b], config: {expr: "x > 1"}}
""",
    )
    assert got == [
        (
            2,
            "step filter (transform) takes 1 input(s) but has no step before it",
            "put a source step first, or set `inputs:`",
        ),
        (5, "step two (filter) (transform) takes 1 input(s) but gets 2", None),
    ]


def test_cycles_are_reported_once_with_their_path(tmp_path: Path) -> None:
    got = problems(
        tmp_path,
        """\
pipeline:
  - {name: read_csv, id: src, config: {path: a.csv}}
  - {name: sql, id: x, inputs: [src, z], config: {query: "select 1"}}
  - {name: filter, id: y, inputs: [x], config: {expr: "1=1"}}
  - {name: filter, id: z, inputs: [y], config: {expr: "1=1"}}
""",
    )
    assert got == [(3, "steps form a cycle: x -> z -> y -> x", None)]


def test_a_config_waiting_on_a_step_reference_is_validated_when_it_runs(tmp_path: Path) -> None:
    p = plan(
        tmp_path,
        """\
pipeline:
  - {name: read_csv, id: src, config: {path: a.csv}}
  - {name: limit, config: {n: "${steps.src.metadata.files}"}}
""",
    )
    step = p.step("limit")
    assert step.deferred and step.config is None and step.raw_config == {"n": "${steps.src.metadata.files}"}
    # but a key that is wrong whatever the reference resolves to is an error now
    got = problems(
        tmp_path,
        """\
pipeline:
  - {name: read_csv, id: src, config: {path: a.csv}}
  - {name: limit, config: {n: "${steps.src.metadata.files}", m: 1}}
""",
    )
    assert got == [(3, "unknown key 'm' for oxi 'limit'", "limit takes: n, offset")]  # n is there already


def test_unknown_inputs_suggest_the_nearest_id(tmp_path: Path) -> None:
    got = problems(
        tmp_path,
        """\
pipeline:
  - {name: read_csv, id: orders, config: {path: a.csv}}
  - {name: filter, inputs: [order], config: {expr: "1=1"}}
""",
    )
    assert got == [(3, "step filter takes input 'order', which is no step id", "did you mean 'orders'?")]
