"""The tamper-evident audit chain (R3.6 责任追查), pure: records, hashing and verification.

Each record carries the SHA-256 of the record before it, and its own hash covers every field,
so any edit, deletion or reordering breaks the chain at a record `verify` can name. Deleting
the *newest* records leaves a valid shorter chain; only an anchor kept elsewhere (the last
sequence number and hash, e.g. printed by ``gridgate audit show`` into an operator's logbook)
reveals that. Storage is not here: `gateway.audit.store` keeps the records.

Details hold ids, pseudonyms, counts and flags, never raw personal data: an audit log every
auditor may read must not itself become the leak. `check_details` refuses strings that look
like resident ID numbers or mobile numbers, the two identifiers an operator is most likely to
paste into a free-text reason.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

GENESIS_HASH = "0" * 64
_HEX64 = re.compile(r"[0-9a-f]{64}")
# Bounded by anything but letters and digits, so that a run of digits inside a device id or a
# pseudonym's token is not taken for an identifier.
_RAW_IDENTIFIER = re.compile(
    r"(?<![0-9A-Za-z])(?:\d{17}[0-9Xx]|(?:\+?86)?1[3-9]\d{9})(?![0-9A-Za-z])"
)


class AuditRefused(ValueError):
    """A record the chain will not take (not JSON, or a raw identifier in it). The message is
    ours and names a position, never a value: it may be shown and dead-lettered as it is."""


class AuditAction(StrEnum):
    REIDENT_REQUEST = "reident_request"
    REIDENT_APPROVE = "reident_approve"
    REIDENT_DENY = "reident_deny"
    REIDENT_RESOLVE = "reident_resolve"
    REIDENT_REVIEW = "reident_review"  # after-the-fact review of an emergency grant
    CONSENT_CHANGE = "consent_change"
    POLICY_CHANGE = "policy_change"
    KEY_ROTATION = "key_rotation"
    ALERT_ACTION = "alert_action"
    PERSONAL_DATA_READ = "personal_data_read"
    LOGIN = "login"  # an API sign-in, succeeded or refused (details.outcome)
    ACCOUNT_CHANGE = "account_change"  # API accounts and keys created, changed, revoked


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """A record to be chained: what an audit store's `append_many` takes."""

    actor: str
    action: AuditAction
    subject: str
    details: Mapping[str, Any] | None = None


@dataclass(slots=True, frozen=True)
class AuditRecord:
    seq: int  # 1 for the first record; no gaps
    at_ns: int
    actor: str
    action: AuditAction
    subject: str  # a pseudonym, request id, resident id, policy name …
    details: Mapping[str, Any] = field(hash=False)
    prev_hash: str
    hash: str

    def body(self) -> dict[str, Any]:
        """Every field the hash covers."""
        return _body(
            self.seq, self.at_ns, self.actor, self.action, self.subject, self.details,
            self.prev_hash,
        )  # fmt: skip


@dataclass(slots=True, frozen=True)
class Anchor:
    """The newest record as someone outside the log saw it: reveals a truncated tail."""

    seq: int
    hash: str

    def __str__(self) -> str:
        return f"{self.seq}:{self.hash}"

    @classmethod
    def parse(cls, text: str) -> Anchor:
        """``SEQ:HASH``, as `str` writes it."""
        seq, sep, digest = text.strip().partition(":")
        if not sep or not seq.isdigit() or int(seq) < 1 or not _HEX64.fullmatch(digest):
            raise ValueError("an anchor is SEQ:HASH (a record number and its 64-hex SHA-256)")
        return cls(int(seq), digest)


@dataclass(slots=True, frozen=True)
class VerifyResult:
    ok: bool
    checked: int  # records read, including the first bad one
    first_bad_seq: int | None = None
    problem: str = ""


