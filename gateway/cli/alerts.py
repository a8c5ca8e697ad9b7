"""``gridgate alerts list|show|ack|handle|resolve|close|reopen``: alerts for an operator at a
terminal, acting as a named grid member.

Everything goes through what the HTTP API uses: lists and timelines from `alerts.views`,
actions through `alerts.lifecycle.Lifecycle` (with the router and outbox, so a reopened alert
gets its resolve limit), which checks that the member is responsible for the alert's place,
refuses a step the alert's state does not allow, records who and when, audits it and stops
escalation on acknowledgement. Nothing here decides what the lifecycle decides.

Exit status: 0 done; 1 refused (no such alert, a member not responsible, a state that does
not allow it) — the lifecycle's message says why and what the state allows; 2 bad input (an
unknown place, empty feedback) or no registry. Output names places by the registry's names
and members by id (and staff name in ``show``); never a resident, a phone or an ID number.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from gateway.alerts.delivery.outbox import Outbox
from gateway.alerts.lifecycle import (
    AlreadyOpen,
    InvalidTransition,
    Lifecycle,
    LifecycleError,
    NotResponsible,
    UnknownAlert,
    allowed_actions,
)
from gateway.alerts.model import Alert, AlertState, Severity
from gateway.alerts.routing import Router, load_routing_policy
from gateway.alerts.store import AlertStore
from gateway.alerts.views import AlertFilter, AlertTimeline, alert_timeline, find_alerts
from gateway.audit.store import AuditStore
from gateway.cli.lookup import (
    NS,
    PLACE_HINT,
    PlaceNames,
    UsageError,
    age,
    cell,
    communities,
    local_time,
    registry_ready,
    resolve_places,
)
from gateway.cli.terminal import MAX_WIDTH, wrap
from gateway.registry import Registry
from gateway.registry.identifiers import shown_text
from gateway.settings import Settings, environment

# command verb → the lifecycle's step name
VERBS = {"ack": "acknowledged", "handle": "handling", "resolve": "resolved", "close": "closed",
         "reopen": "reopened"}  # fmt: skip
STEP_VERBS = {step: verb for verb, step in VERBS.items()}
DONE = {"acknowledged": "acknowledged", "handling": "taken into handling", "resolved": "resolved",
        "closed": "closed", "reopened": "reopened"}  # fmt: skip
WIDTH = MAX_WIDTH - 1


def _alert_id(text: str) -> int:
    try:
        value = int(text.removeprefix("#"))
    except ValueError:
        value = 0
    if not 1 <= value <= 2**62:
        raise argparse.ArgumentTypeError(f"{text!r}: an alert id is a number such as 42")
    return value


def _severity(text: str) -> list[Severity]:
    """I, II, III, IV or 1-4; several with commas (I,II)."""
    out = []
    for part in text.split(","):
        part = part.strip().upper()
        try:
            out.append(Severity[part] if part in Severity.__members__ else Severity(int(part)))
        except (KeyError, ValueError) as exc:
            raise argparse.ArgumentTypeError(f"{part!r}: a severity is I, II, III or IV") from exc
    return out


def _limit(text: str) -> int:
    value = int(text) if text.isdigit() else 0
    if not 1 <= value <= 10_000:
        raise argparse.ArgumentTypeError(f"{text!r}: a number from 1 to 10000")
    return value


def add_arguments(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``alerts`` to the ``gridgate`` subcommands (`sub` from add_subparsers)."""
    alerts = sub.add_parser(
        "alerts", help="list, show and act on alerts as a grid member (as the HTTP API does)"
    )
    verbs = alerts.add_subparsers(dest="verb", required=True)
    ls = verbs.add_parser("list", help="alerts, newest first (open ones unless --all/--state)")
    ls.add_argument("--all", action="store_true", help="alerts in every state")
    ls.add_argument(
        "--state",
        action="append",
        choices=[s.value for s in AlertState],
        help="only this state (repeatable)",
    )
    ls.add_argument(
        "--severity", action="append", type=_severity, help="I, II, III or IV (repeatable, or I,II)"
    )
    ls.add_argument("--kind", help="e.g. gas_leak, elder_fall, device_offline")
    ls.add_argument("--place", help="b03, b03/u2, g01 or a key xf/g01/b03: there and inside")
    ls.add_argument("--community", help="one community's alerts")
    ls.add_argument("--limit", type=_limit, default=50, help="at most N (default 50)")
    ls.add_argument("--json", action="store_true", help="the HTTP API's JSON, with place names")
    show = verbs.add_parser("show", help="one alert: its timeline, notifications, next actions")
    show.add_argument("alert_id", type=_alert_id, metavar="ID")
    show.add_argument("--json", action="store_true", help="GET /api/v1/alerts/ID's JSON")
    helps = {
        "ack": "acknowledge: I have it (stops escalation for not acknowledging)",
        "handle": "start handling an acknowledged alert",
        "resolve": "resolved, with --feedback (what was done)",
        "close": "close a resolved alert with a satisfaction --rating 1-5",
        "reopen": "back to handling: the problem came back",
    }
    for verb, text in helps.items():
        act = verbs.add_parser(verb, help=text)
        act.add_argument("alert_id", type=_alert_id, metavar="ID")
        act.add_argument(
            "--as",
            dest="member",
            required=True,
            metavar="MEMBER_ID",
            help="the grid member acting (must be responsible for the place)",
        )
        if verb == "resolve":
            act.add_argument(
                "--feedback",
                required=True,
                metavar="TEXT",
                help="what was done (ID and phone numbers are removed)",
            )
        if verb == "close":
            act.add_argument(
                "--rating",
                required=True,
                type=int,
                choices=range(1, 6),
                metavar="1-5",
                help="satisfaction",
            )


