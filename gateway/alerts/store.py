"""Alert state in the registry's database (R5.4, R5.5): alerts and every step taken on them.

The tables live beside the registry's (same engine, so the place an alert is about and the
members it goes to are in one database) but under their own `MetaData`: the registry's models
are not touched, and `AlertStore` creates what is missing when it opens.

One open alert per (place, key) is a *database* rule, not a check in code: a partial unique
index over the open states (SQLite and PostgreSQL both have them). Two gateway processes that
raise the same condition at once get one INSERT through; the other sees a unique violation and
counts a repeat instead (`AlertEngine`).

Every step (raised, upgraded, grouped, notified, acknowledged, escalated …) is a row of
`alert_events` numbered per alert (`event_seq`, also the notification idempotency key's middle
part) and a record in the audit chain (R3.6). Audit records are appended just before the
database transaction commits, so a step whose audit record cannot be written is rolled back.
Nothing personal is kept here: a subject is a pseudonym, feedback is scrubbed of ID and phone
numbers (`lifecycle`), and steps' details hold ids, codes and counts only.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Text,
    inspect,
    select,
)
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from devices.location import Location
from devices.places import PlaceLevel
from gateway.alerts.model import OPEN_STATES, Alert, AlertState, Severity
from gateway.registry import NAMING_CONVENTION, AuditSink, Registry
from gateway.registry.queries import under
from privacy.audit import AuditAction, AuditEntry, AuditRecord, check_entry

log = logging.getLogger(__name__)

CODE_LEN = 64  # a place code, device id, rule id or condition key
KEY_LEN = 5 * CODE_LEN + 4  # a place key: five codes and their separators
REF_LEN = 160  # a pseudonym "{kid}:{token}"
STEP_LEN = 32
FEEDBACK_LEN = 2000
OPEN_STATE_VALUES: tuple[str, ...] = tuple(sorted(s.value for s in OPEN_STATES))
ALL_STATE_VALUES: tuple[str, ...] = tuple(s.value for s in AlertState)
SUBJECT_PREFIX = "alert:"


def subject_of(alert_id: int) -> str:
    """The audit subject of an alert."""
    return f"{SUBJECT_PREFIX}{alert_id}"


class AlertBase(DeclarativeBase):
    # Own metadata: the registry's `Base` is another team's; names stable for migrations.
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


_ID = BigInteger().with_variant(Integer, "sqlite")  # SQLite: INTEGER PRIMARY KEY is the rowid


def _in(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class AlertRow(AlertBase):
    __tablename__ = "alerts"
    __table_args__ = (
        CheckConstraint("severity BETWEEN 1 AND 4", name="severity"),
        CheckConstraint(_in("state", ALL_STATE_VALUES), name="state"),
        CheckConstraint("rating IS NULL OR rating BETWEEN 1 AND 5", name="rating"),
        CheckConstraint("count >= 1", name="count"),
    )

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    place: Mapped[str] = mapped_column(String(KEY_LEN))
    key: Mapped[str] = mapped_column(String(CODE_LEN))
    rule_id: Mapped[str] = mapped_column(String(CODE_LEN), default="")
    kind: Mapped[str] = mapped_column(String(CODE_LEN))
    severity: Mapped[int] = mapped_column(SmallInteger)
    state: Mapped[str] = mapped_column(String(16), index=True)
    community: Mapped[str] = mapped_column(String(CODE_LEN))
    grid: Mapped[str] = mapped_column(String(CODE_LEN), default="")
    building: Mapped[str] = mapped_column(String(CODE_LEN), default="")
    unit: Mapped[str] = mapped_column(String(CODE_LEN), default="")
    room: Mapped[str] = mapped_column(String(CODE_LEN), default="")
    level: Mapped[str] = mapped_column(String(16))
    first_ns: Mapped[int] = mapped_column(BigInteger)
    last_ns: Mapped[int] = mapped_column(BigInteger)
    count: Mapped[int] = mapped_column(Integer, default=1)
    active: Mapped[bool] = mapped_column(Boolean, default=True)  # the condition still holds
    auto_clear: Mapped[bool] = mapped_column(Boolean, default=True)
    device_id: Mapped[str] = mapped_column(String(CODE_LEN), default="")
    subject_ref: Mapped[str] = mapped_column(String(REF_LEN), default="")
    incident_key: Mapped[str] = mapped_column(String(CODE_LEN), default="")  # Condition.incident_of
    incident_id: Mapped[int | None] = mapped_column(ForeignKey("alerts.id"), index=True)
    escalation_level: Mapped[int] = mapped_column(SmallInteger, default=0)
    ack_deadline_ns: Mapped[int | None] = mapped_column(BigInteger, index=True)
    resolve_deadline_ns: Mapped[int | None] = mapped_column(BigInteger, index=True)
    event_seq: Mapped[int] = mapped_column(Integer, default=0)  # the last step's number
    raised_ns: Mapped[int] = mapped_column(BigInteger)  # gateway time of the raise
    updated_ns: Mapped[int] = mapped_column(BigInteger, index=True)  # live feeds poll by it
    ended_ns: Mapped[int | None] = mapped_column(BigInteger)  # left the open states
    feedback: Mapped[str | None] = mapped_column(Text)
    rating: Mapped[int | None] = mapped_column(SmallInteger)


# The rule itself: at most one *open* alert per (place, key). Closed ones are history.
Index(
    "uq_alerts_open_place_key",
    AlertRow.place,
    AlertRow.key,
    unique=True,
    sqlite_where=AlertRow.state.in_(OPEN_STATE_VALUES),
    postgresql_where=AlertRow.state.in_(OPEN_STATE_VALUES),
)
# Finding a recently cleared alert to reopen (a flapping condition).
Index("ix_alerts_place_key_ended", AlertRow.place, AlertRow.key, AlertRow.ended_ns)


class AlertEventRow(AlertBase):
    """One step of an alert: who (a member id or a gateway component) and when."""

    __tablename__ = "alert_events"

    alert_id: Mapped[int] = mapped_column(
        ForeignKey("alerts.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    at_ns: Mapped[int] = mapped_column(BigInteger)
    actor: Mapped[str] = mapped_column(String(CODE_LEN))
    step: Mapped[str] = mapped_column(String(STEP_LEN))
    state: Mapped[str] = mapped_column(String(16))  # the state after the step
    severity: Mapped[int] = mapped_column(SmallInteger)
    escalation_level: Mapped[int] = mapped_column(SmallInteger, default=0)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


# -- values handed out --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AlertEvent:
    alert_id: int
    seq: int
    at_ns: int
    actor: str
    step: str
    state: AlertState
    severity: Severity
    escalation_level: int
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AlertDetail:
    """An alert with what `Alert` leaves out: for the API and the screens."""

    alert: Alert
    rule_id: str
    event_seq: int
    active: bool
    auto_clear: bool
    incident_key: str
    raised_ns: int
    updated_ns: int
    ended_ns: int | None
    feedback: str | None
    rating: int | None


def to_alert(row: AlertRow) -> Alert:
    return Alert(
        id=row.id,
        place=row.place,
        key=row.key,
        kind=row.kind,
        severity=Severity(row.severity),
        state=AlertState(row.state),
        location=Location(row.community, row.grid, row.building, row.unit, row.room),
        level=PlaceLevel(row.level),
        first_ns=row.first_ns,
        last_ns=row.last_ns,
        count=row.count,
        device_id=row.device_id,
        subject_ref=row.subject_ref,
        incident_id=row.incident_id,
        escalation_level=row.escalation_level,
        ack_deadline_ns=row.ack_deadline_ns,
        resolve_deadline_ns=row.resolve_deadline_ns,
    )


def to_detail(row: AlertRow) -> AlertDetail:
    return AlertDetail(
        alert=to_alert(row),
        rule_id=row.rule_id,
        event_seq=row.event_seq,
        active=row.active,
        auto_clear=row.auto_clear,
        incident_key=row.incident_key,
        raised_ns=row.raised_ns,
        updated_ns=row.updated_ns,
        ended_ns=row.ended_ns,
        feedback=row.feedback,
        rating=row.rating,
    )


def _to_event(row: AlertEventRow) -> AlertEvent:
    return AlertEvent(
        alert_id=row.alert_id,
        seq=row.seq,
        at_ns=row.at_ns,
        actor=row.actor,
        step=row.step,
        state=AlertState(row.state),
        severity=Severity(row.severity),
        escalation_level=row.escalation_level,
        detail=dict(row.detail or {}),
    )


def is_open(row: AlertRow) -> bool:
    return row.state in OPEN_STATE_VALUES


# -- transactions -------------------------------------------------------------------------


class BatchAuditSink(AuditSink, Protocol):
    """The audit log as alert transactions use it: all of a transaction's records at once."""

    def append_many(self, entries: Sequence[AuditEntry]) -> list[AuditRecord]: ...


