"""The schema registry's own tables in the state store: approvals of breaking changes, per-dataset
settings (compatibility mode, schema-contract modes, contract) and the drift report of each version.

The schema versions themselves are the store's ``schema_versions`` table (:meth:`StateStore.record_schema`).
These tables are not part of the store's numbered migrations: they are created on first use with
``CREATE TABLE IF NOT EXISTS`` (serialised by an advisory lock on PostgreSQL, by ``BEGIN IMMEDIATE`` on SQLite),
so this module can evolve without touching the store's schema version.

An approval goes ``pending`` (a run was blocked) -> ``approved`` (``oxiflow approve``: who, when, why) ->
``applied`` (a run published the approved schema as a new version). A newer blocked change supersedes an older
pending one of the same dataset. An approval is for one exact schema (its fingerprint): a different change
needs its own.
"""

from __future__ import annotations

import hashlib
import json
import uuid
import weakref
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from oxiflow.state.store import StateError, StateStore, Tx, advisory_key, now_iso

if TYPE_CHECKING:
    import pyarrow as pa

DDL = [
    """CREATE TABLE IF NOT EXISTS schema_approvals (
        id TEXT PRIMARY KEY, dataset TEXT NOT NULL, fingerprint TEXT NOT NULL, base_version INTEGER,
        changes TEXT NOT NULL, status TEXT NOT NULL, pipeline TEXT, step TEXT, run_id TEXT,
        requested_at TEXT NOT NULL, approved_by TEXT, approved_at TEXT, reason TEXT,
        applied_version INTEGER, applied_run TEXT, applied_at TEXT)""",
    "CREATE UNIQUE INDEX IF NOT EXISTS schema_approvals_change ON schema_approvals (dataset, fingerprint)",
    """CREATE TABLE IF NOT EXISTS dataset_settings (
        dataset TEXT PRIMARY KEY, compatibility TEXT NOT NULL, schema_contract TEXT NOT NULL, contract TEXT,
        pipeline TEXT, step TEXT, updated_at TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS schema_drift (
        dataset TEXT NOT NULL, version INTEGER NOT NULL, run_id TEXT, drift TEXT NOT NULL, created_at TEXT NOT NULL,
        PRIMARY KEY (dataset, version))""",
]
APPROVAL_COLUMNS = (
    "id", "dataset", "fingerprint", "base_version", "changes", "status", "pipeline", "step", "run_id",
    "requested_at", "approved_by", "approved_at", "reason", "applied_version", "applied_run", "applied_at",
)  # fmt: skip

SETTINGS_COLUMNS = ("dataset", "compatibility", "schema_contract", "contract", "pipeline", "step", "updated_at")
DRIFT_COLUMNS = ("dataset", "version", "run_id", "drift", "created_at")

# carried by `oxiflow state export` / `import` with the store's own tables (columns, primary key)
EXPORT_TABLES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "schema_approvals": (APPROVAL_COLUMNS, ("id",)),
    "dataset_settings": (SETTINGS_COLUMNS, ("dataset",)),
    "schema_drift": (DRIFT_COLUMNS, ("dataset", "version")),
}

_READY: weakref.WeakSet[StateStore] = weakref.WeakSet()  # stores whose tables exist (one check per store object)


def ensure_tables(store: StateStore) -> None:
    """Create the registry's tables when missing (what constructing a :class:`Registry` does)."""
    Registry(store)


def fingerprint(schema: pa.Schema) -> str:
    """The same fingerprint the store gives a schema version (sha256 of its Arrow IPC form)."""
    return hashlib.sha256(schema.serialize().to_pybytes()).hexdigest()


@dataclass(frozen=True)
class Approval:
    id: str
    dataset: str
    fingerprint: str
    base_version: int | None
    changes: list[str]  # the breaking changes, as sentences
    status: str  # pending | approved | applied | superseded
    pipeline: str | None
    step: str | None
    run_id: str | None  # the run that was blocked
    requested_at: str
    approved_by: str | None
    approved_at: str | None
    reason: str | None
    applied_version: int | None
    applied_run: str | None
    applied_at: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DatasetSettings:
    dataset: str
    compatibility: str
    schema_contract: dict[str, str]
    contract: str | None
    pipeline: str | None
    step: str | None
    updated_at: str


