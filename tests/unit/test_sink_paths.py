"""Sink paths cannot escape their root: `..` in relative paths, settings.output_root, partition values."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from oxiflow.config.load import load_pipeline
from oxiflow.engine.local import run_plan
from oxiflow.errors import PathEscapeError


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "in.csv").write_text("id,part\n1,a\n2,../../evil\n3,/abs\n", encoding="utf-8")
    return root


def run(root: Path, sink: str, settings: str = "") -> object:
    path = root / "p.yaml"
    path.write_text(
        f"{settings}pipeline:\n  - {{name: read_csv, config: {{path: in.csv, all_varchar: true}}}}\n  - {sink}\n",
        encoding="utf-8",
    )
    return run_plan(load_pipeline(path))


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def test_relative_path_may_not_climb_out(project: Path) -> None:
    before = files_under(project.parent)
    result = run(project, "{name: write_parquet, id: out, config: {path: ../escaped.parquet}}")
    assert result.status == "failed"  # type: ignore[attr-defined]
    err = result.error  # type: ignore[attr-defined]
    assert isinstance(err, PathEscapeError) and err.context["step"] == "out"
    assert "../escaped.parquet" in str(err) and "output_root" in str(err)
    assert files_under(project.parent) - before == {project / "p.yaml"}


def test_absolute_path_is_the_authors_choice(project: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "x.parquet"
    result = run(project, f"{{name: write_parquet, config: {{path: '{target}'}}}}")
    assert result.status == "ok", result.error  # type: ignore[attr-defined]
    assert duckdb.sql(f"select count(*) from '{target}'").fetchall() == [(3,)]


def test_output_root_confines_absolute_paths_too(project: Path, tmp_path: Path) -> None:
    settings = "settings: {output_root: out}\n"
    outside = tmp_path / "x.parquet"
    result = run(project, f"{{name: write_parquet, config: {{path: '{outside}'}}}}", settings)
    assert result.status == "failed" and isinstance(result.error, PathEscapeError)  # type: ignore[attr-defined]
    assert not outside.exists()
    inside = run(project, "{name: write_parquet, config: {path: out/x.parquet}}", settings)
    assert inside.status == "ok", inside.error  # type: ignore[attr-defined]


def test_symlinked_folder_inside_the_project_is_allowed(project: Path, tmp_path: Path) -> None:
    real = tmp_path / "bigdisk"
    real.mkdir()
    (project / "data").symlink_to(real)
    result = run(project, "{name: write_parquet, config: {path: data/x.parquet}}")
    assert result.status == "ok", result.error  # type: ignore[attr-defined]
    assert (real / "x.parquet").is_file()


@pytest.mark.parametrize("pushdown", [True, False])
def test_partition_values_cannot_write_outside(project: Path, pushdown: bool) -> None:
    settings = f"settings: {{pushdown: {str(pushdown).lower()}}}\n"
    before = files_under(project.parent)
    result = run(project, "{name: write_parquet, config: {path: out/ds, partition_by: [part]}}", settings)
    # DuckDB escapes `/` in partition values; either way, nothing may land outside out/ds
    new = files_under(project.parent) - before - {project / "p.yaml"}
    assert new and all((project / "out/ds") in f.parents for f in new), new
    if result.status == "ok":  # type: ignore[attr-defined]
        rows = duckdb.sql(f"select id, part from read_parquet('{project}/out/ds/**/*.parquet') order by id").fetchall()
        assert rows == [("1", "a"), ("2", "../../evil"), ("3", "/abs")]
    else:
        assert isinstance(result.error, PathEscapeError)  # type: ignore[attr-defined]
