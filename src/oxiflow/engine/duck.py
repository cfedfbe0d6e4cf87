"""DuckDB connections configured from a step's context: memory budget, spill folder, interrupt.

Every step that uses DuckDB gets its own in-memory database from :func:`connect`, so a
``timeout_seconds`` can ``interrupt()`` exactly that step's query, and ``max_memory_mb`` (or the
pipeline's ``memory_limit_mb``) becomes DuckDB's ``memory_limit`` with spilling to disk.
"""

from __future__ import annotations

import tempfile
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import duckdb

    from oxiflow.oxi import StepContext


def connect(ctx: StepContext | None = None, database: str = ":memory:", **extra: Any) -> duckdb.DuckDBPyConnection:
    import duckdb

    config: dict[str, Any] = {"temp_directory": tempfile.gettempdir() + "/oxiflow-duckdb-spill"}
    if ctx is not None and ctx.memory_limit_mb:
        config["memory_limit"] = f"{ctx.memory_limit_mb}MB"
    config.update(extra)
    con = duckdb.connect(database, config=config)
    if ctx is not None:
        # a weak reference: a bound method would keep the connection alive as long as the
        # context (and any traceback holding it), which nanobind reports as a leak at exit
        ref = weakref.ref(con)
        ctx.on_interrupt(lambda: _interrupt(ref()))
    return con


def _interrupt(con: duckdb.DuckDBPyConnection | None) -> None:
    if con is not None:
        con.interrupt()


def literal(value: Any) -> str:
    """A SQL literal for a config value (strings, numbers, bools, lists, dicts as structs)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{literal(str(k))}: {literal(v)}" for k, v in value.items()) + "}"
    return "'" + str(value).replace("'", "''") + "'"


def ident(name: str) -> str:
    """A quoted identifier (DuckDB's own rule: double quotes, doubled inside)."""
    return '"' + name.replace('"', '""') + '"'


def options(pairs: Iterable[tuple[str, Any]]) -> str:
    """``key = literal`` pairs for a table function call, skipping unset values."""
    return ", ".join(f"{k} = {literal(v)}" for k, v in pairs if v is not None)
