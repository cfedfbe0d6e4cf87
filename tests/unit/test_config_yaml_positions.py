"""YAML loading with positions: values, keys, errors with line and column."""

from __future__ import annotations

import pytest
import yaml

from oxiflow.config.yaml_positions import load_yaml
from oxiflow.errors import ConfigError

TEXT = """\
pipeline:
  - name: read_csv
    config:
      path: in.csv
      skip_rows: 2
  - name: write_parquet
    config: {path: out.parquet, flag: true}
"""


def test_data_equals_safe_load() -> None:
    data, _ = load_yaml(TEXT, "p.yaml")
    assert data == yaml.safe_load(TEXT)


def test_positions_of_values_and_keys() -> None:
    _, pos = load_yaml(TEXT, "p.yaml")
    assert pos.of(("pipeline", 0, "config", "path")) == (4, 13)
    assert pos.of(("pipeline", 0, "config", "skip_rows"), key=True) == (5, 7)
    assert pos.of(("pipeline", 1, "config", "flag")) == (7, 39)
    assert pos.of(("pipeline", 1)) == (6, 5)


def test_missing_path_falls_back_to_nearest_parent() -> None:
    _, pos = load_yaml(TEXT, "p.yaml")
    assert pos.of(("pipeline", 0, "config", "nope")) == pos.of(("pipeline", 0, "config"))


def test_issue_carries_file_line_column() -> None:
    _, pos = load_yaml(TEXT, "p.yaml")
    issue = pos.issue("bad", ("pipeline", 0, "config", "skip_rows"), hint="fix it")
    assert str(issue) == "p.yaml:5:18: bad (fix it)"


def test_syntax_error_has_position() -> None:
    with pytest.raises(ConfigError) as exc:
        load_yaml("pipeline:\n  - name: [unclosed\n", "p.yaml")
    issue = exc.value.issues[0]
    assert (issue.file, issue.line) == ("p.yaml", 3)
    assert issue.message.startswith("invalid YAML")


def test_duplicate_key_is_an_error() -> None:
    with pytest.raises(ConfigError) as exc:
        load_yaml("a: 1\nb: 2\na: 3\n", "p.yaml")
    issue = exc.value.issues[0]
    assert (issue.message, issue.line, issue.column) == ("duplicate key 'a'", 3, 1)


def test_scalars_follow_safe_loader_rules_but_dates_stay_text() -> None:
    data, _ = load_yaml("a: 1\nb: 1.5\nc: yes\nd: null\ne: 2024-01-02\nf: '007'\n")
    assert data == {"a": 1, "b": 1.5, "c": True, "d": None, "e": "2024-01-02", "f": "007"}


def test_merge_keys() -> None:
    data, _ = load_yaml("base: &b {x: 1}\nother:\n  <<: *b\n  y: 2\n")
    assert data["other"] == {"x": 1, "y": 2}


def test_empty_document() -> None:
    assert load_yaml("")[0] is None
