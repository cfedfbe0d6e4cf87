"""`oxiflow run` and `validate` end to end: outputs, exit codes, logs, every config error at once."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
from _cli import oxiflow, write

CSV = "id,name,amount\n1,a,1.5\n2,b,\n3,c,7.25\n"
PIPELINE = """
pipeline:
  - name: read_csv
    id: src
    config: {path: in.csv}
  - name: write_parquet
    id: out
    config: {path: out/x.parquet}
"""


def _setup(tmp_path: Path) -> Path:
    (tmp_path / "in.csv").write_text(CSV, encoding="utf-8")
    return write(tmp_path / "p.yaml", PIPELINE)


def test_run_writes_what_duckdb_reads(tmp_path: Path) -> None:
    _setup(tmp_path)
    r = oxiflow("run", "p.yaml", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""  # logs and the summary go to stderr
    expected = duckdb.sql(f"select * from read_csv('{tmp_path / 'in.csv'}')").to_arrow_table()
    assert pq.read_table(tmp_path / "out/x.parquet").equals(expected)
    assert ": ok in " in r.stderr
    assert "rows in = rows out + rejected + filtered holds for every step" in r.stderr


def test_run_json_on_stdout(tmp_path: Path) -> None:
    _setup(tmp_path)
    r = oxiflow("run", "p.yaml", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["status"] == "ok"
    assert [(s["step_id"], s["rows_in"], s["rows_out"]) for s in data["steps"]] == [("src", 3, 3), ("out", 3, 3)]


def test_quiet_prints_nothing_on_success(tmp_path: Path) -> None:
    _setup(tmp_path)
    r = oxiflow("run", "p.yaml", "--quiet", cwd=tmp_path)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")


def test_log_format_json_gives_json_lines_on_stderr(tmp_path: Path) -> None:
    _setup(tmp_path)
    r = oxiflow("run", "p.yaml", "--log-format", "json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    records = [json.loads(line) for line in r.stderr.splitlines() if line.strip()]
    summary = [rec for rec in records if rec.get("event") == "run_summary"]
    assert len(summary) == 1 and summary[0]["status"] == "ok"
    assert r.stdout == ""


def test_no_progress_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    _setup(tmp_path)
    r = oxiflow("run", "p.yaml", cwd=tmp_path)
    assert "\r" not in r.stderr and "\x1b[" not in r.stderr


def test_run_failure_exits_1(tmp_path: Path) -> None:
    write(tmp_path / "p.yaml", PIPELINE)  # valid file, but in.csv does not exist
    r = oxiflow("run", "p.yaml", cwd=tmp_path)
    assert r.returncode == 1
    assert "in.csv" in r.stderr
    assert not (tmp_path / "out/x.parquet").exists()


def test_bad_option_value_exits_2(tmp_path: Path) -> None:
    _setup(tmp_path)
    r = oxiflow("run", "p.yaml", "--log-format", "xml", cwd=tmp_path)
    assert r.returncode == 2
    assert "error: --log-format must be text or json, got 'xml'" in r.stderr


BAD = """
pipeline:
  - name: read_cvs
    id: a
  - name: read_csv
    id: b
    config:
      path: ${OXIFLOW_TEST_NOPE}
      delimter: ","
  - name: read_csv
    id: c
    config:
      path: in.csv
      skip_rows: many
  - name: sql
    id: d
    inputs: [bb]
    config: {query: "select 1"}
  - name: sql
    id: e
    inputs: [f]
    config: {query: "select 1"}
  - name: sql
    id: f
    inputs: [e]
    config: {query: "select 1"}
