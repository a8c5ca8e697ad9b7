"""The audit log on disk (R3.6): an append-only SQLite file holding the `privacy.audit` chain.

The log has its own file (``GRIDGATE_AUDIT_PATH``), apart from the registry, so that it can be
kept longer, copied to write-once storage and handed to an auditor without the registry.

Append-only is enforced twice. Triggers refuse UPDATE and DELETE, which stops mistakes and
code paths that should not write; they do not stop someone who can open the file, so the
chain is what catches tampering: `verify` re-hashes every record. One writer at a time: a
process-local lock plus ``BEGIN IMMEDIATE`` (for several processes on one file), so two
appends can never both link to the same previous record.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from privacy.audit import (
    Anchor,
    AuditAction,
    AuditEntry,
    AuditRecord,
    ChainVerifier,
    VerifyResult,
    canonical_json,
    chain_append,
    check_entry,
)

DEFAULT_PATH = Path(".run/gridgate/audit.sqlite3")
BUSY_TIMEOUT_MS = 10_000
_PAGE = 1000
TRIGGERS = ("audit_log_no_update", "audit_log_no_delete")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_log (
    seq       INTEGER PRIMARY KEY,
    at_ns     INTEGER NOT NULL,
    actor     TEXT    NOT NULL,
    action    TEXT    NOT NULL,
    subject   TEXT    NOT NULL,
    details   TEXT    NOT NULL,
    prev_hash TEXT    NOT NULL,
    hash      TEXT    NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""
_COLUMNS = "seq, at_ns, actor, action, subject, details, prev_hash, hash"


class AuditLogError(Exception):
    """The audit log cannot be opened or read."""


class AuditStore:
    """Appends records to the chain and reads them back; safe to share between threads."""

    def __init__(
        self,
        path: str | Path = DEFAULT_PATH,
        *,
        clock_ns: Callable[[], int] = time.time_ns,
        read_only: bool = False,
    ) -> None:
        self.path = Path(path)
        self._clock_ns = clock_ns
        self._lock = threading.Lock()
        self.read_only = read_only
        try:
            if read_only:
                if not self.path.exists():
                    raise AuditLogError(f"no audit log at {self.path}")
                uri = f"{self.path.resolve().as_uri()}?mode=ro"
                self._conn = sqlite3.connect(
                    uri, uri=True, isolation_level=None, check_same_thread=False
                )
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fresh = not self.path.exists()
                self._conn = sqlite3.connect(
                    self.path, isolation_level=None, check_same_thread=False
                )
                if fresh:
                    os.chmod(self.path, 0o600)  # pseudonyms and staff ids: not world-readable
            self._conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            if not read_only:
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=FULL")  # an audit record is never lost
                self._conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise AuditLogError(f"cannot open the audit log {self.path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> AuditStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- writing --------------------------------------------------------------------------

    def append(
        self,
        actor: str,
        action: AuditAction,
        subject: str,
        details: Mapping[str, Any] | None = None,
        *,
        at_ns: int | None = None,
    ) -> AuditRecord:
        """Chain a record to the newest one and store it durably before returning.

        Raises AuditRefused (a ValueError) for details that are not JSON or hold a raw
        identifier (nothing is written), AuditLogError if the newest stored record cannot be
        read.
        """
        return self.append_many([AuditEntry(actor, action, subject, details)], at_ns=at_ns)[0]

    def append_many(
        self, entries: Sequence[AuditEntry], *, at_ns: int | None = None
    ) -> list[AuditRecord]:
        """Chain several records in one transaction: all of them are stored, or none.

        Every entry is checked before anything is written, so one refused record cannot leave
        the others behind (records describing a transaction that then rolled back).
        """
        if self.read_only:
            raise AuditLogError("the audit log was opened read-only")
        if not entries:
            return []
        for entry in entries:
            check_entry(entry.actor, entry.subject, dict(entry.details or {}))
        records: list[AuditRecord] = []
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                row = self._conn.execute(
                    f"SELECT {_COLUMNS} FROM audit_log ORDER BY seq DESC LIMIT 1"
                ).fetchone()
                prev = None if row is None else _decode(row)
                when = self._clock_ns() if at_ns is None else at_ns
                for entry in entries:
                    prev = chain_append(
                        prev,
                        at_ns=when,
                        actor=entry.actor,
                        action=entry.action,
                        subject=entry.subject,
                        details=entry.details,
                    )
                    records.append(prev)
                self._conn.executemany(
                    f"INSERT INTO audit_log ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [_row(r) for r in records],
                )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return records

    # -- reading --------------------------------------------------------------------------

    def _rows(self, from_seq: int = 0) -> Iterator[tuple[Any, ...]]:
        """Raw rows in seq order, a page at a time (the log may be large)."""
        after = from_seq - 1
        while True:
            with self._lock:
                try:
                    page = self._conn.execute(
                        f"SELECT {_COLUMNS} FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?",
                        (after, _PAGE),
                    ).fetchall()
                except sqlite3.Error as exc:
                    raise AuditLogError(f"cannot read the audit log: {exc}") from exc
            yield from page
            if len(page) < _PAGE:
                return
            after = page[-1][0]

    def records(self, from_seq: int = 0) -> Iterator[AuditRecord]:
        """Records with seq >= `from_seq`, oldest first. Raises AuditLogError on a row that
        cannot be decoded (use `verify` to locate damage)."""
        for row in self._rows(from_seq):
            try:
                yield _decode(row)
            except ValueError as exc:
                raise AuditLogError(f"record #{row[0]} cannot be read: {exc}") from exc

    def last(self, n: int) -> list[AuditRecord]:
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM audit_log ORDER BY seq DESC LIMIT ?", (max(0, n),)
            ).fetchall()
        return [_decode(r) for r in reversed(rows)]

    def query(
        self,
        *,
        since_ns: int | None = None,
        until_ns: int | None = None,
        actor: str | None = None,
        action: AuditAction | None = None,
        subject: str | None = None,
        visible: Callable[[str], bool] = lambda place: True,
        offset: int = 0,
        limit: int = 100,
    ) -> tuple[list[AuditRecord], int]:
        """Records matching every filter given, newest first: one page and the total.
        `visible` is asked about each record's ``details.place`` ("" when it has none)."""
        where: list[str] = []
        params: list[str | int] = []
        for column, value in (("actor", actor), ("subject", subject)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if action is not None:
            where.append("action = ?")
            params.append(action.value)
        if since_ns is not None:
            where.append("at_ns >= ?")
            params.append(since_ns)
        if until_ns is not None:
            where.append("at_ns < ?")
            params.append(until_ns)
        sql = f"SELECT {_COLUMNS} FROM audit_log"
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._lock:
            rows = self._conn.execute(sql + " ORDER BY seq DESC", params).fetchall()
        page: list[AuditRecord] = []
        total = 0
        for row in rows:
            record = _decode(row)
            place = record.details.get("place")
            if not visible(place if isinstance(place, str) else ""):
                continue
            if offset <= total < offset + limit:
                page.append(record)
            total += 1
        return page, total

    def count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT count(*) FROM audit_log").fetchone()[0])

    def head(self) -> Anchor | None:
        """The newest record's seq and hash: keep it elsewhere to detect a truncated tail."""
        with self._lock:
            row = self._conn.execute(
                "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1"
            ).fetchone()
        return None if row is None else Anchor(int(row[0]), str(row[1]))

    def missing_triggers(self) -> list[str]:
        """Append-only triggers that someone dropped (the chain still catches what followed)."""
        with self._lock:
            present = {
                r[0]
                for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type='trigger'")
            }
        return [t for t in TRIGGERS if t not in present]

    def verify(self, anchor: Anchor | None = None) -> VerifyResult:
        """Re-hash the whole chain; names the first broken record, never raises on damage."""
        verifier = ChainVerifier(anchor)
        try:
            for row in self._rows():
                try:
                    record = _decode(row)
                except ValueError as exc:
                    seq = row[0] if isinstance(row[0], int) else verifier.checked + 1
                    verifier.checked += 1
                    verifier.fail(seq, f"record cannot be read ({exc}): altered")
                    break
                if not verifier.feed(record):
                    break
        except AuditLogError as exc:
            verifier.fail(verifier.checked + 1, str(exc))
        return verifier.result()


def _row(r: AuditRecord) -> tuple[Any, ...]:
    details = canonical_json(r.details)
    return (r.seq, r.at_ns, r.actor, r.action.value, r.subject, details, r.prev_hash, r.hash)


def _decode(row: tuple[Any, ...]) -> AuditRecord:
    """A stored row as a record; ValueError if a column has the wrong type or bad JSON."""
    seq, at_ns, actor, action, subject, details, prev_hash, digest = row
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (seq, at_ns)):
        raise ValueError("seq and at_ns must be integers")
    if not all(isinstance(v, str) for v in (actor, action, subject, details, prev_hash, digest)):
        raise ValueError("text column holds another type")
    try:
        parsed = json.loads(details)
    except json.JSONDecodeError as exc:
        raise ValueError("details are not JSON") from exc
    if not isinstance(parsed, dict):
        raise ValueError("details are not a JSON object")
    return AuditRecord(seq, at_ns, actor, AuditAction(action), subject, parsed, prev_hash, digest)


__all__ = ["DEFAULT_PATH", "AuditLogError", "AuditStore"]