@dataclass
class _World:
    registry: Registry
    store: AlertStore
    outbox: Outbox
    lifecycle: Lifecycle
    names: PlaceNames


@contextmanager
def _opened(settings: Settings) -> Iterator[_World]:
    """The registry's database with the alert store, outbox and lifecycle over it, built as
    the API builds them (`Gateway.build_alert_service`), without rules or delivery."""
    audit = AuditStore(settings.audit_path)
    try:
        with Registry.open(settings.registry_url, audit=audit) as registry:
            store = AlertStore(registry, audit)
            outbox = Outbox(registry.engine)
            # The router only gives a reopened alert its resolve limit here: its warnings
            # about webhooks without a URL concern delivery, which this command does not do.
            routing_log = logging.getLogger("gateway.alerts.routing")
            level = routing_log.level
            routing_log.setLevel(logging.ERROR)
            try:
                policy = load_routing_policy(settings.routing_policy)
                router = Router(policy, registry, environ=environment())
            finally:
                routing_log.setLevel(level)
            lifecycle = Lifecycle(store, router=router, outbox=outbox)
            yield _World(registry, store, outbox, lifecycle, PlaceNames(registry))
    finally:
        audit.close()


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run ``gridgate alerts VERB``; returns the exit status."""
    if not registry_ready("alerts", settings.registry_url):
        return 2
    try:
        with _opened(settings) as world:
            if args.verb == "list":
                return _list(world, args)
            if args.verb == "show":
                return _show(world, args.alert_id, as_json=args.json)
            return _act(world, args)
    except UsageError as exc:
        print(f"gridgate alerts: {exc}", file=sys.stderr)
        return 2


# -- list -----------------------------------------------------------------------------------


def _filter(world: _World, args: argparse.Namespace) -> AlertFilter:
    if args.community and args.community not in (known := communities(world.registry)):
        raise UsageError(
            f"no community {args.community!r} in the registry (it has {', '.join(known) or 'none'})"
        )
    places: tuple[str, ...] = ()
    if args.place:
        found = resolve_places(world.registry, args.place, community=args.community)
        if not found:
            where = f" in community {args.community}" if args.community else ""
            raise UsageError(f"no place {args.place!r} in the registry{where}: {PLACE_HINT}")
        places = tuple(found)
    severities = tuple(s for group in args.severity or () for s in group)
    states = tuple(AlertState(s) for s in args.state or ())
    return AlertFilter(
        scopes=(args.community,) if args.community else None,
        places=places,
        states=states,
        open_only=not args.all and not states,
        severities=severities,
        kind=args.kind or None,
    )


# columns of a list line: id, severity, kind, state, place, age, acknowledged by (the rest)
_COLS = (6, 3, 16, 12, 19, 4)
_HEADER = ("ID", "SEV", "KIND", "STATE", "PLACE", "AGE", "ACKED BY")


def _line(values: Sequence[str]) -> str:
    parts = [
        cell(v, w, right=i in (0, 5)) for i, (v, w) in enumerate(zip(values, _COLS, strict=False))
    ]
    rest = WIDTH - sum(_COLS) - len(_COLS)
    return " ".join([*parts, cell(values[-1], rest)]).rstrip()


def _list(world: _World, args: argparse.Namespace) -> int:
    where = _filter(world, args)
    page = find_alerts(world.registry, where, limit=args.limit)
    if args.json:
        from gateway.api.routers.alerts import alert_public

        data = [
            alert_public(a, page.acknowledged_by.get(a.id)).model_dump(mode="json")
            | {"place_names": list(world.names.path(a.place))}
            for a in page.alerts
        ]
        print(json.dumps({"data": data, "count": page.total}, ensure_ascii=False, indent=2))
        return 0
    what = "open alerts" if where.open_only else "alerts"
    if not page.alerts:
        print(f"no {what}" + ("" if where.open_only else " match") + _more_hint(where))
        return 0
    now = time.time_ns()
    print(_line(_HEADER))
    for a in page.alerts:
        print(
            _line(
                (
                    str(a.id),
                    a.severity.name,
                    a.kind,
                    a.state.value,
                    world.names.label(a.place),
                    age((now - a.first_ns) / NS),
                    page.acknowledged_by.get(a.id, "—"),
                )
            )
        )
    shown = len(page.alerts)
    what = what if page.total != 1 else what.removesuffix("s")
    tail = f"{shown} of {page.total} {what}" if shown < page.total else f"{shown} {what}"
    print(tail + _more_hint(where, truncated=shown < page.total))
    return 0


def _more_hint(where: AlertFilter, *, truncated: bool = False) -> str:
    hints = ["--limit N for more"] if truncated else []
    if where.open_only:
        hints.append("--all for every state")
    return f" ({'; '.join(hints)})" if hints else ""


# -- show -----------------------------------------------------------------------------------


def _show(world: _World, alert_id: int, *, as_json: bool) -> int:
    found = alert_timeline(world.store, world.outbox, alert_id)
    if found is None:
        print(f"gridgate alerts: no alert {alert_id}", file=sys.stderr)
        return 1
    if as_json:
        from gateway.api.routers.alerts import alert_detail_public

        body = alert_detail_public(found).model_dump(mode="json")
        print(json.dumps(body, ensure_ascii=False, indent=2))
        return 0
    for line in describe(found, world.names, world.registry):
        print(line)
    return 0


def _member(registry: Registry, actor: str) -> str:
    """A member id with the member's (staff) name; a gateway component as it is."""
    member = registry.member(actor)
    return f"{actor} ({shown_text(member.name)})" if member is not None else actor


