"""`oxiflow init`: a project whose sample pipeline runs and whose tests pass."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import yaml
from _cli import oxiflow

from oxiflow.config.model import ProjectModel


def test_init_creates_the_oxide_flow_layout(tmp_path: Path) -> None:
    r = oxiflow("init", "-n", "shop", "-d", "proj", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    root = tmp_path / "proj"
    assert {p.relative_to(root).as_posix() for p in root.rglob("*")} >= {
        "oxiflow.yaml",
        "pipelines",
        "pipelines/sample.yaml",
        "data",
        "data/sample.csv",
        "output",
    }
    project = ProjectModel.model_validate(yaml.safe_load((root / "oxiflow.yaml").read_text()))
    assert project.project.name == "shop"
    assert project.settings.pipeline_dir == "./pipelines"
    assert project.state_manager["backend"] == "file"
    assert "next: cd proj && oxiflow run sample" in r.stderr


def test_init_name_defaults_to_the_folder(tmp_path: Path) -> None:
    (tmp_path / "acme").mkdir()
    r = oxiflow("init", cwd=tmp_path / "acme")
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load((tmp_path / "acme/oxiflow.yaml").read_text())["project"]["name"] == "acme"


def test_init_refuses_to_overwrite(tmp_path: Path) -> None:
    assert oxiflow("init", "-d", "p", cwd=tmp_path).returncode == 0
    (tmp_path / "p/pipelines/sample.yaml").write_text("# mine\n")
    r = oxiflow("init", "-d", "p", cwd=tmp_path)
    assert r.returncode == 2
    assert "already exists; pass --force" in r.stderr
    assert (tmp_path / "p/pipelines/sample.yaml").read_text() == "# mine\n"


def test_sample_pipeline_runs_from_the_project(tmp_path: Path) -> None:
    # Waits on the `filter` oxi (oxiflow.oxis.transforms.relational).
    assert oxiflow("init", "-d", "proj", cwd=tmp_path).returncode == 0
    root = tmp_path / "proj"
    r = oxiflow("run", "sample", cwd=root)
    assert r.returncode == 0, r.stderr
    got = pq.read_table(root / "output/large_orders.parquet")
    expected = duckdb.sql(f"select * from read_csv('{root / 'data/sample.csv'}') where amount >= 20").to_arrow_table()
    assert got.sort_by("order_id").equals(expected.sort_by("order_id"))
    assert got.num_rows == 4

    t = oxiflow("pipeline", "test", "sample", cwd=root)
    assert t.returncode == 0, t.stderr
    assert "2 passed, 0 failed" in t.stderr.splitlines()