class Registry:
    """The registry tables of one store. Cheap to construct; creates the tables on first use."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        if store not in _READY:
            with store.transaction() as tx:
                if store.backend == "postgresql":  # two first users must not both create the tables
                    tx.execute("SELECT pg_advisory_xact_lock(?)", (advisory_key("oxiflow:registry-tables"),))
                for ddl in DDL:
                    tx.execute(ddl)
            _READY.add(store)

    # -- approvals ------------------------------------------------------------------------------------
    def request(
        self, dataset: str, schema_fp: str, changes: list[str], *, base_version: int | None,
        pipeline: str | None, step: str | None, run_id: str | None,
    ) -> Approval:  # fmt: skip
        """Record that a run was blocked by ``changes`` (idempotent per dataset and schema); an older pending
        request of the dataset for another schema is superseded."""
        with self.store.transaction() as tx:
            found = self._by_change(tx, dataset, schema_fp)
            if found is not None and found.status != "superseded":
                return found
            tx.execute(
                "UPDATE schema_approvals SET status = 'superseded' WHERE dataset = ? AND status = 'pending'", (dataset,)
            )
            if found is not None:  # the same change again after another one superseded it: pending again
                tx.execute(
                    "UPDATE schema_approvals SET status = 'pending', run_id = ?, requested_at = ? WHERE id = ?",
                    (run_id, now_iso(), found.id),
                )
            else:
                tx.execute(
                    "INSERT INTO schema_approvals (id, dataset, fingerprint, base_version, changes, status, pipeline, "
                    "step, run_id, requested_at) VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?)",
                    (uuid.uuid4().hex[:12], dataset, schema_fp, base_version, json.dumps(changes), pipeline, step,
                     run_id, now_iso()),
                )  # fmt: skip
            got = self._by_change(tx, dataset, schema_fp)
            assert got is not None
            return got

    def approve(self, dataset: str, *, by: str, reason: str | None) -> Approval:
        """Approve the dataset's pending change; StateError when there is none."""
        with self.store.transaction() as tx:
            rows = tx.execute(
                f"SELECT {', '.join(APPROVAL_COLUMNS)} FROM schema_approvals WHERE dataset = ? AND status = 'pending' "
                "ORDER BY requested_at DESC LIMIT 1",
                (dataset,),
            )
            if not rows:
                raise StateError(
                    f"no pending approval for dataset {dataset!r}", hint="`oxiflow approvals` lists the pending ones"
                )
            found = _approval(rows[0])
            tx.execute(
                "UPDATE schema_approvals SET status = 'approved', approved_by = ?, approved_at = ?, reason = ? "
                "WHERE id = ?",
                (by, now_iso(), reason, found.id),
            )
            got = self._by_change(tx, dataset, found.fingerprint)
            assert got is not None
            return got

    def approved(self, dataset: str, schema_fp: str) -> Approval | None:
        """The approval that lets ``schema_fp`` be published, if a person gave one."""
        found = self._by_change(None, dataset, schema_fp)
        return found if found is not None and found.status in ("approved", "applied") else None

    def mark_applied(self, approval_id: str, version: int, run_id: str | None, conn: Tx | None = None) -> None:
        self.store._q(
            conn,
            "UPDATE schema_approvals SET status = 'applied', applied_version = ?, applied_run = ?, applied_at = ? "
            "WHERE id = ? AND status = 'approved'",
            (version, run_id, now_iso(), approval_id),
        )

    def approvals(self, dataset: str | None = None, *, pending_only: bool = False) -> list[Approval]:
        """Newest first."""
        where, params = [], []
        if dataset is not None:
            where.append("dataset = ?")
            params.append(dataset)
        if pending_only:
            where.append("status = 'pending'")
        sql = f"SELECT {', '.join(APPROVAL_COLUMNS)} FROM schema_approvals"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self.store._read(sql + " ORDER BY requested_at DESC, id", params)
        return [_approval(r) for r in rows]

    def _by_change(self, tx: Tx | None, dataset: str, schema_fp: str) -> Approval | None:
        sql = f"SELECT {', '.join(APPROVAL_COLUMNS)} FROM schema_approvals WHERE dataset = ? AND fingerprint = ?"
        rows = tx.execute(sql, (dataset, schema_fp)) if tx is not None else self.store._read(sql, (dataset, schema_fp))
        return _approval(rows[0]) if rows else None

    # -- settings ---------------------------------------------------------------------------------------
    def save_settings(
        self, dataset: str, *, compatibility: str, schema_contract: dict[str, str], contract: str | None,
        pipeline: str | None, step: str | None, conn: Tx | None = None,
    ) -> None:  # fmt: skip
        """What the pipeline configures for the dataset (so `oxiflow schemas` can show it)."""
        self.store._q(
            conn,
            "INSERT INTO dataset_settings (dataset, compatibility, schema_contract, contract, pipeline, step, "
            "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (dataset) DO UPDATE SET "
            "compatibility = excluded.compatibility, schema_contract = excluded.schema_contract, "
            "contract = excluded.contract, pipeline = excluded.pipeline, step = excluded.step, "
            "updated_at = excluded.updated_at",
            (dataset, compatibility, json.dumps(schema_contract), contract, pipeline, step, now_iso()),
        )

    def settings(self, dataset: str) -> DatasetSettings | None:
        rows = self.store._read(
            "SELECT dataset, compatibility, schema_contract, contract, pipeline, step, updated_at "
            "FROM dataset_settings WHERE dataset = ?",
            (dataset,),
        )
        if not rows:
            return None
        d, compat, modes, contract, pipeline, step, updated = rows[0]
        return DatasetSettings(d, compat, json.loads(modes), contract, pipeline, step, updated)

    def datasets(self) -> list[str]:
        """Every dataset with a schema version, settings or an approval."""
        names = {
            r[0]
            for table in ("schema_versions", "dataset_settings", "schema_approvals")
            for r in self.store._read(f"SELECT DISTINCT dataset FROM {table}")
        }
        return sorted(names)

    # -- drift ------------------------------------------------------------------------------------------
    def save_drift(
        self, dataset: str, version: int, drift: list[dict[str, Any]], run_id: str | None, conn: Tx | None = None
    ) -> None:
        """The drift report that led to ``version`` (kept with the version; the first write of a version wins)."""
        self.store._q(
            conn,
            "INSERT INTO schema_drift (dataset, version, run_id, drift, created_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (dataset, version) DO NOTHING",
            (dataset, version, run_id, json.dumps(drift, default=str), now_iso()),
        )

    def drift(self, dataset: str, version: int) -> list[dict[str, Any]] | None:
        rows = self.store._read("SELECT drift FROM schema_drift WHERE dataset = ? AND version = ?", (dataset, version))
        return json.loads(rows[0][0]) if rows else None


def _approval(row: tuple[Any, ...]) -> Approval:
    d = dict(zip(APPROVAL_COLUMNS, row, strict=True))
    d["changes"] = json.loads(d["changes"])
    for key in ("base_version", "applied_version"):
        d[key] = None if d[key] is None else int(d[key])
    return Approval(**d)