def canonical_json(value: Any) -> str:
    """One byte string per value: sorted keys, no spaces, UTF-8, no NaN."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def _body(
    seq: int,
    at_ns: int,
    actor: str,
    action: str,
    subject: str,
    details: Mapping[str, Any],
    prev_hash: str,
) -> dict[str, Any]:
    return {
        "seq": seq,
        "at_ns": at_ns,
        "actor": actor,
        "action": str(action),
        "subject": subject,
        "details": dict(details),
        "prev_hash": prev_hash,
    }


def record_hash(body: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


def find_raw_identifier(value: Any) -> str | None:
    """Where in `value` (a JSON-like tree) a raw ID or phone number sits, e.g. ``reason``."""

    def walk(item: Any, where: str) -> str | None:
        if isinstance(item, str):
            return where if _RAW_IDENTIFIER.search(item) else None
        if isinstance(item, Mapping):
            for key, sub in item.items():
                path = f"{where}.{key}" if where else str(key)
                if _RAW_IDENTIFIER.search(str(key)):
                    return path
                if (found := walk(sub, path)) is not None:
                    return found
        elif isinstance(item, list | tuple):
            for i, sub in enumerate(item):
                if (found := walk(sub, f"{where}[{i}]")) is not None:
                    return found
        return None

    return walk(value, "")


def check_details(details: Mapping[str, Any]) -> None:
    """Raise AuditRefused unless `details` is JSON-safe and free of raw identifiers."""

    def json_safe(item: Any) -> bool:
        if item is None or isinstance(item, bool | int | str):
            return True
        if isinstance(item, float):
            return math.isfinite(item)
        if isinstance(item, list | tuple):
            return all(json_safe(x) for x in item)
        if isinstance(item, Mapping):
            return all(isinstance(k, str) and json_safe(v) for k, v in item.items())
        return False

    if not isinstance(details, Mapping) or not json_safe(details):
        raise AuditRefused("audit details must be JSON: text keys; text, numbers, lists, mappings")
    where = find_raw_identifier(details)
    if where is not None:
        raise AuditRefused(f"audit details hold what looks like an ID or phone number ({where})")


def check_entry(actor: str, subject: str, details: Mapping[str, Any]) -> None:
    """Raise AuditRefused unless the chain would take this record: a caller that must not
    fail half-way (several records for one transaction) checks them all before writing any."""
    check_details(details)
    for name, text in (("actor", actor), ("subject", subject)):
        if not isinstance(text, str) or _RAW_IDENTIFIER.search(text):
            raise AuditRefused(f"audit {name} must be an id or pseudonym, not a raw identifier")


def chain_append(
    prev: AuditRecord | None,
    *,
    at_ns: int,
    actor: str,
    action: AuditAction,
    subject: str,
    details: Mapping[str, Any] | None = None,
) -> AuditRecord:
    """The record that follows `prev` (None: the first record of a log)."""
    details = dict(details or {})
    check_entry(actor, subject, details)
    action = AuditAction(action)
    seq = 1 if prev is None else prev.seq + 1
    prev_hash = GENESIS_HASH if prev is None else prev.hash
    # Round-trip through JSON so the record holds exactly what a store will read back.
    details = json.loads(canonical_json(details))
    body = _body(seq, int(at_ns), actor, action, subject, details, prev_hash)
    return AuditRecord(
        seq, int(at_ns), actor, action, subject, details, prev_hash, record_hash(body)
    )


class ChainVerifier:
    """`verify`, one record at a time: a store can report an unreadable row in between."""

    def __init__(self, anchor: Anchor | None = None) -> None:
        self.anchor = anchor
        self.checked = 0
        self._expected_seq = 1
        self._prev_hash = GENESIS_HASH
        self._result: VerifyResult | None = None

    @property
    def failed(self) -> bool:
        return self._result is not None

    def fail(self, seq: int, problem: str) -> None:
        if self._result is None:
            self._result = VerifyResult(False, self.checked, seq, problem)

    def feed(self, record: AuditRecord) -> bool:
        """Check the next record; False once the chain is broken (stop feeding)."""
        if self._result is not None:
            return False
        self.checked += 1
        seq, expected = record.seq, self._expected_seq
        if seq > expected:
            missing = f"#{expected}" if seq == expected + 1 else f"#{expected}–#{seq - 1}"
            self.fail(expected, f"record {missing} missing (deleted); next is #{seq}")
        elif seq < expected:
            self.fail(seq, f"record #{seq} appears after #{expected - 1} (reordered or repeated)")
        elif record.hash != record_hash(record.body()):
            self.fail(seq, "contents do not match its hash (record altered)")
        elif record.prev_hash != self._prev_hash:
            before = "the genesis value" if seq == 1 else f"the hash of record #{seq - 1}"
            self.fail(
                seq,
                f"prev_hash is not {before} (a record before it was altered and re-hashed,"
                " replaced or removed)",
            )
        elif self.anchor is not None and seq == self.anchor.seq and record.hash != self.anchor.hash:
            self.fail(seq, f"hash differs from the anchor {self.anchor} (log rewritten)")
        if self._result is not None:
            return False
        self._expected_seq = seq + 1
        self._prev_hash = record.hash
        return True

    def result(self) -> VerifyResult:
        if self._result is not None:
            return self._result
        last = self._expected_seq - 1
        if self.anchor is not None and last < self.anchor.seq:
            return VerifyResult(
                False,
                self.checked,
                last + 1,
                f"log ends at #{last} but the anchor names #{self.anchor.seq}"
                " (records removed from the end)",
            )
        return VerifyResult(True, self.checked)


def verify(records: Iterable[AuditRecord], *, anchor: Anchor | None = None) -> VerifyResult:
    """Check `records` in stored order from the first; stops at the first broken record."""
    verifier = ChainVerifier(anchor)
    for record in records:
        if not verifier.feed(record):
            break
    return verifier.result()


__all__ = [
    "GENESIS_HASH",
    "Anchor",
    "AuditAction",
    "AuditEntry",
    "AuditRecord",
    "AuditRefused",
    "ChainVerifier",
    "VerifyResult",
    "canonical_json",
    "chain_append",
    "check_details",
    "check_entry",
    "find_raw_identifier",
    "record_hash",
    "verify",
]
