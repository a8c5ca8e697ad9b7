"""Alert steps as they happen, one readable line each, for a person watching `gridgate demo`.

Read from the alert tables (not from this process's engine), so a step taken anywhere — the
gateway's rules, the escalator, a member acknowledging through the API or `gridgate alerts` —
shows. A step's notifications are recorded in the same transaction as the step, so the line
says who was told. A flapping detector's silent clearings and returns are shown once per
alert, with why nobody was told, and a storm is summarised rather than scrolled past.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import select

from gateway.alerts.model import Severity
from gateway.alerts.routing import WEBHOOK_MEMBER_PREFIX
from gateway.alerts.store import OPEN_STATE_VALUES, AlertEventRow, AlertRow
from gateway.cli.lookup import local_time
from gateway.registry import Registry

OVERLAP_NS = 5_000_000_000  # another process's clock may lag a little
# steps worth a line; "notified"/"unrouted" are folded into the step they are for
SHOWN = (
    "raised",
    "upgraded",
    "escalated",
    "exhausted",
    "cleared",
    "reopened",
    "acknowledged",
    "handling",
    "coordinated",
    "resolved",
    "closed",
    "delivery_failed",
)
LINES_PER_POLL = 12  # beyond this, a count: a storm is summarised, not scrolled past


@dataclass(frozen=True, slots=True)
class AlertStep:
    alert_id: int
    seq: int
    at_ns: int
    step: str
    actor: str
    kind: str
    severity: int
    place: str
    detail: dict[str, Any]
    told: tuple[str, ...] = ()  # members and webhooks the step was sent to
    untold: str = ""  # why nobody was (unrouted)


@dataclass
class AlertLog:
    """Polls one community's alert steps since `since_ns`; `poll` returns the new lines."""

    registry: Registry
    community: str
    since_ns: int
    reopen_window_s: int = 1800
    steps: Counter[str] = field(default_factory=Counter)  # every step seen, for the summary
    _seen: dict[int, int] = field(default_factory=dict)  # alert id → last step number read
    _quiet_shown: set[int] = field(default_factory=set)
    _cursor_ns: int = 0

    def __post_init__(self) -> None:
        self._cursor_ns = self.since_ns

    def open_alerts(self) -> int:
        with self.registry.reading() as s:
            rows = s.scalars(
                select(AlertRow.id).where(
                    AlertRow.community == self.community,
                    AlertRow.state.in_(OPEN_STATE_VALUES),
                )
            ).all()
        return len(rows)

    def poll(self) -> list[str]:
        """Lines for the steps taken since the last poll (run it in a thread)."""
        new = self._read()
        shown = [step for step in new if self._show(step)]
        lines = [self.line(step) for step in shown[:LINES_PER_POLL]]
        if len(shown) > LINES_PER_POLL:
            more = Counter(step.step for step in shown[LINES_PER_POLL:])
            told = ", ".join(f"{n} {name}" for name, n in more.most_common())
            lines.append(f"         … and {told} (gridgate alerts list)")
        return lines

    def _read(self) -> list[AlertStep]:
        started = time.time_ns()
        with self.registry.reading() as s:
            alerts = {
                row.id: row
                for row in s.scalars(
                    select(AlertRow).where(
                        AlertRow.community == self.community,
                        AlertRow.updated_ns >= self._cursor_ns - OVERLAP_NS,
                    )
                )
            }
            events: list[AlertEventRow] = []
            for alert_id in sorted(alerts):
                events += s.scalars(
                    select(AlertEventRow)
                    .where(
                        AlertEventRow.alert_id == alert_id,
                        AlertEventRow.seq > self._seen.get(alert_id, 0),
                        AlertEventRow.at_ns >= self.since_ns,
                    )
                    .order_by(AlertEventRow.seq)
                ).all()
            rows = [(e, alerts[e.alert_id]) for e in events]
        self._cursor_ns = started
        out: list[AlertStep] = []
        by_seq: dict[tuple[int, int], int] = {}
        for event, alert in sorted(rows, key=lambda r: (r[0].at_ns, r[0].alert_id, r[0].seq)):
            self._seen[event.alert_id] = max(self._seen.get(event.alert_id, 0), event.seq)
            self.steps[event.step] += 1
            detail = dict(event.detail or {})
            target = by_seq.get((event.alert_id, int(detail.get("for_seq", -1))))
            if event.step in ("notified", "unrouted") and target is not None:
                step = out[target]
                if event.step == "notified":
                    told = tuple(str(m) for m in detail.get("members", ()))
                    out[target] = replace(step, told=step.told + told)
                else:
                    missing = ", ".join(str(u) for u in detail.get("unreachable", ()))
                    out[target] = replace(step, untold=missing or "nobody responsible")
                continue
            if event.step not in SHOWN:
                continue
            by_seq[(event.alert_id, event.seq)] = len(out)
            out.append(
                AlertStep(
                    event.alert_id,
                    event.seq,
                    event.at_ns,
                    event.step,
                    event.actor,
                    alert.kind,
                    event.severity,
                    alert.place,
                    detail,
                )
            )
        return out

    def _show(self, step: AlertStep) -> bool:
        """A flap nobody is told about is shown once per alert (why it was silent), then
        counted only."""
        if step.step not in ("cleared", "reopened") or step.told:
            return True
        if step.alert_id in self._quiet_shown:
            return False
        self._quiet_shown.add(step.alert_id)
        return True

    def line(self, step: AlertStep) -> str:
        when = local_time(step.at_ns, "%H:%M:%S")
        where = place_label(self.registry.place_names(step.place), step.place)
        head = f"{when} #{step.alert_id} {Severity(step.severity).name} {step.kind}"
        return f"{head} {_verb(step)} {where}{_outcome(step, self.reopen_window_s)}"


def place_label(names: Sequence[str], key: str) -> str:
    """Building, unit and room names (3号楼 2单元 1201) — the community and grid are the same
    for every line; an alert at the grid or community itself is named by that."""
    below = " ".join(n for n in names[2:] if n)
    if below:
        return below
    named = [n for n in names if n]
    return named[-1] if named else key


def _verb(step: AlertStep) -> str:
    d = step.detail
    if step.step == "upgraded":
        return f"upgraded {d.get('from', '?')}→{d.get('to', '?')} at"
    if step.step == "escalated":
        reason = "not acknowledged" if d.get("reason") == "ack_overdue" else "not resolved"
        return f"escalated to level {d.get('to', '?')} ({reason}) at"
    if step.step in ("acknowledged", "handling", "resolved", "closed", "coordinated"):
        verb = {"handling": "being handled", "coordinated": "coordinated"}.get(step.step, step.step)
        return f"{verb} by {step.actor} at"
    return f"{step.step} at"


def _outcome(step: AlertStep, reopen_window_s: int) -> str:
    if step.told:
        return " → " + _told(step.told)
    if step.untold:
        return f" → told nobody ({step.untold})"
    if step.step == "reopened":
        minutes = reopen_window_s // 60
        return f" (back within {minutes} min of clearing: same alert; further flaps silent)"
    if step.step == "cleared":
        return " (people were told once already; further flaps silent)"
    return ""


def _told(who: Sequence[str]) -> str:
    members = [w for w in who if not w.startswith(WEBHOOK_MEMBER_PREFIX)]
    hooks = [w.removeprefix(WEBHOOK_MEMBER_PREFIX) for w in who if w not in members]
    parts = [f"{len(members)} member{'s' if len(members) != 1 else ''}"] if members else []
    parts += [f"webhook {h}" for h in hooks]
    return ", ".join(parts) or "nobody"
