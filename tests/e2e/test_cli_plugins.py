"""`oxiflow plugins list|describe` from the registry."""

from __future__ import annotations

import json
from pathlib import Path

from _cli import oxiflow

from oxiflow.oxis.files.csv import ReadCsvConfig


def test_plugins_list_json(tmp_path: Path) -> None:
    r = oxiflow("plugins", "list", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert rows["read_csv"]["kind"] == "source"
    assert rows["read_csv"]["origin"] == "oxiflow"
    assert rows["write_parquet"]["kind"] == "sink"
    assert {"read_csv", "write_parquet", "sql", "filter", "read_file", "batch"} <= set(rows)


def test_plugins_list_text(tmp_path: Path) -> None:
    r = oxiflow("plugins", "list", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("read_csv "))
    assert line.split()[1:3] == ["source", "oxiflow"]


def test_plugins_describe_matches_the_config_model(tmp_path: Path) -> None:
    r = oxiflow("plugins", "describe", "read_csv", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert (data["name"], data["kind"], data["origin"]) == ("read_csv", "source", "oxiflow")
    fields = {f["name"]: f for f in data["config"]}
    assert list(fields) == list(ReadCsvConfig.model_fields)
    assert fields["path"]["required"] is True and fields["path"]["type"] == "str | list[str]"
    assert fields["skip_rows"]["default"] == 0 and fields["skip_rows"]["type"] == "int"
    assert fields["skip_rows"]["description"] == "Lines to skip before the header."  # the docstring under the field
    assert fields["path"]["description"].startswith("A file, a glob")  # inherited from FileSourceConfig
    assert fields["on_error"]["type"] == "fail | skip | dlq" and fields["on_error"]["default"] == "fail"
    assert data["example"].startswith("- name: read_csv")


def test_plugins_describe_text(tmp_path: Path) -> None:
    r = oxiflow("plugins", "describe", "read_csv", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "  skip_rows: int  (default 0)" in r.stdout.splitlines()
    assert "      Lines to skip before the header." in r.stdout.splitlines()


def test_plugins_describe_unknown_suggests(tmp_path: Path) -> None:
    r = oxiflow("plugins", "describe", "read_cvs", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip() == "error: unknown oxi 'read_cvs' (did you mean 'read_csv'?)"
