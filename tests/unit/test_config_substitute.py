"""${VAR}, ${VAR:-default}, $${ escapes and ${steps.ID.metadata.KEY} references."""

from __future__ import annotations

import pytest

from oxiflow.config.substitute import (
    MissingVariable,
    resolve_step_references,
    step_references,
    substitute,
    substitute_string,
)

VARS = {"A": "alpha", "N": "3", "EMPTY": ""}


def lookup(name: str) -> str | None:
    return VARS.get(name)


def test_simple_and_default() -> None:
    assert substitute_string("x-${A}-${B:-beta}-${N}", lookup) == "x-alpha-beta-3"
    assert substitute_string("${A:-unused}", lookup) == "alpha"
    assert substitute_string("[${EMPTY}]", lookup) == "[]"  # set but empty is still set
    assert substitute_string("${B:-}", lookup) == ""


def test_missing_variable_names_it_and_its_path() -> None:
    with pytest.raises(MissingVariable) as exc:
        substitute_string("${NOPE}", lookup, ("pipeline", 1, "config", "path"))
    assert (exc.value.name, exc.value.path) == ("NOPE", ("pipeline", 1, "config", "path"))


def test_nested_structure_collects_every_missing_variable() -> None:
    missing: list[MissingVariable] = []
    data = {"a": ["${A}", "${X}"], "b": {"c": "${Y}", "d": 5}}
    out = substitute(data, lookup, (), missing)
    assert out == {"a": ["alpha", "${X}"], "b": {"c": "${Y}", "d": 5}}
    assert [(m.name, m.path) for m in missing] == [("X", ("a", 1)), ("Y", ("b", "c"))]


def test_escape_gives_a_literal_dollar_brace() -> None:
    assert substitute("cost $${A} is ${A}", lookup) == "cost ${A} is alpha"


def test_step_references_are_kept_and_listed() -> None:
    text = "${steps.reader.metadata.path}/${A}"
    assert substitute(text, lookup) == "${steps.reader.metadata.path}/alpha"
    assert step_references({"x": [text, "${steps.w.metadata.rows:-0}"]}) == [("reader", "path"), ("w", "rows")]


def test_resolve_step_references() -> None:
    meta = {"reader": {"path": "/data/in.csv"}}
    assert resolve_step_references(["${steps.reader.metadata.path}"], meta) == ["/data/in.csv"]
    assert resolve_step_references("${steps.w.metadata.rows:-0}", meta) == "0"
    with pytest.raises(KeyError, match="reported no metadata"):
        resolve_step_references("${steps.reader.metadata.size}", meta)


def test_non_strings_pass_through() -> None:
    assert substitute({"n": 1, "f": 1.5, "b": True, "z": None}, lookup) == {"n": 1, "f": 1.5, "b": True, "z": None}