ROLLED_BACK = "rolled_back"  # the step of a record saying earlier records' transaction failed


class AlertTx:
    """One write transaction over alerts: steps recorded here are audited before commit."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._audits: list[AuditEntry] = []
        self.delivery_refusals: dict[int, str] = {}  # alert id → why the outbox refused

    def find_open(self, place: str, key: str) -> AlertRow | None:
        return self.session.scalars(
            select(AlertRow)
            .where(
                AlertRow.place == place,
                AlertRow.key == key,
                AlertRow.state.in_(OPEN_STATE_VALUES),
            )
            .with_for_update()
        ).first()

    def lock(self, alert_id: int) -> AlertRow | None:
        """The row, locked for this transaction (PostgreSQL; SQLite writers are serial)."""
        return self.session.scalars(
            select(AlertRow).where(AlertRow.id == alert_id).with_for_update()
        ).first()

    def step(
        self,
        row: AlertRow,
        step: str,
        *,
        actor: str,
        at_ns: int,
        detail: Mapping[str, Any] | None = None,
    ) -> int:
        """Record a step on `row` (already in its new state) and queue its audit record.

        Returns the step's number, which notifications for it use in their idempotency key.
        """
        seq = (row.event_seq or 0) + 1
        info = dict(detail or {})
        # The unit is the finest place named: a room is a household, not needed to audit.
        place = "/".join(p for p in (row.community, row.grid, row.building, row.unit) if p)
        entry = AuditEntry(
            actor,
            AuditAction.ALERT_ACTION,
            subject_of(row.id),
            {
                "step": step,
                "seq": seq,
                "at_ns": at_ns,
                "state": row.state,
                "severity": Severity(row.severity).name,
                "kind": row.kind,
                "key": row.key,
                "place": place,
                "escalation_level": row.escalation_level,
                **info,
            },
        )
        # Refused now, before anything changes: the step fails, not the transaction's audit
        # half-way through (AuditRefused is not retryable: the caller isolates the condition).
        check_entry(entry.actor, entry.subject, entry.details or {})
        row.event_seq = seq
        row.updated_ns = at_ns
        self.session.add(
            AlertEventRow(
                alert_id=row.id,
                seq=seq,
                at_ns=at_ns,
                actor=actor,
                step=step,
                state=row.state,
                severity=row.severity,
                escalation_level=row.escalation_level,
                detail=info,
            )
        )
        self._audits.append(entry)
        return row.event_seq

    def flush_audit(self, audit: BatchAuditSink) -> list[AuditRecord]:
        """Chain every step's record in one audit transaction (all or none)."""
        written = audit.append_many(self._audits)
        self._audits.clear()
        return written


