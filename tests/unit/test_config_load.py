"""config/load.py: every configuration error at once (step-level errors hide nothing), in file order,
each with its position; step references checked for shape, step and key; project-file keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from oxiflow.config.load import FixableIssue, load_pipeline, load_project
from oxiflow.errors import ConfigError

# the auditor's bad.yaml: before, the four step-level errors hid every other one
BAD = """\
metadata:
  name: bad
  colour: red
pipline_x: 1
pipeline:
  - name: read_csvv
    id: a
    config:
      path: x.csv
  - name: read_csv
    id: b
    config:
      pth: x.csv
      header: "maybe"
  - name: filter
    id: c
    inputs: [d]
    config:
      expr: "${OXIFLOW_TEST_MISSING}"
  - name: filter
    id: d
    inputs: [c]
    retry_attempts: "three"
    config:
      expr: "x > 1"
  - name: write_parquet
    inputs: [bb]
    timeout_second: 5
    config:
      path: "${steps.zz.metadata.path}"
"""


def issues(tmp_path: Path, text: str, name: str = "p.yaml", **kw: object) -> list[tuple[int | None, str]]:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_pipeline(path, **kw)  # type: ignore[arg-type]
    return [(i.line, i.message) for i in err.value.issues]


def test_step_level_errors_hide_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OXIFLOW_TEST_MISSING", raising=False)
    got = issues(tmp_path, BAD)
    assert got == [
        (4, "unknown key 'pipline_x' in the file"),
        (6, "unknown oxi 'read_csvv'"),
        (13, "missing required key 'path' in pipeline[1].config"),
        (13, "unknown key 'pth' for oxi 'read_csv'"),
        (14, "pipeline[1].config.header: Input should be a valid boolean, unable to interpret input, got 'maybe'"),
        (17, "steps form a cycle: c -> d -> c"),
        (19, "variable ${OXIFLOW_TEST_MISSING} is not set in step 'c'"),
        (
            23,
            "pipeline[3].retry_attempts: Input should be a valid integer, "
            "unable to parse string as an integer, got 'three'",
        ),
        (27, "step write_parquet takes input 'bb', which is no step id"),
        (28, "unknown key 'timeout_second' in pipeline[4]"),
        (30, "${steps.zz...} names no step"),
    ]


def test_duplicate_id_and_an_oxi_key_are_both_reported(tmp_path: Path) -> None:
    text = """\
pipeline:
  - name: read_csv
    id: a
    config: {path: x.csv}
  - name: filter
    id: a
    config: {expr: "1=1", extra_key: 1}
"""
    assert issues(tmp_path, text) == [(6, "duplicate step id 'a'"), (7, "unknown key 'extra_key' for oxi 'filter'")]


def test_a_step_whose_config_is_not_a_mapping_still_lets_the_others_be_checked(tmp_path: Path) -> None:
    text = """\
pipeline:
  - name: read_csv
    config: [not, a, mapping]
  - name: filtr
    config: {expr: "1=1"}
"""
    got = issues(tmp_path, text)
    assert got[0][0] == 3 and "config" in got[0][1]
    assert got[1] == (4, "unknown oxi 'filtr'")
    assert len(got) == 2  # no "missing path" for a config that was never a mapping


@pytest.mark.parametrize(
    ("ref", "message", "fix"),
    [
        (
            "steps.reader.metadta.size",
            "${steps.reader.metadta.size} is not a step reference",
            "${steps.reader.metadata.size}",
        ),
        ("steps.reader", "${steps.reader} is not a step reference", None),
        ("steps.redaer.metadata.path", "${steps.redaer...} names no step", "${steps.reader.metadata.path}"),
        (
            "steps.reader.metadata.pth",
            "step reader (read_file) reports no metadata 'pth'",
            "${steps.reader.metadata.path}",
        ),
        ("steps.out.metadata.rows", "${steps.out...} refers to a step that runs later", None),
    ],
)
def test_step_references_are_checked_before_running(tmp_path: Path, ref: str, message: str, fix: str | None) -> None:
    text = f"""\
pipeline:
  - name: read_file
    id: reader
    config: {{path: x.csv}}
  - name: parse_csv
  - name: write_file
    config: {{path: "out/${{{ref}}}.csv"}}
  - name: write_file
    id: out
    inputs: [parse_csv]
    config: {{path: "out/b.csv"}}
"""
    path = tmp_path / "p.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_pipeline(path)
    (issue,) = err.value.issues
    assert issue.message.startswith(message) and (issue.line, issue.column) == (7, 20)
    assert (issue.fix[1] if isinstance(issue, FixableIssue) and issue.fix else None) == fix


def test_known_metadata_keys_and_sinks_rows_pass(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("a\n1\n")
    path = tmp_path / "p.yaml"
    path.write_text(
        """\
