"""Time limits (限时办理) and level-by-level escalation (逐级上报) of open alerts (R5.4).

Deadlines are columns of the alert (`ack_deadline_ns`, `resolve_deadline_ns`), set from the
routing policy when the alert is raised, so nothing sleeps: whoever calls `Escalator.due` —
a periodic task, any gateway process, after a restart — finds the alerts whose deadline has
passed and moves each one level up (grid chief → community duty desk → street office by
default), records and audits it, stores the next deadline and returns whom to notify (with
an outbox, already queued in the same transaction).

- Not acknowledged by its ack deadline: escalates; the next level gets the same time again.
  Acknowledging clears the ack deadline, which stops this chain.
- Acknowledged but not resolved by its resolve deadline: escalates the same way, with the
  resolve time limit; resolving stops it.
- Past the last level the alert is marked ``exhausted`` once for that deadline and left open:
  the street office already has it; there is no one higher to tell.
- A member of an open incident does not escalate on its own: the incident does.

Two processes calling `due` at once do not escalate one alert twice: rows are locked
(PostgreSQL, ``SKIP LOCKED``) or writers are serial (SQLite), and every row is re-checked
under the lock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import aliased

from gateway.alerts.engine import dispatch_step
from gateway.alerts.model import Alert, AlertState, Severity
from gateway.alerts.routing import Dispatch, NotificationSink, Router, RoutingPolicy
from gateway.alerts.store import OPEN_STATE_VALUES, AlertRow, AlertStore, AlertTx, to_alert

ESCALATOR_ACTOR = "alert-escalator"
NS_PER_S = 1_000_000_000
_UNACKED = (AlertState.RAISED.value, AlertState.NOTIFIED.value)

Reason = Literal["ack_overdue", "resolve_overdue"]


@dataclass(frozen=True, slots=True)
class Escalation:
    """One alert moved up a level (or found at the top: `exhausted`)."""

    alert: Alert  # as it is after the step
    reason: Reason
    from_level: int
    to_level: int
    event_seq: int
    exhausted: bool
    dispatch: Dispatch | None  # what to send; None when exhausted (nobody higher)

    @property
    def step(self) -> str:
        return "exhausted" if self.exhausted else "escalated"


class Escalator:
    """Escalates overdue alerts; holds no timers, so any instance continues any other's work."""

    def __init__(
        self,
        store: AlertStore,
        router: Router,
        *,
        clock_ns: Callable[[], int] = time.time_ns,
        outbox: NotificationSink | None = None,
        batch: int = 200,
    ) -> None:
        self.store = store
        self.router = router
        self.outbox = outbox
        self._clock_ns = clock_ns
        self._batch = batch

    @property
    def policy(self) -> RoutingPolicy:
        return self.router.policy

    def due(self, now_ns: int | None = None) -> list[Escalation]:
        """Escalate every alert overdue at `now_ns` (default: the clock) by one level.

        At most `batch` alerts per call, oldest alert first; call again while it returns
        a full batch.
        """
        now = self._clock_ns() if now_ns is None else now_ns
        out: list[Escalation] = []
        with self.store.transaction() as tx:
            for row in self._overdue(tx, now):
                reason = self._reason(row, now)
                if reason is None:  # changed since it was selected
                    continue
                before = row.escalation_level
                seq, exhausted = self._escalate(tx, row, reason, now)
                dispatch = None
                if not exhausted:
                    dispatch = dispatch_step(
                        tx,
                        row,
                        self.router,
                        self.outbox,
                        event_seq=seq,
                        step="escalated",
                        level=row.escalation_level,
                        now=now,
                        actor=ESCALATOR_ACTOR,
                    )
                out.append(
                    Escalation(
                        alert=to_alert(row),
                        reason=reason,
                        from_level=before,
                        to_level=row.escalation_level,
                        event_seq=seq,
                        exhausted=exhausted,
                        dispatch=dispatch,
                    )
                )
        return out

    def next_deadline(self) -> int | None:
        """The earliest stored deadline of an open alert: when `due` has work next."""
        with self.store.registry.reading() as s:
            acks = s.scalars(
                select(AlertRow.ack_deadline_ns)
                .where(AlertRow.state.in_(_UNACKED), AlertRow.ack_deadline_ns.is_not(None))
                .order_by(AlertRow.ack_deadline_ns)
                .limit(1)
            ).first()
            resolves = s.scalars(
                select(AlertRow.resolve_deadline_ns)
                .where(
                    AlertRow.state.in_(OPEN_STATE_VALUES),
                    AlertRow.resolve_deadline_ns.is_not(None),
                )
                .order_by(AlertRow.resolve_deadline_ns)
                .limit(1)
            ).first()
        found = [d for d in (acks, resolves) if d is not None]
        return min(found) if found else None

    # -- internals -----------------------------------------------------------------------

    def _overdue(self, tx: AlertTx, now: int) -> list[AlertRow]:
        incident = aliased(AlertRow)
        stmt = (
            select(AlertRow)
            .outerjoin(incident, incident.id == AlertRow.incident_id)
            .where(
                or_(
                    and_(AlertRow.state.in_(_UNACKED), AlertRow.ack_deadline_ns <= now),
                    and_(
                        AlertRow.state.in_(OPEN_STATE_VALUES),
                        AlertRow.resolve_deadline_ns <= now,
                    ),
                ),
                # Grouped members wait while their incident is open: it escalates for them.
                or_(AlertRow.incident_id.is_(None), incident.state.not_in(OPEN_STATE_VALUES)),
            )
            .order_by(AlertRow.id)
            .limit(self._batch)
            .with_for_update(of=AlertRow, skip_locked=True)
        )
        return list(tx.session.scalars(stmt))

    def _reason(self, row: AlertRow, now: int) -> Reason | None:
        if row.state in _UNACKED and row.ack_deadline_ns is not None and row.ack_deadline_ns <= now:
            return "ack_overdue"
        open_ = row.state in OPEN_STATE_VALUES
        if open_ and row.resolve_deadline_ns is not None and row.resolve_deadline_ns <= now:
            return "resolve_overdue"
        return None

    def _escalate(self, tx: AlertTx, row: AlertRow, reason: Reason, now: int) -> tuple[int, bool]:
        deadlines = self.policy.deadlines(Severity(row.severity), row.kind)
        before = row.escalation_level
        if before >= self.policy.max_level:
            if reason == "ack_overdue":
                row.ack_deadline_ns = None
            else:
                row.resolve_deadline_ns = None
            seq = tx.step(
                row,
                "exhausted",
                actor=ESCALATOR_ACTOR,
                at_ns=now,
                detail={"reason": reason, "level": before},
            )
            return seq, True
        row.escalation_level = before + 1
        if reason == "ack_overdue":
            row.ack_deadline_ns = now + deadlines.ack_within_s * NS_PER_S
        else:
            row.resolve_deadline_ns = now + deadlines.resolve_within_s * NS_PER_S
        roles = [r.value for r in self.policy.levels[row.escalation_level - 1].roles]
        seq = tx.step(
            row,
            "escalated",
            actor=ESCALATOR_ACTOR,
            at_ns=now,
            detail={"reason": reason, "from": before, "to": row.escalation_level, "roles": roles},
        )
        return seq, False


__all__ = ["ESCALATOR_ACTOR", "Escalation", "Escalator"]
