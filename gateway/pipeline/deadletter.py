"""Where rejected messages go: topic, reason, time and a keyed digest of the payload.

The raw payload is never kept — it may hold names, ID numbers or face data — and topic levels
that look like personal data are redacted. The digest lets an operator match a record against
a redelivered message or a device's own log without the store holding the data. It is an HMAC
under the pseudonym key ring's current key (named in the digest, ``k1:<hex>``), not a plain
SHA-256: a payload that is only an ID number or a phone would be found from a plain digest by
trying every number.
SQLite (WAL) because a dead letter must be durable before its message is acknowledged.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from privacy.keys import KeyRing
from privacy.redact import redact_topic

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_ns INTEGER NOT NULL,
    topic TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    payload_digest TEXT NOT NULL,
    payload_bytes INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_reason ON dead_letters(reason);
"""
_MAX_DETAIL = 500
_DOMAIN = b"gridgate/dead-letter/v1\x00"
EPHEMERAL_KID = "ephemeral"  # no key ring given: a random key for this process only


@dataclass(frozen=True, slots=True)
class DeadLetter:
    received_ns: int
    topic: str  # redacted
    reason: str
    detail: str  # our words: names positions, never device-supplied text
    payload_digest: str  # "{kid}:{hex HMAC-SHA-256}"
    payload_bytes: int


class PayloadDigest:
    """Keyed digests of payloads: the same payload gives the same digest under one key."""

    def __init__(self, keyring: KeyRing | None = None) -> None:
        self._keyring = keyring
        self._ephemeral = os.urandom(32) if keyring is None else b""

    def __call__(self, payload: bytes) -> str:
        message = _DOMAIN + payload
        if self._keyring is None:
            mac = hmac.new(self._ephemeral, message, hashlib.sha256).hexdigest()
            return f"{EPHEMERAL_KID}:{mac}"
        kid = self._keyring.current
        return f"{kid}:{self._keyring.mac(message, kid).hex()}"


class DeadLetterStore:
    """Append-only store; `add_many` commits before returning (durable hand-off).

    Bounded: beyond `max_rows` the oldest records are deleted, so a flood of bad input cannot
    fill the disk; the metrics keep counting every rejection regardless.
    """

    PRUNE_EVERY = 10_000

    def __init__(
        self, path: Path | str, max_rows: int = 1_000_000, *, keyring: KeyRing | None = None
    ) -> None:
        self.path = Path(path)
        self.digest = PayloadDigest(keyring)
        self.max_rows = max_rows
        self._since_prune = 0
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._migrate_unkeyed_digests()
        self._db.executescript(_SCHEMA)

    def _migrate_unkeyed_digests(self) -> None:
        """Stores written before digests were keyed: their plain SHA-256 column is renamed and
        its values blanked (they could be reversed by enumeration, and cannot be re-keyed
        without the payloads, which were never kept)."""
        cols = {r[1] for r in self._db.execute("PRAGMA table_info(dead_letters)")}
        if "payload_sha256" in cols:
            self._db.execute("BEGIN")
            self._db.execute(
                "ALTER TABLE dead_letters RENAME COLUMN payload_sha256 TO payload_digest"
            )
            self._db.execute("UPDATE dead_letters SET payload_digest = 'unkeyed:removed'")
            self._db.execute("COMMIT")

    def letter(
        self, topic: str, payload: bytes, reason: str, detail: str, received_ns: int
    ) -> DeadLetter:
        """The dead letter of a message: topic redacted, payload reduced to a keyed digest."""
        return DeadLetter(
            received_ns=received_ns,
            topic=redact_topic(topic),
            reason=reason,
            detail=detail[:_MAX_DETAIL],
            payload_digest=self.digest(payload),
            payload_bytes=len(payload),
        )

    def add_many(self, letters: Sequence[DeadLetter]) -> None:
        if not letters:
            return
        rows = [
            (d.received_ns, d.topic, d.reason, d.detail, d.payload_digest, d.payload_bytes)
            for d in letters
        ]
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO dead_letters (received_ns, topic, reason, detail, payload_digest,"
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

    def counts(
        self, since_ns: int, until_ns: int, bucket_s: int = 3600
    ) -> list[tuple[int, str, int]]:
        """(bucket start ns, reason, count) for letters received in [since, until): numbers
        only, for the API and screens."""
        bucket_ns = max(1, bucket_s) * 1_000_000_000
        with self._lock:
            rows = self._db.execute(
                "SELECT (received_ns / ?) * ?, reason, count(*) FROM dead_letters"
                " WHERE received_ns >= ? AND received_ns < ? GROUP BY 1, 2 ORDER BY 1, 2",
                (bucket_ns, bucket_ns, since_ns, until_ns),
            ).fetchall()
        return [(int(b), str(r), int(n)) for b, r, n in rows]

    def recent(self, limit: int = 100) -> list[DeadLetter]:
        with self._lock:
            rows = self._db.execute(
                "SELECT received_ns, topic, reason, detail, payload_digest, payload_bytes"
                " FROM dead_letters ORDER BY id DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [DeadLetter(*row) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