pipeline:
  - name: read_file
    id: reader
    config: {path: x.csv}
  - name: parse_csv
  - name: write_file
    id: w
    config: {path: "out/${steps.reader.metadata.size}.csv"}
  - name: write_file
    inputs: [parse_csv]
    config: {path: "out/${steps.w.metadata.rows}-${steps.reader.metadata.content_type}.txt"}
""",
        encoding="utf-8",
    )
    assert [s.id for s in load_pipeline(path).steps] == ["parse_csv", "w", "write_file"]


def test_fixable_issues_carry_the_repair(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("pipeline:\n  - name: read_csvv\n    config: {pth: x.csv}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_pipeline(path)
    fixes = [i.fix for i in err.value.issues if isinstance(i, FixableIssue)]
    assert fixes == [("read_csvv", "read_csv")]
    assert err.value.to_dict()["issues"][0]["fix"] == {"replace": "read_csvv", "with": "read_csv"}


def test_a_suggestion_never_names_a_key_that_is_already_there(tmp_path: Path) -> None:
    text = "pipline: 1\npipeline:\n  - name: read_csv\n    config: {path: x.csv, pth: y.csv}\n"
    path = tmp_path / "p.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_pipeline(path)
    assert all(not isinstance(i, FixableIssue) for i in err.value.issues)
    assert all("did you mean" not in (i.hint or "") for i in err.value.issues)


def test_project_settings_reject_unknown_keys_with_a_suggestion(tmp_path: Path) -> None:
    (tmp_path / "oxiflow.yaml").write_text("settings:\n  pipline_dir: ./p\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_project(tmp_path / "oxiflow.yaml")
    (issue,) = err.value.issues
    assert issue.message == "unknown key 'pipline_dir' in settings" and issue.hint == "did you mean 'pipeline_dir'?"


def test_output_dir_is_the_default_of_OUTPUT_DIR(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OUTPUT_DIR", raising=False)
    (tmp_path / "oxiflow.yaml").write_text("settings: {output_dir: ./results}\n", encoding="utf-8")
    (tmp_path / "pipelines").mkdir()
    path = tmp_path / "pipelines" / "p.yaml"
    path.write_text(
        "pipeline:\n  - name: read_csv\n    config: {path: in.csv}\n"
        "  - name: write_csv\n    config: {path: '${OUTPUT_DIR}/o.csv'}\n",
        encoding="utf-8",
    )
    plan = load_pipeline(path)
    assert plan.step("write_csv").config.path == "./results/o.csv"  # type: ignore[union-attr]
    (tmp_path / "oxiflow.yaml").write_text(
        "settings: {output_dir: ./results}\nenvironment: {OUTPUT_DIR: elsewhere}\n", encoding="utf-8"
    )
    assert load_pipeline(path).step("write_csv").config.path == "elsewhere/o.csv"  # type: ignore[union-attr]


def test_project_oxis_from_oxis_dir_and_the_oxis_block(tmp_path: Path) -> None:
    plugin = """
from oxiflow.oxi import BatchTransform, OxiConfig, oxi


class NoopConfig(OxiConfig):
    pass


@oxi("{name}", kind="transform", config=NoopConfig, summary="Pass rows on.")
class Noop(BatchTransform):
    def transform_batch(self, batch, ctx):
        return batch
"""
    (tmp_path / "oxis").mkdir()
    (tmp_path / "oxis" / "mine.py").write_text(plugin.replace("{name}", "project_noop"), encoding="utf-8")
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "more.py").write_text(plugin.replace("{name}", "declared_noop"), encoding="utf-8")
    (tmp_path / "oxiflow.yaml").write_text(
        "oxis:\n  core: {source: builtin, version: 1.0.0}\n  more: {source: lib/more.py}\n", encoding="utf-8"
    )
    (tmp_path / "in.csv").write_text("a\n1\n", encoding="utf-8")
    path = tmp_path / "p.yaml"
    path.write_text(
        "pipeline:\n  - name: read_csv\n    config: {path: in.csv}\n  - name: project_noop\n"
        "  - name: declared_noop\n  - name: write_csv\n    config: {path: out.csv}\n",
        encoding="utf-8",
    )
    from oxiflow.engine.local import run_plan

    result = run_plan(load_pipeline(path))
    assert result.status == "ok", result.error
    assert (tmp_path / "out.csv").read_text() == "a\n1\n"


def test_a_bad_oxis_block_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "oxiflow.yaml").write_text("oxis: [a, b]\n", encoding="utf-8")
    path = tmp_path / "p.yaml"
    path.write_text("pipeline:\n  - name: read_csv\n    config: {path: in.csv}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_pipeline(path)
    assert "oxis: must be a mapping" in str(err.value)