def _detail_text(detail: dict[str, Any]) -> str:
    parts = []
    for key, value in detail.items():
        shown = ", ".join(str(v) for v in value) if isinstance(value, list) else str(value)
        parts.append(f"{key}={shown}")
    return " ".join(parts)


def describe(found: AlertTimeline, names: PlaceNames, registry: Registry) -> list[str]:
    """`gridgate alerts show`: the alert, its timeline, its notifications and what can be done
    next, in lines of at most 79 columns."""
    a, d = found.alert, found.detail
    now = time.time_ns()
    out = [f"alert {a.id}  {a.severity.name} ({a.severity.colour})  {a.kind}  {a.state.value}"]
    out.append(f"  place     {names.label(a.place)}  ({a.place})")
    if a.device_id:
        out.append(f"  device    {a.device_id}")
    out.append(f"  first     {local_time(a.first_ns)} UTC+8 ({age((now - a.first_ns) / NS)} ago)")
    out.append(f"  last      {local_time(a.last_ns)} UTC+8, seen {a.count} time(s)")
    if d.ended_ns is not None:
        out.append(f"  ended     {local_time(d.ended_ns)} UTC+8")
    acked = found.acknowledged_by
    out.append(f"  acked by  {_member(registry, acked) if acked else '—'}")
    out.append(
        f"  escalated to level {a.escalation_level}"
        if a.escalation_level
        else "  escalation level 0 (first responders)"
    )
    if a.ack_deadline_ns is not None:
        out.append(f"  escalates {local_time(a.ack_deadline_ns)} UTC+8 unless acknowledged")
    if a.resolve_deadline_ns is not None:
        out.append(f"  resolve by {local_time(a.resolve_deadline_ns)} UTC+8")
    if a.incident_id is not None:
        out.append(f"  grouped into incident {a.incident_id}")
    if found.grouped:
        out.append("  groups    " + " ".join(f"#{g.id} {g.kind}" for g in found.grouped))
    if d.feedback:
        out += wrap(f"  feedback  {d.feedback}", WIDTH, indent="          ")
    if d.rating is not None:
        out.append(f"  rating    {d.rating}/5")
    out.append("timeline (UTC+8)")
    for e in found.steps:
        who = _member(registry, e.actor)
        line = f"  {local_time(e.at_ns, '%m-%d %H:%M:%S')} #{e.seq:<3} {e.step:<13} {who}"
        extra = _detail_text(dict(e.detail))
        out += wrap(f"{line}  {extra}" if extra else line, WIDTH, indent="                 ")
    out.append("notifications" if found.deliveries else "notifications: none")
    for n in found.deliveries:
        step = f"step #{n.for_seq}" if n.for_seq is not None else "step ?"
        when = f" {local_time(n.sent_ns, '%m-%d %H:%M:%S')}" if n.sent_ns else ""
        why = f" ({n.last_error})" if n.last_error and n.state != "sent" else ""
        tries = f"{n.attempts} attempt{'s' if n.attempts != 1 else ''}"
        out.append(f"  {n.member_id:<22} {n.channel:<8} {step:<9} {n.state}{when}, {tries}{why}")
    out += _next_lines(a)
    return out


