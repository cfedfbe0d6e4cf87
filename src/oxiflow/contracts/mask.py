"""The ``mask`` oxi: hash, tokenize, redact, truncate or drop columns, chosen by the contract's
classification of each field or named explicitly. Vectorised: each batch is one DuckDB query.

The salt and key are bound as query parameters, never written into SQL text, errors or logs.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal

from pydantic import SecretStr

from oxiflow.data import OxiData
from oxiflow.errors import ConfigError
from oxiflow.oxi import OxiConfig, StepContext, Transform, oxi

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

log = logging.getLogger("oxiflow.contracts.mask")

Method = Literal["hash", "tokenize", "redact", "truncate", "drop"]
REDACTED = "[REDACTED]"


class MaskConfig(OxiConfig):
    contract: str | None = None
    """An ODCS / datacontract-specification file: its fields' `classification` picks the method."""
    dataset: str | None = None
    """Which dataset of the contract (needed when it has several)."""
    classifications: dict[str, Method] = {}
    """Classification -> method, e.g. `{pii: hash, restricted: redact}` (with `contract`)."""
    columns: dict[str, Method] = {}
    """Column -> method, e.g. `{email: hash, ssn: drop}`; wins over `classifications`."""
    salt: SecretStr | None = None
    """Salt of `hash` (use `${MASK_SALT}`). Without one, a random salt per run: hashes then differ between runs."""
    key: SecretStr | None = None
    """Key of `tokenize` (default: the salt). Tokens are deterministic per key and one-way."""
    keep: int = 4
    """Characters `truncate` keeps."""
    strict: bool = True
    """Fail when a column to mask is not in the data (else warn and go on)."""


@oxi(
    "mask",
    kind="transform",
    config=MaskConfig,
    summary="Mask columns by contract classification or by name: hash (salted), tokenize, redact, truncate, drop.",
    example=(
        "- name: mask\n  config:\n    contract: contracts/customers.odcs.yaml\n"
        "    classifications: {pii: hash}\n    columns: {notes: drop}\n    salt: ${MASK_SALT}"
    ),
)
class Mask(Transform):
    config: MaskConfig

    def plan(self, schema: pa.Schema) -> dict[str, Method]:
        """Column -> method for data of this schema."""
        cfg = self.config
        methods: dict[str, Method] = {}
        if cfg.contract:
            from oxiflow.contracts import load_contract

            ds = load_contract(cfg.contract).dataset(cfg.dataset)
            for f in ds.fields:
                if f.classification and f.classification in cfg.classifications:
                    methods[f.column] = cfg.classifications[f.classification]
        elif cfg.classifications:
            raise ConfigError("mask: `classifications` needs a `contract` that classifies the fields")
        methods.update(cfg.columns)
        missing = [c for c in methods if c not in schema.names]
        if missing:
            if cfg.strict:
                raise ConfigError(f"mask: column(s) not in the data: {', '.join(missing)}")
            log.warning("mask: column(s) not in the data, not masked: %s", ", ".join(missing))
            methods = {c: m for c, m in methods.items() if c in schema.names}
        import pyarrow as pa

        for c, m in methods.items():
            t = schema.field(c).type
            if m == "truncate" and not (pa.types.is_string(t) or pa.types.is_large_string(t)):
                raise ConfigError(f"mask: truncate needs a string column; {c} is {t}")
        return methods

    def _select(self, schema: pa.Schema, methods: dict[str, Method]) -> tuple[str, list[str]]:
        """The per-batch SELECT and its parameters (salt and key, bound, never inlined)."""
        import pyarrow as pa

        from oxiflow.engine.duck import ident

        salt = self.config.salt.get_secret_value() if self.config.salt else None
        if salt is None and "hash" in methods.values():
            log.warning("mask: no salt given: hashing with a random salt, so hashes differ between runs")
            salt = secrets.token_hex(16)
        key = self.config.key.get_secret_value() if self.config.key else salt
        if key is None and "tokenize" in methods.values():
            raise ConfigError("mask: tokenize needs a `key` (or a `salt`)")
        params: list[str] = []
        cols = []
        for f in schema:
            col, m = ident(f.name), methods.get(f.name)
            text = f"CAST({col} AS VARCHAR)"
            if m is None:
                cols.append(col)
            elif m == "drop":
                continue
            elif m == "hash":
                params.append(salt or "")
                cols.append(f"sha256(?::VARCHAR || {text}) AS {col}")
            elif m == "tokenize":
                params.append(key or "")
                cols.append(f"'tok_' || left(sha256(?::VARCHAR || chr(31) || 'tokenize' || {text}), 24) AS {col}")
            elif m == "truncate":
                cols.append(f"left({col}, {int(self.config.keep)}) AS {col}")
            elif m == "redact":
                string = pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
                # NULLIF(col, col): a NULL of the column's own type
                cols.append(
                    f"CASE WHEN {col} IS NULL THEN NULL ELSE '{REDACTED}' END AS {col}"
                    if string
                    else f"NULLIF({col}, {col}) AS {col}"
                )
        return f"SELECT {', '.join(cols)} FROM oxiflow_mask_batch", params

    def transform(self, inputs: list[OxiData], ctx: StepContext) -> OxiData:
        import pyarrow as pa

        from oxiflow.engine.duck import connect

        data = inputs[0]
        methods = self.plan(data.schema)
        sql, params = self._select(data.schema, methods)
        con = connect(ctx)
        out_schema = _run(con, sql, params, pa.RecordBatch.from_pylist([], schema=data.schema)).schema

        def batches() -> Iterator[pa.RecordBatch]:
            try:
                for batch in data:
                    yield _run(con, sql, params, batch).cast(out_schema)
            finally:
                con.close()

        return data.with_batches(batches(), out_schema)


def _run(con: duckdb.DuckDBPyConnection, sql: str, params: list[str], batch: pa.RecordBatch) -> pa.RecordBatch:
    import pyarrow as pa

    con.register("oxiflow_mask_batch", batch)
    try:
        table = con.sql(sql, params=params or None).to_arrow_table()
    finally:
        con.unregister("oxiflow_mask_batch")
    table = table.combine_chunks()
    batches = table.to_batches()
    return batches[0] if batches else pa.RecordBatch.from_pylist([], schema=table.schema)