class AlertStore:
    """Alerts and their steps in the registry's database; returns frozen values only."""

    def __init__(self, registry: Registry, audit: BatchAuditSink) -> None:
        self.registry = registry
        self.audit = audit
        self.create_tables()

    def create_tables(self) -> None:
        """Create what is missing; a second process creating them at the same time is fine."""
        try:
            AlertBase.metadata.create_all(self.registry.engine)
        except (OperationalError, ProgrammingError):
            # Lost a race with another process's CREATE: by now the tables exist.
            log.info("alert tables were created concurrently; checking again")
            AlertBase.metadata.create_all(self.registry.engine)

    @contextmanager
    def transaction(self) -> Iterator[AlertTx]:
        """A write transaction; its steps are audited, then it commits (or neither).

        The audit log is another file, so the two cannot commit as one: the records go first
        (all or none), then the database commits. Should that commit fail, a `rolled_back`
        record names the records that describe nothing, and `gridgate audit verify` checks
        every other alert record against the alert it names.
        """
        written: list[AuditRecord] = []
        try:
            with self.registry.writing() as session:
                tx = AlertTx(session)
                yield tx
                session.flush()
                written = tx.flush_audit(self.audit)
        except BaseException:
            if written:
                self._record_rollback(written)
            raise

    def _record_rollback(self, written: Sequence[AuditRecord]) -> None:
        try:
            self.audit.append(
                "alert-store",
                AuditAction.ALERT_ACTION,
                "alerts",
                {"step": ROLLED_BACK, "audit_seqs": [r.seq for r in written]},
            )
        except Exception as exc:  # the audit log itself failing: verify will name them
            log.error("could not record the rollback of audit records %s: %s",
                      [r.seq for r in written], exc)  # fmt: skip

    # -- reading ------------------------------------------------------------------------

    def alert(self, alert_id: int) -> Alert | None:
        with self.registry.reading() as s:
            row = s.get(AlertRow, alert_id)
            return None if row is None else to_alert(row)

    def detail(self, alert_id: int) -> AlertDetail | None:
        with self.registry.reading() as s:
            row = s.get(AlertRow, alert_id)
            return None if row is None else to_detail(row)

    def open_alert(self, place: str, key: str) -> Alert | None:
        with self.registry.reading() as s:
            row = s.scalars(
                select(AlertRow).where(
                    AlertRow.place == place,
                    AlertRow.key == key,
                    AlertRow.state.in_(OPEN_STATE_VALUES),
                )
            ).first()
            return None if row is None else to_alert(row)

    def alerts(
        self,
        *,
        states: Sequence[AlertState] | None = None,
        place_prefix: str = "",
        limit: int = 500,
    ) -> list[Alert]:
        """Newest first; `place_prefix` (a place key) limits to that place and what is in it."""
        stmt = select(AlertRow).order_by(AlertRow.id.desc()).limit(limit)
        if states is not None:
            stmt = stmt.where(AlertRow.state.in_([s.value for s in states]))
        if place_prefix:
            stmt = stmt.where(under(AlertRow.place, [place_prefix]))
        with self.registry.reading() as s:
            return [to_alert(r) for r in s.scalars(stmt)]

    def open_alerts(self, *, place_prefix: str = "", limit: int = 500) -> list[Alert]:
        return self.alerts(states=sorted(OPEN_STATES), place_prefix=place_prefix, limit=limit)

    def members_of(self, incident_id: int) -> list[Alert]:
        """The alerts grouped into an incident."""
        with self.registry.reading() as s:
            rows = s.scalars(
                select(AlertRow).where(AlertRow.incident_id == incident_id).order_by(AlertRow.id)
            )
            return [to_alert(r) for r in rows]

    def events(self, alert_id: int) -> list[AlertEvent]:
        with self.registry.reading() as s:
            rows = s.scalars(
                select(AlertEventRow)
                .where(AlertEventRow.alert_id == alert_id)
                .order_by(AlertEventRow.seq)
            )
            return [_to_event(r) for r in rows]