def _next_lines(a: Alert) -> list[str]:
    steps = allowed_actions(a.state)
    verbs = [STEP_VERBS[s] for s in steps if s in STEP_VERBS]
    if not steps:
        return ["next: nothing (finished)"]
    lines = [f"next: {', '.join(verbs) or '—'}"]
    if "coordinated" in steps:
        lines[0] += " (coordinate: through the HTTP API or the member page /m/)"
    if verbs:
        extra = {"resolve": " --feedback TEXT", "close": " --rating 1-5"}.get(verbs[0], "")
        lines.append(f"  e.g. gridgate alerts {verbs[0]} {a.id} --as MEMBER_ID{extra}")
    return lines


# -- actions --------------------------------------------------------------------------------


def _act(world: _World, args: argparse.Namespace) -> int:
    life, alert_id, member = world.lifecycle, args.alert_id, args.member
    step = VERBS[args.verb]
    try:
        if step == "acknowledged":
            alert = life.acknowledge(alert_id, member)
        elif step == "handling":
            alert = life.start_handling(alert_id, member)
        elif step == "resolved":
            alert = life.resolve(alert_id, member, args.feedback)
        elif step == "closed":
            alert = life.close(alert_id, member, args.rating)
        else:
            alert = life.reopen(alert_id, member)
    except UnknownAlert as exc:
        print(f"gridgate alerts: {exc}", file=sys.stderr)
        return 1
    except NotResponsible as exc:
        print(f"gridgate alerts: {exc}{_responsible_hint(world, alert_id)}", file=sys.stderr)
        return 1
    except InvalidTransition as exc:
        verbs = [STEP_VERBS[s] for s in allowed_actions(exc.state) if s in STEP_VERBS]
        hint = f"\n  allowed now: {', '.join(verbs)}" if verbs else ""
        print(f"gridgate alerts: {exc}{hint}", file=sys.stderr)
        return 1
    except AlreadyOpen as exc:
        print(f"gridgate alerts: {exc}", file=sys.stderr)
        return 1
    except LifecycleError as exc:  # bad input the lifecycle refused (empty feedback …)
        print(f"gridgate alerts: {exc}", file=sys.stderr)
        return 2
    print(f"alert {alert.id} {DONE[step]} by {_member(world.registry, member)}:"
          f" now {alert.state.value}")  # fmt: skip
    if step == "acknowledged" and alert.ack_deadline_ns is None:
        print("  escalation for not acknowledging stopped")
    if alert.resolve_deadline_ns is not None:
        print(f"  resolve by {local_time(alert.resolve_deadline_ns)} UTC+8")
    for line in _next_lines(alert):
        print(line)
    return 0


def _responsible_hint(world: _World, alert_id: int) -> str:
    alert = world.store.alert(alert_id)
    if alert is None:
        return ""
    ids = [m.id for m in world.registry.members_for(alert.location)]
    if not ids:
        return ""
    text = f"  responsible for {world.names.label(alert.place)}: {', '.join(ids)}"
    return "\n" + "\n".join(wrap(text, WIDTH))


__all__ = ["add_arguments", "describe", "run"]