"""


def test_every_config_error_at_once_with_positions(tmp_path: Path) -> None:
    write(tmp_path / "bad.yaml", BAD)
    r = oxiflow("validate", "bad.yaml", cwd=tmp_path, drop_env=("OXIFLOW_TEST_NOPE",))
    assert r.returncode == 2
    assert r.stdout == ""
    # in file order; a missing variable names the step by its id
    assert r.stderr.splitlines() == [
        "error: 6 configuration errors:",
        "  bad.yaml:2:11: unknown oxi 'read_cvs' (did you mean 'read_csv'?)",
        "  bad.yaml:7:13: variable ${OXIFLOW_TEST_NOPE} is not set in step 'b' (export OXIFLOW_TEST_NOPE=..., "
        "pass --var OXIFLOW_TEST_NOPE=..., or write ${OXIFLOW_TEST_NOPE:-default})",
        "  bad.yaml:8:7: unknown key 'delimter' for oxi 'read_csv' (did you mean 'delimiter'?)",
        "  bad.yaml:13:18: pipeline[2].config.skip_rows: Input should be a valid integer, "
        "unable to parse string as an integer, got 'many'",
        "  bad.yaml:16:14: step d (sql) takes input 'bb', which is no step id (did you mean 'b'?)",
        "  bad.yaml:20:13: steps form a cycle: e -> f -> e",
    ]


def test_run_of_a_bad_file_exits_2_and_runs_nothing(tmp_path: Path) -> None:
    write(tmp_path / "bad.yaml", BAD)
    r = oxiflow("run", "bad.yaml", cwd=tmp_path, drop_env=("OXIFLOW_TEST_NOPE",))
    assert r.returncode == 2
    assert "6 configuration errors" in r.stderr


def test_validate_json_lists_issues(tmp_path: Path) -> None:
    write(tmp_path / "bad.yaml", BAD)
    r = oxiflow("validate", "bad.yaml", "--json", cwd=tmp_path, drop_env=("OXIFLOW_TEST_NOPE",))
    assert r.returncode == 2
    data = json.loads(r.stdout)
    assert data["valid"] is False
    assert [(i["line"], i["column"]) for i in data["issues"]] == [
        (2, 11),
        (7, 13),
        (8, 7),
        (13, 18),
        (16, 14),
        (20, 13),
    ]


def test_validate_ok(tmp_path: Path) -> None:
    _setup(tmp_path)
    r = oxiflow("validate", "p.yaml", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"valid": True, "pipeline": "p", "steps": ["src", "out"]}


def test_unknown_pipeline_name_suggests(tmp_path: Path) -> None:
    write(tmp_path / "pipelines/orders.yaml", PIPELINE)
    r = oxiflow("validate", "ordrs", cwd=tmp_path)
    assert r.returncode == 2
    assert "no pipeline named 'ordrs' (did you mean 'orders'?)" in r.stderr


# -- variable precedence: --var > process env > pipeline environment > project environment -----


def test_variable_precedence(tmp_path: Path) -> None:
    for layer in ("cli", "env", "pipeline", "project"):
        (tmp_path / f"{layer}.csv").write_text(f"layer\n{layer}\n", encoding="utf-8")
    write(tmp_path / "oxiflow.yaml", "environment: {SRC: project.csv}\n")
    body = """
    pipeline:
      - name: read_csv
        config: {path: "${SRC}"}
      - name: write_parquet
        config: {path: out.parquet}
    """
    write(tmp_path / "with_env.yaml", "environment: {SRC: pipeline.csv}\n" + body.replace("\n    ", "\n"))
    write(tmp_path / "no_env.yaml", body)

    def layer_read(*args: str, env: dict[str, str] | None = None) -> str:
        r = oxiflow("run", *args, cwd=tmp_path, env=env, drop_env=("SRC",))
        assert r.returncode == 0, r.stderr
        return str(pq.read_table(tmp_path / "out.parquet").column("layer")[0])

    assert layer_read("with_env.yaml", "--var", "SRC=cli.csv", env={"SRC": "env.csv"}) == "cli"
    assert layer_read("with_env.yaml", env={"SRC": "env.csv"}) == "env"
    assert layer_read("with_env.yaml") == "pipeline"
    assert layer_read("no_env.yaml") == "project"