def unbacked_alert_records(registry: Registry, records: Iterable[AuditRecord]) -> list[int]:
    """Audit seqs of alert records that describe nothing in the database: a step (alert id,
    step number, step name) with no `alert_events` row, or an alert that does not exist —
    unless a later `rolled_back` record owns up to them. What `audit verify` reports."""
    rolled_back: set[int] = set()
    claims: list[tuple[int, int, int | None, str]] = []  # audit seq, alert id, step seq, step
    for rec in records:
        if rec.action is not AuditAction.ALERT_ACTION:
            continue
        details = rec.details
        if details.get("step") == ROLLED_BACK:
            rolled_back.update(int(n) for n in details.get("audit_seqs", ()))
            continue
        if not rec.subject.startswith(SUBJECT_PREFIX):
            continue
        try:
            alert_id = int(rec.subject.removeprefix(SUBJECT_PREFIX))
        except ValueError:
            claims.append((rec.seq, -1, None, ""))
            continue
        seq = details.get("seq")
        step = details.get("step")
        if isinstance(seq, int) and isinstance(step, str):
            claims.append((rec.seq, alert_id, seq, step))
        else:  # delivery reports and other records about an alert, not a step of it
            claims.append((rec.seq, alert_id, None, ""))
    if not claims:
        return []
    if not inspect(registry.engine).has_table(AlertRow.__tablename__):
        return [audit_seq for audit_seq, *_ in claims if audit_seq not in rolled_back]
    with registry.reading() as s:
        alerts = set(s.scalars(select(AlertRow.id)))
        rows = s.execute(select(AlertEventRow.alert_id, AlertEventRow.seq, AlertEventRow.step))
        steps = {(int(a), int(n), str(step)) for a, n, step in rows}
    bad: list[int] = []
    for audit_seq, alert_id, seq, step in claims:
        if audit_seq in rolled_back:
            continue
        found = alert_id in alerts if seq is None else (alert_id, seq, step) in steps
        if not found:
            bad.append(audit_seq)
    return bad


__all__ = [
    "ALL_STATE_VALUES",
    "FEEDBACK_LEN",
    "OPEN_STATE_VALUES",
    "ROLLED_BACK",
    "AlertBase",
    "AlertDetail",
    "AlertEvent",
    "AlertEventRow",
    "AlertRow",
    "AlertStore",
    "AlertTx",
    "BatchAuditSink",
    "is_open",
    "subject_of",
    "to_alert",
    "to_detail",
    "unbacked_alert_records",
]
