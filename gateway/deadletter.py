"""Where rejected messages go: topic, reason, time and a SHA-256 digest of the payload.

The raw payload is never kept — it may hold names, ID numbers or face data — and topic levels
that look like personal data are redacted. The digest lets an operator match a record against
a device's own log without the store holding the data.
SQLite (WAL) because a dead letter must be durable before its message is acknowledged.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from privacy.redact import redact_topic

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_ns INTEGER NOT NULL,
    topic TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    payload_sha256 TEXT NOT NULL,
    payload_bytes INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_reason ON dead_letters(reason);
"""
_MAX_DETAIL = 500


@dataclass(frozen=True, slots=True)
class DeadLetter:
    received_ns: int
    topic: str
    reason: str
    detail: str
    payload_sha256: str
    payload_bytes: int

    @classmethod
    def of(
        cls, topic: str, payload: bytes, reason: str, detail: str, received_ns: int
    ) -> DeadLetter:
        return cls(
            received_ns=received_ns,
            topic=redact_topic(topic),
            reason=reason,
            detail=detail[:_MAX_DETAIL],
            payload_sha256=hashlib.sha256(payload).hexdigest(),
            payload_bytes=len(payload),
        )


class DeadLetterStore:
    """Append-only store; `add_many` commits before returning (durable hand-off).

    Bounded: beyond `max_rows` the oldest records are deleted, so a flood of bad input cannot
    fill the disk; the metrics keep counting every rejection regardless.
    """

    PRUNE_EVERY = 10_000

    def __init__(self, path: Path | str, max_rows: int = 1_000_000) -> None:
        self.path = Path(path)
        self.max_rows = max_rows
        self._since_prune = 0
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def add_many(self, letters: Sequence[DeadLetter]) -> None:
        if not letters:
            return
        rows = [
            (d.received_ns, d.topic, d.reason, d.detail, d.payload_sha256, d.payload_bytes)
            for d in letters
        ]
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO dead_letters (received_ns, topic, reason, detail, payload_sha256,"
                " payload_bytes) VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
            self._since_prune += len(rows)
            if self._since_prune >= min(self.PRUNE_EVERY, self.max_rows):
                self._since_prune = 0
                self._db.execute(
                    "DELETE FROM dead_letters WHERE id <= (SELECT max(id) FROM dead_letters) - ?",
                    (self.max_rows,),
                )
            self._db.execute("COMMIT")

    def count(self, reason: str | None = None) -> int:
        with self._lock:
            if reason is None:
                row = self._db.execute("SELECT count(*) FROM dead_letters").fetchone()
            else:
                row = self._db.execute(
                    "SELECT count(*) FROM dead_letters WHERE reason = ?", (reason,)
                ).fetchone()
        return int(row[0])

    def recent(self, limit: int = 100) -> list[DeadLetter]:
        with self._lock:
            rows = self._db.execute(
                "SELECT received_ns, topic, reason, detail, payload_sha256, payload_bytes"
                " FROM dead_letters ORDER BY id DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [DeadLetter(*row) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
