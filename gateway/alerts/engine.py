"""From conditions to alerts (R5.5): one open alert per (place, condition), incidents, clearing.

- A condition at a place with no open alert of its key *raises* one (deadlines from the routing
  policy are stored on it at once, so escalation needs no running timer).
- Again while open: a *repeat* (count and last-seen only; no notification, no audit record —
  a leak reported every ten seconds is one alert, not a storm). A higher severity *upgrades*
  the alert, tightens its deadlines and is notified again.
- A condition with ``incident_of`` belongs to an incident (many smoke detectors of one
  building → one ``fire_incident`` at the building): while that incident alert is open, its
  members are *grouped* into it and their own notifications and escalation are inhibited; the
  incident is what people are told about. An incident raised after some members were already
  open takes them in too.
- ``active=False`` *clears* an auto-clearing alert that nobody has taken yet. An alert someone
  acknowledged (they may be on the way) and a rule that wants a person to decide
  (``auto_clear=False``) stay open: the ending is recorded and the alert waits for `resolve`.
- Whoever was told of an alert is told when it clears (they can stand down), and when it
  comes back within ``reopen_within_s`` of that (it *reopens*, the same alert). Once each:
  after that a flapping detector reopens and clears its alert silently, so the people told
  get at most raise, upgrade, clear and return — not a message per flap.

State is in the registry's database (`AlertStore`), so a restart continues where it was, and
the database's unique index, not timing, keeps two gateway processes from opening the same
alert twice: the loser of a race sees a unique violation and counts a repeat.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from devices.places import ancestor_keys
from gateway.alerts.model import Alert, AlertState, Condition, Severity
from gateway.alerts.routing import (
    Dispatch,
    NotificationSink,
    Router,
    RoutingPolicy,
    load_routing_policy,
)
from gateway.alerts.store import (
    OPEN_STATE_VALUES,
    AlertEventRow,
    AlertRow,
    AlertStore,
    AlertTx,
    BatchAuditSink,
    is_open,
    to_alert,
)
from gateway.registry import Registry
from gateway.registry.queries import chunks

log = logging.getLogger(__name__)

ENGINE_ACTOR = "alert-engine"
NS_PER_S = 1_000_000_000
_UNTAKEN = (AlertState.RAISED.value, AlertState.NOTIFIED.value)


class ChangeKind(StrEnum):
    RAISED = "raised"  # new alert: notify
    REPEATED = "repeated"  # count + 1: nothing to send
    UPGRADED = "upgraded"  # severity went up: notify again
    CLEARED = "cleared"  # the condition ended by itself: notify the first time
    REOPENED = "reopened"  # back soon after clearing: notify if the clearing was
    GROUPED = "grouped"  # part of an open incident: the incident is notified instead


@dataclass(frozen=True, slots=True)
class AlertChange:
    kind: ChangeKind
    alert: Alert  # as it is after the change (the whole batch)
    event_seq: int  # the step's number (0 for a repeat, which records no step)
    previous_severity: Severity | None = None  # for upgrades
    dispatch: Dispatch | None = None  # what was sent for it, when the engine has a router
    delivery_refused: str = ""  # why the outbox refused its notifications (a bug: report it)
    quiet: bool = False  # a clearing or reopening nobody is told about (a flap, or untold)

    @property
    def notify(self) -> bool:
        """Whether the alert's recipients are to be told: raised, upgraded, and the first
        clearing and return of an alert people were told about; never a grouped one."""
        return self.kind in _TOLD and not self.quiet

    @property
    def step(self) -> str:
        return self.kind.value


_TOLD = frozenset({ChangeKind.RAISED, ChangeKind.UPGRADED, ChangeKind.CLEARED, ChangeKind.REOPENED})


class AlertEngine:
    """Keeps alert state for the conditions `rules` find; `handle` is safe across processes.

    With a `router`, every change to notify is routed in the same transaction (its
    `dispatch`); with an `outbox` as well, the notifications are queued there before the
    transaction commits, so an alert is never recorded without its deliveries (R5.6).
    `policy` (deadlines) defaults to the router's, else the shipped routing file.
    """

    def __init__(
        self,
        registry: Registry,
        audit: BatchAuditSink,
        *,
        clock_ns: Callable[[], int] = time.time_ns,
        policy: RoutingPolicy | None = None,
        router: Router | None = None,
        outbox: NotificationSink | None = None,
        store: AlertStore | None = None,
    ) -> None:
        if outbox is not None and router is None:
            raise ValueError("an outbox needs a router (whom to send to)")
        self.registry = registry
        if policy is None:
            policy = router.policy if router is not None else load_routing_policy()
        self.policy = policy
        self.router = router
        self.outbox = outbox
        self.store = store if store is not None else AlertStore(registry, audit)
        self._clock_ns = clock_ns

    def handle(self, conditions: Sequence[Condition]) -> list[AlertChange]:
        """Apply `conditions` in one transaction; returns what happened, in order.

        Incident conditions go first so that members arriving in the same batch find them.
        """
        conditions = self._without_idle_endings(conditions)
        if not conditions:
            return []
        ordered = sorted(conditions, key=lambda c: bool(c.incident_of))
        changes: list[AlertChange] = []
        with self.store.transaction() as tx:
            for cond in ordered:
                changes.extend(self._apply(tx, cond))
            tx.session.flush()
            dispatches: dict[int, Dispatch] = {}
            if self.router is not None:
                for i, change in enumerate(changes):
                    row = tx.session.get(AlertRow, change.alert.id)
                    if change.notify and row is not None:
                        dispatches[i] = dispatch_step(
                            tx,
                            row,
                            self.router,
                            self.outbox,
                            event_seq=change.event_seq,
                            step=change.step,
                            level=row.escalation_level,
                            now=self._clock_ns(),
                        )
            # Snapshots after everything: a member grouped later in the batch shows its incident.
            final = {c.alert.id: tx.session.get(AlertRow, c.alert.id) for c in changes}
            refused = tx.delivery_refusals
            changes = [
                AlertChange(
                    c.kind,
                    to_alert(row),
                    c.event_seq,
                    c.previous_severity,
                    dispatches.get(i),
                    refused.get(c.alert.id, "") if c.notify else "",
                    c.quiet,
                )
                if (row := final[c.alert.id]) is not None
                else c
                for i, c in enumerate(changes)
            ]
        return changes

    def _without_idle_endings(self, conditions: Sequence[Condition]) -> list[Condition]:
        """Drop endings of conditions that have no open alert, found by a read.

        Rules may report "still fine" for every normal reading; taking the write lock for
        each of those would serialise the pipeline for nothing.
        """
        ended = {(c.place, c.key) for c in conditions if not c.active}
        if not ended:
            return list(conditions)
        open_pairs: set[tuple[str, str]] = set()
        places = sorted({p for p, _ in ended})
        keys = sorted({k for _, k in ended})
        with self.registry.reading() as s:
            for part in chunks(places):
                rows = s.execute(
                    select(AlertRow.place, AlertRow.key).where(
                        AlertRow.place.in_(part),
                        AlertRow.key.in_(keys),
                        AlertRow.state.in_(OPEN_STATE_VALUES),
                    )
                )
                open_pairs.update((place, key) for place, key in rows)
        return [c for c in conditions if c.active or (c.place, c.key) in open_pairs]

    # -- one condition -------------------------------------------------------------------

    def _apply(self, tx: AlertTx, cond: Condition) -> list[AlertChange]:
        now = self._clock_ns()
        if not cond.active:
            return self._ended(tx, cond, now)
        row = tx.find_open(cond.place, cond.key)
        reopened: list[AlertChange] = []
        if row is None and (found := self._reopen(tx, cond, now)) is not None:
            row, seq = found
            quiet = not self._tell_about(tx, row, "reopened")
            reopened.append(AlertChange(ChangeKind.REOPENED, to_alert(row), seq, quiet=quiet))
        if row is None:
            row = self._insert(tx, cond, now)
            if row is not None:
                return self._raised(tx, row, cond, now)
            # Another process opened it between our look and our insert: a repeat.
            row = tx.find_open(cond.place, cond.key)
            if row is None:  # pragma: no cover - it was closed again in between
                raise RuntimeError(f"alert {cond.place} {cond.key} vanished during a race")
        again = self._again(tx, row, cond, now)
        if reopened and not any(c.notify for c in again):
            # the reopening is the news (an upgrade would tell it already); a plain repeat
            # adds nothing to it
            return reopened + [c for c in again if c.kind is not ChangeKind.REPEATED]
        return again

    def _tell_about(self, tx: AlertTx, row: AlertRow, step: str) -> bool:
        """Whether `step` (cleared, reopened) of `row` is news to the people told of it: they
        were told of the alert, it is not inhibited by an incident, and it is the first such
        step (the step being taken is recorded already; for a return, the one clearing told
        before it)."""
        if self._inhibited(tx, row):
            return False
        steps = tx.session.scalars(
            select(AlertEventRow.step).where(
                AlertEventRow.alert_id == row.id,
                AlertEventRow.step.in_(("notified", "cleared", "reopened")),
            )
        ).all()
        if "notified" not in steps:
            return False
        if step == "cleared":
            return steps.count("cleared") == 1 and "reopened" not in steps
        return steps.count("cleared") == 1 and steps.count("reopened") == 1

    def _reopen(self, tx: AlertTx, cond: Condition, now: int) -> tuple[AlertRow, int] | None:
        """The alert of this condition that cleared by itself less than `reopen_within_s`
        ago, open again in the state it was cleared from; None if there is none (or another
        process opened one meanwhile).

        Its deadlines are the ones it had, never later: a flapping alert nobody acknowledges
        must still escalate, not push its time limit forward with every flap. One already
        passed falls due at once."""
        window = self.policy.reopen_within_s * NS_PER_S
        if not window:
            return None
        row = tx.session.scalars(
            select(AlertRow)
            .where(
                AlertRow.place == cond.place,
                AlertRow.key == cond.key,
                AlertRow.state == AlertState.CLEARED.value,
                AlertRow.ended_ns >= now - window,
            )
            .order_by(AlertRow.id.desc())
            .limit(1)
        ).first()
        if row is None:
            return None
        told = tx.session.scalars(
            select(AlertEventRow.seq).where(
                AlertEventRow.alert_id == row.id, AlertEventRow.step == "notified"
            )
        ).first()
        deadlines = self.policy.deadlines(Severity(row.severity), row.kind)
        try:
            with tx.session.begin_nested():
                row.state = (AlertState.NOTIFIED if told is not None else AlertState.RAISED).value
                row.ended_ns = None
                ack_ns, resolve_ns = (
                    deadlines.ack_within_s * NS_PER_S,
                    deadlines.resolve_within_s * NS_PER_S,
                )
                # each escalation level gave the alert the acknowledgement time again
                row.ack_deadline_ns = max(now, row.raised_ns + (row.escalation_level + 1) * ack_ns)
                row.resolve_deadline_ns = max(now, row.raised_ns + resolve_ns)
                tx.session.flush()
        except IntegrityError:
            log.info("alert %s %s was opened concurrently; counting a repeat", cond.place, cond.key)
            return None
        seq = tx.step(row, "reopened", actor=ENGINE_ACTOR, at_ns=now, detail={"count": row.count})
        return row, seq

    def _insert(self, tx: AlertTx, cond: Condition, now: int) -> AlertRow | None:
        """INSERT under a savepoint; None if the unique index says it is already open."""
        loc = cond.location
        deadlines = self.policy.deadlines(cond.severity, cond.kind)
        row = AlertRow(
            place=cond.place,
            key=cond.key,
            rule_id=cond.rule_id,
            kind=cond.kind,
            severity=int(cond.severity),
            state=AlertState.RAISED.value,
            community=loc.community,
            grid=loc.grid,
            building=loc.building,
            unit=loc.unit,
            room=loc.room,
            level=cond.level.value,
            first_ns=cond.at_ns,
            last_ns=cond.at_ns,
            count=1,
            active=True,
            auto_clear=cond.auto_clear,
            device_id=cond.device_id,
            subject_ref=cond.subject_ref,
            incident_key=cond.incident_of,
            escalation_level=0,
            ack_deadline_ns=now + deadlines.ack_within_s * NS_PER_S,
            resolve_deadline_ns=now + deadlines.resolve_within_s * NS_PER_S,
            event_seq=0,
            raised_ns=now,
            updated_ns=now,
        )
        try:
            with tx.session.begin_nested():
                tx.session.add(row)
        except IntegrityError:
            log.info("alert %s %s was opened concurrently; counting a repeat", cond.place, cond.key)
            return None
        return row

    def _raised(self, tx: AlertTx, row: AlertRow, cond: Condition, now: int) -> list[AlertChange]:
        detail: dict[str, object] = {"rule_id": cond.rule_id, "level": cond.level.value}
        if cond.device_id:
            detail["device_id"] = cond.device_id
        seq = tx.step(row, "raised", actor=ENGINE_ACTOR, at_ns=now, detail=detail)
        changes: list[AlertChange] = []
        incident = self._open_incident(tx, row) if cond.incident_of else None
        if incident is not None:
            seq = self._group(tx, row, incident, now)
            changes.append(AlertChange(ChangeKind.GROUPED, to_alert(row), seq))
        else:
            changes.append(AlertChange(ChangeKind.RAISED, to_alert(row), seq))
        changes.extend(self._adopt_members(tx, row, now))
        return changes

    def _again(self, tx: AlertTx, row: AlertRow, cond: Condition, now: int) -> list[AlertChange]:
        row.count += 1
        row.last_ns = max(row.last_ns, cond.at_ns)
        row.updated_ns = now
        changes: list[AlertChange] = []
        if not row.active:
            row.active = True
            tx.step(row, "condition_returned", actor=ENGINE_ACTOR, at_ns=now)
        if row.incident_id is None and cond.incident_of:
            row.incident_key = cond.incident_of
            incident = self._open_incident(tx, row)
            if incident is not None:
                seq = self._group(tx, row, incident, now)
                changes.append(AlertChange(ChangeKind.GROUPED, to_alert(row), seq))
        if cond.severity < row.severity:  # I (1) is the highest
            before = Severity(row.severity)
            row.severity = int(cond.severity)
            self._tighten(row, cond, now)
            seq = tx.step(
                row,
                "upgraded",
                actor=ENGINE_ACTOR,
                at_ns=now,
                detail={"from": before.name, "to": cond.severity.name, "count": row.count},
            )
            kind = ChangeKind.GROUPED if self._inhibited(tx, row) else ChangeKind.UPGRADED
            changes.append(AlertChange(kind, to_alert(row), seq, before))
        elif not changes:
            changes.append(AlertChange(ChangeKind.REPEATED, to_alert(row), 0))
        return changes

    def _ended(self, tx: AlertTx, cond: Condition, now: int) -> list[AlertChange]:
        row = tx.find_open(cond.place, cond.key)
        if row is None:
            return []
        row.last_ns = max(row.last_ns, cond.at_ns)
        if row.auto_clear and cond.auto_clear and row.state in _UNTAKEN:
            row.state = AlertState.CLEARED.value
            row.active = False
            row.ended_ns = now
            row.ack_deadline_ns = row.resolve_deadline_ns = None
            seq = tx.step(
                row, "cleared", actor=ENGINE_ACTOR, at_ns=now, detail={"count": row.count}
            )
            quiet = not self._tell_about(tx, row, "cleared")
            return [AlertChange(ChangeKind.CLEARED, to_alert(row), seq, quiet=quiet)]
        if row.active:
            # Someone has it, or the rule wants a person to decide: the ending is news to them.
            row.active = False
            tx.step(row, "condition_ended", actor=ENGINE_ACTOR, at_ns=now)
        return []

    # -- incidents and deadlines -----------------------------------------------------------

    def _open_incident(self, tx: AlertTx, row: AlertRow) -> AlertRow | None:
        """The innermost open incident alert enclosing `row`'s place, keyed `incident_key`."""
        found = tx.session.scalars(
            select(AlertRow)
            .where(
                AlertRow.key == row.incident_key,
                AlertRow.place.in_(ancestor_keys(row.place)),
                AlertRow.state.in_(OPEN_STATE_VALUES),
                AlertRow.id != row.id,
            )
            .order_by(AlertRow.place.desc())
        ).first()
        return found

    def _group(self, tx: AlertTx, row: AlertRow, incident: AlertRow, now: int) -> int:
        row.incident_id = incident.id
        return tx.step(
            row, "grouped", actor=ENGINE_ACTOR, at_ns=now, detail={"incident_id": incident.id}
        )

    def _adopt_members(self, tx: AlertTx, incident: AlertRow, now: int) -> list[AlertChange]:
        """Alerts opened before their incident: group them into it now."""
        members = tx.session.scalars(
            select(AlertRow)
            .where(
                AlertRow.incident_key == incident.key,
                AlertRow.incident_id.is_(None),
                AlertRow.state.in_(OPEN_STATE_VALUES),
                AlertRow.id != incident.id,
                AlertRow.place.startswith(incident.place + "/", autoescape=True)
                | (AlertRow.place == incident.place),
            )
            .order_by(AlertRow.id)
            .with_for_update()
        ).all()
        return [
            AlertChange(ChangeKind.GROUPED, to_alert(m), self._group(tx, m, incident, now))
            for m in members
        ]

    def _inhibited(self, tx: AlertTx, row: AlertRow) -> bool:
        if row.incident_id is None:
            return False
        incident = tx.session.get(AlertRow, row.incident_id)
        return incident is not None and is_open(incident)

    def _tighten(self, row: AlertRow, cond: Condition, now: int) -> None:
        """A higher severity has shorter time limits; never lengthen a running one."""
        deadlines = self.policy.deadlines(cond.severity, row.kind)
        if row.ack_deadline_ns is not None:
            row.ack_deadline_ns = min(row.ack_deadline_ns, now + deadlines.ack_within_s * NS_PER_S)
        if row.resolve_deadline_ns is not None:
            row.resolve_deadline_ns = min(
                row.resolve_deadline_ns, now + deadlines.resolve_within_s * NS_PER_S
            )


