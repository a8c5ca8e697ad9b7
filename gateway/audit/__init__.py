"""The audit log (R3.6): the append-only, hash-chained store and its `gridgate audit` commands."""

from gateway.audit.store import DEFAULT_PATH, AuditLogError, AuditStore

__all__ = ["DEFAULT_PATH", "AuditLogError", "AuditStore"]
