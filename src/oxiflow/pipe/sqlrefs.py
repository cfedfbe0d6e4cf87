"""Which tables an `oxi sql` query reads, and how to let it read a one-shot stream twice.

``oxi sql`` binds standard input as ``input`` only when the query reads ``input`` (docs/shell.md),
so it needs the query's table references without running it: DuckDB's own parser
(``json_serialize_sql``, no binding, no files touched) gives them for SELECT statements. Other
statements (PIVOT, SUMMARIZE ...) fall back to a word match, which can only err towards binding.

An input arrives as an Arrow stream that DuckDB can scan once; a query naming it twice (a
self-join) reads it through a ``MATERIALIZED`` CTE instead, which DuckDB fills in one scan.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any


def table_refs(query: str) -> Counter[str] | None:
    """How often each table name (lowercase, unqualified) is read; None when DuckDB cannot
    serialize the statement. CTE names are not tables: they are left out."""
    from oxiflow.engine.duck import connect

    con = connect()
    try:
        row = con.execute("SELECT json_serialize_sql(?)", [query]).fetchone()
    finally:
        con.close()
    doc: dict[str, Any] = json.loads(row[0]) if row else {"error": True}
    if doc.get("error") or len(doc.get("statements", [])) != 1:
        return None
    refs: Counter[str] = Counter()
    ctes: set[str] = set()
    _walk(doc["statements"][0], refs, ctes)
    for name in ctes:
        refs.pop(name, None)
    return refs


def _walk(node: Any, refs: Counter[str], ctes: set[str]) -> None:
    if isinstance(node, dict):
        # an unqualified name (or main.name): the tables a verb registers
        local = node.get("schema_name", "") in ("", "main") and not node.get("catalog_name")
        if node.get("type") == "BASE_TABLE" and local:
            refs[str(node.get("table_name", "")).lower()] += 1
        for entry in (node.get("cte_map") or {}).get("map", []):
            ctes.add(str(entry.get("key", "")).lower())
        for value in node.values():
            _walk(value, refs, ctes)
    elif isinstance(node, list):
        for value in node:
            _walk(value, refs, ctes)


def reads(query: str, name: str, refs: Counter[str] | None) -> bool:
    """Whether ``query`` reads table ``name`` (``refs`` from :func:`table_refs`)."""
    if refs is not None:
        return refs[name.lower()] > 0
    return re.search(rf"(?<![\w$]){re.escape(name)}(?![\w$])", query, re.IGNORECASE) is not None


def materialize(query: str, streams: dict[str, str]) -> str:
    """``query`` with each table ``name`` of ``streams`` (name -> the step id it really has) read
    through ``WITH name AS MATERIALIZED (SELECT * FROM step_id)``, so it is scanned once."""
    import duckdb

    from oxiflow.engine.duck import ident

    if not streams:
        return query
    ctes = ", ".join(f"{ident(n)} AS MATERIALIZED (SELECT * FROM {ident(i)})" for n, i in streams.items())
    # the statement's own WITH (or WITH RECURSIVE) lists ours first; else ours starts one
    starts = [pos for pos, kind in duckdb.tokenize(query) if kind != duckdb.token_type.comment]

    def word(k: int) -> str:
        end = starts[k + 1] if k + 1 < len(starts) else len(query)
        return query[starts[k] : end].strip().upper() if k < len(starts) else ""

    if word(0) == "WITH":
        first = 2 if word(1) == "RECURSIVE" else 1
        cut = starts[first] if first < len(starts) else len(query)
        return f"{query[:cut]}{ctes}, {query[cut:]}"
    return f"WITH {ctes} {query}"