def dispatch_step(
    tx: AlertTx,
    row: AlertRow,
    router: Router,
    outbox: NotificationSink | None,
    *,
    event_seq: int,
    step: str,
    level: int,
    now: int,
    actor: str = ENGINE_ACTOR,
) -> Dispatch:
    """Route one step of `row`'s alert and, with an outbox, queue it inside `tx`.

    Queued is *notified* (the outbox retries until delivered or reports the dead). A step
    that reaches nobody is recorded as ``unrouted``; notifications the outbox refuses (a
    payload that looks personal) as ``delivery_refused`` — the alert itself is kept, and its
    deadlines still escalate it.
    """
    dispatch = router.plan(to_alert(row), event_seq=event_seq, step=step, level=level)
    if not dispatch.notifications:
        missing = sorted({f"{u.who or u.role}:{u.reason}" for u in dispatch.route.unreachable})
        tx.step(
            row,
            "unrouted",
            actor=actor,
            at_ns=now,
            detail={"for_seq": event_seq, "level": level, "unreachable": missing},
        )
        return dispatch
    if outbox is None:
        return dispatch
    try:
        with tx.session.begin_nested():
            queued = outbox.enqueue(
                dispatch.notifications, conn=tx.session.connection(), now_ns=now
            )
    except ValueError as exc:  # PayloadRejected, or a channel delivery does not know
        log.error(
            "alert %d step %d: the outbox refused its notifications: %s", row.id, event_seq, exc
        )
        tx.step(
            row,
            "delivery_refused",
            actor=actor,
            at_ns=now,
            detail={"for_seq": event_seq, "reason": type(exc).__name__},
        )
        tx.delivery_refusals[row.id] = type(exc).__name__
        return dispatch
    if row.state == AlertState.RAISED.value:
        row.state = AlertState.NOTIFIED.value
    recipients = dispatch.route.recipients
    tx.step(
        row,
        "notified",
        actor=actor,
        at_ns=now,
        detail={
            "for_seq": event_seq,
            "members": sorted({r.member_id for r in recipients}),
            "channels": sorted({r.channel for r in recipients}),
            "queued": queued,
        },
    )
    return dispatch


__all__ = ["ENGINE_ACTOR", "AlertChange", "AlertEngine", "ChangeKind", "dispatch_step"]
