"""The registry's database as its repositories share it: one engine, its transactions, and the
audit log that changes to personal data are written to (R3.6).

Internal to `gateway.registry`: `Registry` (in `store`) builds one `Database` and hands it to
each repository, so they all see the same engine and the same audit log.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Protocol

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from devices.errors import ConfigError
from privacy.audit import AuditAction, AuditRecord

# Stable constraint names (migrations and PostgreSQL error messages need them), for the
# registry's tables and for the tables other parts keep beside them (alerts, API accounts).
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class AuditSink(Protocol):
    """Where the registry writes audit records: `gateway.audit.store.AuditStore`."""

    def append(
        self,
        actor: str,
        action: AuditAction,
        subject: str,
        details: Mapping[str, Any] | None = None,
    ) -> AuditRecord: ...


class Database:
    """Sessions on the registry's engine; every repository call opens and ends its own."""

    def __init__(self, engine: Engine, *, audit: AuditSink | None = None) -> None:
        self.engine = engine
        self.audit = audit

    def require_audit(self) -> AuditSink:
        """The audit log; changes to personal data are refused without one (R3.6)."""
        if self.audit is None:
            raise ConfigError(
                "this change must be audited, but the registry has no audit log attached"
                " (Registry.open(url, audit=AuditStore(settings.audit_path)))"
            )
        return self.audit

    @contextmanager
    def reading(self) -> Iterator[Session]:
        with Session(self.engine) as session:
            yield session

    @contextmanager
    def writing(self, *, commit: bool = True) -> Iterator[Session]:
        """One write transaction: committed if the block ends normally (and `commit`), else
        rolled back. ``commit=False`` is a dry run that sees its own writes."""
        with Session(self.engine) as session:
            # BEGIN IMMEDIATE on SQLite (see `store._sqlite_tuning`)
            session.connection(execution_options={"gridgate_write": True})
            yield session
            if commit:
                session.commit()
            else:
                session.rollback()


__all__ = ["NAMING_CONVENTION", "AuditSink", "Database"]
