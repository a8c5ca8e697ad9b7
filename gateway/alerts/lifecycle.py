"""The people's side of an alert (R5.4 发现—推送—处置—协调—监督—反馈).

    raised ─notified─▶ notified ─acknowledge─▶ acknowledged ─start_handling─▶ handling
       └──────────acknowledge──────────┘              └──────────resolve──────────┤
                                                                                  ▼
                                        closed ◀─close (rating 1–5)─ resolved (feedback)
                                           └────────reopen──────────────┴──▶ handling

协调 (coordinate) hands an acknowledged or handled alert over to another responsible member, or
adds one, without changing its state: the member is notified through the outbox. Reopening a
resolved or closed alert puts it back in handling with a fresh resolve limit (its feedback and
rating stay in the history); it is refused while another alert for the same condition is open.

Each step records who (a member id) and when, in `alert_events` and in the audit chain.
Anything else is refused with an `InvalidTransition` that says what the alert's state allows;
a member not responsible for the alert's place (another building's unit head, an inactive
member, an unknown id) is refused with `NotResponsible`. Acting on an incident acts on the
alerts grouped into it as well, so one acknowledgement stops the escalation of all of them.

Feedback is free text from a person, so ID and mobile numbers in it are replaced before it is
stored (R3.2); the audit record says how long it was, never what it said.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from devices.errors import GridgateError
from gateway.alerts.model import Alert, AlertState
from gateway.alerts.routing import NotificationSink, Recipient, Router, notifications_for
from gateway.alerts.store import FEEDBACK_LEN, AlertRow, AlertStore, AlertTx, to_alert

REDACTED = "<redacted>"
DELIVERY_ACTOR = "alert-delivery"
_ID_NUMBER = re.compile(r"(?<![0-9A-Za-z])\d{17}[0-9Xx](?![0-9A-Za-z])")
_MOBILE = re.compile(r"(?<![0-9A-Za-z])(?:\+?86[\s-]?)?1[3-9]\d(?:[\s-]?\d{4}){2}(?![0-9A-Za-z])")

_S = AlertState
# action → (states it may start from, state it leads to)
TRANSITIONS: dict[str, tuple[frozenset[AlertState], AlertState]] = {
    "acknowledged": (frozenset({_S.RAISED, _S.NOTIFIED}), _S.ACKNOWLEDGED),
    "handling": (frozenset({_S.ACKNOWLEDGED}), _S.HANDLING),
    "resolved": (frozenset({_S.ACKNOWLEDGED, _S.HANDLING}), _S.RESOLVED),
    "closed": (frozenset({_S.RESOLVED}), _S.CLOSED),
    "reopened": (frozenset({_S.RESOLVED, _S.CLOSED}), _S.HANDLING),
}
# steps that leave the state as it is: (states they may be taken in)
STATELESS_ACTIONS: dict[str, frozenset[AlertState]] = {
    "coordinated": frozenset({_S.ACKNOWLEDGED, _S.HANDLING}),
}
COORDINATE_MODES = ("handover", "add")


class LifecycleError(GridgateError):
    """A workflow action was refused; nothing was changed."""


class UnknownAlert(LifecycleError, LookupError):
    pass


class InvalidTransition(LifecycleError):
    def __init__(self, alert_id: int, state: AlertState, action: str) -> None:
        allowed = allowed_actions(state)
        hint = f"; it can be {' or '.join(allowed)}" if allowed else "; it is finished"
        super().__init__(f"alert {alert_id} is {state.value}: it cannot be {action}{hint}")
        self.alert_id = alert_id
        self.state = state
        self.action = action


class NotResponsible(LifecycleError, PermissionError):
    pass


class AlreadyOpen(LifecycleError):
    """Reopening would make a second open alert for the same place and condition."""


def allowed_actions(state: AlertState) -> list[str]:
    """The actions an alert in `state` can take, by their step names."""
    moves = [a for a, (sources, _) in TRANSITIONS.items() if state in sources]
    return moves + [a for a, states in STATELESS_ACTIONS.items() if state in states]


def scrub_feedback(text: str) -> str:
    """Feedback without ID or mobile numbers, trimmed to what the store keeps."""
    text = _ID_NUMBER.sub(REDACTED, text.strip())
    return _MOBILE.sub(REDACTED, text)[:FEEDBACK_LEN]


class Lifecycle:
    """Workflow actions on alerts; each is one transaction, recorded and audited."""

    def __init__(
        self,
        store: AlertStore,
        *,
        clock_ns: Callable[[], int] = time.time_ns,
        router: Router | None = None,
        outbox: NotificationSink | None = None,
    ) -> None:
        """`router` and `outbox` notify a coordinated member and give a reopened alert its
        resolve limit; without them coordinating is refused and a reopened alert has none."""
        self.store = store
        self._clock_ns = clock_ns
        self._router = router
        self._outbox = outbox

    def notified(
        self, alert_id: int, recipients: Sequence[Recipient], *, event_seq: int | None = None
    ) -> Alert:
        """Record that a step was pushed to `recipients`; a raised alert becomes notified.

        Later notifications (upgrades, escalations) are recorded without changing the state.
        `event_seq` names the step that was sent, when known.
        """
        if not recipients:
            raise ValueError("notified needs the recipients the alert was sent to")
        members = sorted({r.member_id for r in recipients})
        detail: dict[str, object] = {
            "members": members,
            "channels": sorted({r.channel for r in recipients}),
        }
        if event_seq is not None:
            detail["for_seq"] = event_seq
        with self.store.transaction() as tx:
            row = self._lock(tx, alert_id)
            if row.state == _S.RAISED.value:
                row.state = _S.NOTIFIED.value
            tx.step(row, "notified", actor=DELIVERY_ACTOR, at_ns=self._clock_ns(), detail=detail)
            return to_alert(row)

    def delivery_failed(
        self, alert_id: int, member_id: str, channel: str, reason: str = ""
    ) -> Alert:
        """Record a notification delivery gave up on (the outbox's `on_dead`): someone was
        *not* told, which the alert's history must show. The state does not change."""
        detail = {"member": member_id, "channel": channel, "reason": scrub_feedback(reason)[:200]}
        with self.store.transaction() as tx:
            row = self._lock(tx, alert_id)
            tx.step(
                row, "delivery_failed", actor=DELIVERY_ACTOR, at_ns=self._clock_ns(), detail=detail
            )
            return to_alert(row)

    def acknowledge(self, alert_id: int, member_id: str) -> Alert:
        """Someone has it: stops escalation for not acknowledging (the resolve limit runs on)."""
        return self._act(alert_id, member_id, "acknowledged")

    def start_handling(self, alert_id: int, member_id: str) -> Alert:
        return self._act(alert_id, member_id, "handling")

    def resolve(self, alert_id: int, member_id: str, feedback: str) -> Alert:
        if not isinstance(feedback, str) or not feedback.strip():
            raise LifecycleError(f"alert {alert_id}: resolving needs feedback (what was done)")
        return self._act(alert_id, member_id, "resolved", feedback=scrub_feedback(feedback))

    def close(self, alert_id: int, member_id: str, rating: int) -> Alert:
        if isinstance(rating, bool) or not isinstance(rating, int) or not 1 <= rating <= 5:
            raise LifecycleError(f"alert {alert_id}: a satisfaction rating is 1 to 5")
        return self._act(alert_id, member_id, "closed", rating=rating)

    def reopen(self, alert_id: int, member_id: str) -> Alert:
        """Back to handling: the problem came back, or the resolution did not hold."""
        current = self._responsible(alert_id, member_id)
        now = self._clock_ns()
        try:
            with self.store.transaction() as tx:
                row = self._lock(tx, alert_id)
                sources, target = TRANSITIONS["reopened"]
                if AlertState(row.state) not in sources:
                    raise InvalidTransition(alert_id, AlertState(row.state), "reopened")
                if tx.find_open(row.place, row.key) is not None:
                    raise AlreadyOpen(
                        f"alert {alert_id} cannot be reopened: another alert for the same "
                        "condition at this place is open"
                    )
                row.state = target.value
                row.ended_ns = None
                row.ack_deadline_ns = None
                if self._router is not None:
                    limit = self._router.policy.deadlines(current.severity, current.kind)
                    row.resolve_deadline_ns = now + limit.resolve_within_s * 1_000_000_000
                tx.step(row, "reopened", actor=member_id, at_ns=now)
                return to_alert(row)
        except IntegrityError as exc:  # another process opened one in between
            raise AlreadyOpen(
                f"alert {alert_id} cannot be reopened: another alert for the same condition "
                "at this place is open"
            ) from exc

    def coordinate(self, alert_id: int, member_id: str, to_member: str, mode: str) -> Alert:
        """协调: hand the alert over to `to_member` ("handover") or bring them in ("add");
        they must be responsible for its place too, and are notified."""
        if mode not in COORDINATE_MODES:
            raise LifecycleError(f"coordinating is {' or '.join(COORDINATE_MODES)}")
        if self._router is None or self._outbox is None:
            raise LifecycleError("coordinating needs the alert router and outbox")
        current = self._responsible(alert_id, member_id)
        if to_member == member_id:
            raise LifecycleError(f"alert {alert_id}: coordinate with another member")
        try:
            self._check_member(current, to_member)
        except NotResponsible as exc:
            raise NotResponsible(
                f"member {to_member} is not responsible for alert {alert_id}'s place"
            ) from exc
        target = self.store.registry.member(to_member)
        assert target is not None  # checked above
        recipients = self._router.member_recipients(target)
        if not recipients:
            raise LifecycleError(f"member {to_member} has no channel an alert can be sent on")
        now = self._clock_ns()
        with self.store.transaction() as tx:
            row = self._lock(tx, alert_id)
            if AlertState(row.state) not in STATELESS_ACTIONS["coordinated"]:
                raise InvalidTransition(alert_id, AlertState(row.state), "coordinated")
            seq = tx.step(
                row, "coordinated", actor=member_id, at_ns=now,
                detail={"to": to_member, "mode": mode},
            )  # fmt: skip
            alert = to_alert(row)
            notes = notifications_for(
                alert, recipients, seq, step="coordinated",
                place_names=self._router.place_names(alert),
            )  # fmt: skip
            self._outbox.enqueue(notes, conn=tx.session.connection(), now_ns=now)
            return alert

    # -- internals -----------------------------------------------------------------------

    def _responsible(self, alert_id: int, member_id: str) -> Alert:
        current = self.store.alert(alert_id)
        if current is None:
            raise UnknownAlert(f"no alert {alert_id}")
        self._check_member(current, member_id)
        return current

    def _act(
        self,
        alert_id: int,
        member_id: str,
        action: str,
        *,
        feedback: str | None = None,
        rating: int | None = None,
    ) -> Alert:
        self._responsible(alert_id, member_id)
        now = self._clock_ns()
        with self.store.transaction() as tx:
            row = self._lock(tx, alert_id)
            sources, _ = TRANSITIONS[action]
            if AlertState(row.state) not in sources:
                raise InvalidTransition(alert_id, AlertState(row.state), action)
            self._apply(tx, row, member_id, action, now, feedback, rating, via=None)
            grouped = tx.session.scalars(
                select(AlertRow)
                .where(AlertRow.incident_id == row.id)
                .order_by(AlertRow.id)
                .with_for_update()
            ).all()
            for member in grouped:
                if AlertState(member.state) in sources:
                    self._apply(tx, member, member_id, action, now, feedback, rating, via=row.id)
            return to_alert(row)

    def _apply(
        self,
        tx: AlertTx,
        row: AlertRow,
        member_id: str,
        action: str,
        now: int,
        feedback: str | None,
        rating: int | None,
        *,
        via: int | None,
    ) -> None:
        _, target = TRANSITIONS[action]
        row.state = target.value
        detail: dict[str, object] = {}
        if via is not None:
            detail["via_incident"] = via
        if target is _S.ACKNOWLEDGED:
            row.ack_deadline_ns = None
        elif target is _S.RESOLVED:
            row.ack_deadline_ns = row.resolve_deadline_ns = None
            row.ended_ns = now
            row.feedback = feedback
            detail["feedback_chars"] = len(feedback or "")
        elif target is _S.CLOSED:
            row.rating = rating
            detail["rating"] = rating
        tx.step(row, action, actor=member_id, at_ns=now, detail=detail)

    def _lock(self, tx: AlertTx, alert_id: int) -> AlertRow:
        row = tx.lock(alert_id)
        if row is None:
            raise UnknownAlert(f"no alert {alert_id}")
        return row

    def _check_member(self, alert: Alert, member_id: str) -> None:
        """Only an active member responsible for the alert's place (or above it) may act."""
        registry = self.store.registry
        member = registry.member(member_id)
        if member is None or not member.active:
            raise NotResponsible(f"{member_id!r} is not an active grid member")
        if member_id not in {m.id for m in registry.members_for(alert.location)}:
            raise NotResponsible(f"member {member_id} is not responsible for alert {alert.id}")


__all__ = [
    "COORDINATE_MODES",
    "DELIVERY_ACTOR",
    "STATELESS_ACTIONS",
    "TRANSITIONS",
    "AlreadyOpen",
    "InvalidTransition",
    "Lifecycle",
    "LifecycleError",
    "NotResponsible",
    "UnknownAlert",
    "allowed_actions",
    "scrub_feedback",
]
