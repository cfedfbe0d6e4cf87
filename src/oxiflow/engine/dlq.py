"""Dead-letter queue: rejected raw records with the reason, one JSON Lines file per run, and, when
the run has a state store, the ``dlq`` table there too (``oxiflow dlq ...``; state/dlq.py).

Each line: ``{"id", "run_id", "pipeline", "step", "oxi", "rule", "reason", "file", "line", "column",
"raw", "values", "masked", "time"}``. The file is created on the first rejected record, so clean runs
leave nothing. Table rows are buffered and written in chunks (one transaction each), and the rest on
:meth:`DeadLetterQueue.close`; the file stays the record of last resort when the store fails.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger("oxiflow.dlq")

FLUSH_ROWS = 1000  # table rows buffered before a write to the store
# one encoder for every record (json.dumps with options builds a new one per call); values JSON cannot
# hold (dates, decimals) are written as their str()
_JSON = json.JSONEncoder(default=str, ensure_ascii=False)


class DeadLetterQueue:
    def __init__(self, path: Path, run_id: str, pipeline: str, store: Any = None) -> None:
        self.path = path
        self.run_id = run_id
        self.pipeline = pipeline
        # the run's state store (oxiflow.state.store.StateStore) or None (--no-state, explain): steps
        # that keep history there (validate's anomaly checks) reach it through here
        self.store = store
        self.count = 0
        self.store_error: BaseException | None = None
        self._lock = threading.Lock()
        self._fh: IO[str] | None = None
        self._pending: list[dict[str, Any]] = []
        self._schemas: dict[Any, str] = {}  # schema -> fingerprint already saved this run
        self._table: Any = None
        # PII masking (contracts/dlq_masking.py): the run's policy and steps' own, applied to every record
        self.masking: Any = None
        self.step_masking: dict[str, Any] = {}

    def put(
        self,
        *,
        step: str,
        oxi: str,
        reason: str,
        raw: Any,
        file: str | None = None,
        line: int | None = None,
        column: str | int | None = None,
        rule: str | None = None,
        values: Any = None,
        schema: pa.Schema | None = None,
        masked: list[str] | None = None,
    ) -> str:
        """Dead-letter one record; returns its id. ``schema``: the step's input schema, which a
        replay needs to rebuild typed rows from ``raw`` (a dict of column -> value)."""
        record_id = uuid.uuid4().hex[:16]
        now = datetime.now(UTC)
        policy = self.step_masking.get(step, self.masking)
        if policy is not None:
            raw, values, masked = policy.apply(raw, values, masked)
        if rule is None:  # a reader's record (raw text) did not parse; others are named after their oxi
            rule = "parse" if isinstance(raw, str | bytes) else oxi
        record = {
            "id": record_id,
            "run_id": self.run_id,
            "pipeline": self.pipeline,
            "step": step,
            "oxi": oxi,
            "rule": rule,
            "reason": reason,
            "file": file,
            "line": line,
            "column": column,
            "raw": raw,
            "values": values,
            "masked": masked or [],
            "time": now.isoformat(timespec="milliseconds"),
        }
        text = _JSON.encode(record)
        with self._lock:
            if self._fh is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = self.path.open("a", encoding="utf-8")
            self._fh.write(text + "\n")
            self.count += 1
            if self.store is not None and self.store_error is None:
                self._buffer(record, now, schema)
                if len(self._pending) >= FLUSH_ROWS:
                    self._flush()
        return record_id

    def _buffer(self, record: dict[str, Any], now: datetime, schema: pa.Schema | None) -> None:
        from oxiflow.state.store import now_iso

        fp = None
        try:
            if self._table is None:
                from oxiflow.state.dlq import DlqTable

                self._table = DlqTable(self.store)
            if schema is not None:
                fp = self._schemas.get(schema)
                if fp is None:
                    fp = self._table.save_schema(schema)
                    self._schemas[schema] = fp
        except Exception as exc:
            self._store_failed(exc)
            return
        self._pending.append(
            {
                "id": record["id"],
                "pipeline": self.pipeline,
                "run_id": self.run_id,
                "step": record["step"],
                "oxi": record["oxi"],
                "rule": record["rule"],
                "reason": record["reason"],
                "file": record["file"],
                "line": record["line"],
                "column_name": None if record["column"] is None else str(record["column"]),
                "raw": _JSON.encode(record["raw"]),
                "vals": None if record["values"] is None else _JSON.encode(record["values"]),
                "schema_fp": fp,
                "masked": _JSON.encode(record["masked"]),
                "created_at": now_iso(now),
            }
        )

    def _flush(self) -> None:
        if not self._pending or self._table is None:
            return
        rows, self._pending = self._pending, []
        try:
            self._table.insert(rows)
        except Exception as exc:
            self._store_failed(exc)

    def _store_failed(self, exc: BaseException) -> None:
        self.store_error = exc
        self._pending = []
        log.error("could not write the dead-letter table in the state store (the file %s has every record): %s",
                  self.path, exc)  # fmt: skip

    def flush(self) -> None:
        with self._lock:
            self._flush()

    def close(self) -> None:
        with self._lock:
            self._flush()
            if self._fh is not None:
                self._fh.close()
                self._fh = None
