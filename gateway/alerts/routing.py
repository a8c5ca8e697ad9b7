"""Who an alert goes to (R5.3), from a routing policy file, and what they are sent.

The policy (shipped default `gateway/alerts/routing.yaml`, which documents the format) names
roles per severity, per-kind overrides, time limits per severity (限时办理) and the escalation
chain (逐级上报). Members come from the registry: `Registry.members_for(place, roles)` gives
the active members responsible for the alert's place or a place enclosing it, so a unit's
alert reaches that unit's head and that building's head, never another building's.

A member who should be told but cannot be (no contact channel), a role nobody holds there,
and a webhook whose URL variable is unset are *reported* in `Route.unreachable` and logged:
an alert that silently reaches nobody is the failure this module exists to prevent.

Notifications carry only what a member needs to act (R3.2): ids, kind, severity, the place's
codes and names, times, the device id and the subject's pseudonym; never a name, a phone
number or readings' history.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, model_validator
from sqlalchemy import Connection

from devices.config_file import invalid, load_mapping, read_text, validation_problems
from devices.places import PlaceLevel
from gateway.alerts.model import Alert, Notification, Severity
from gateway.registry import Member, Registry, Role
from gateway.registry.coverage import Audience
from gateway.registry.records import DELIVERABLE_CHANNEL_KINDS

log = logging.getLogger(__name__)

SEVERITY_NAMES: tuple[str, ...] = tuple(s.name for s in Severity)
WEBHOOK_MEMBER_PREFIX = "webhook:"
_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,127}", re.ASCII)
_WEBHOOK_NAME = re.compile(r"[a-z][a-z0-9_-]{0,63}", re.ASCII)
_URL = re.compile(r"https?://[^\s/?#]+[^\s]*", re.ASCII)

# What `gateway.alerts.delivery` sends on; sms and app channels need a sender first (the
# importer refuses them: gateway.registry.records.DELIVERABLE_CHANNEL_KINDS).
DELIVERABLE_CHANNELS: frozenset[str] = frozenset(k.value for k in DELIVERABLE_CHANNEL_KINDS)
UnreachableReason = Literal["no_channel", "unsupported_channel", "no_member", "webhook_unset"]
ROBOT_MEMBER_PREFIX = "robot:"

StrictInt = Annotated[int, Strict()]
StrictStr = Annotated[str, Strict()]
StrictBool = Annotated[bool, Strict()]
Seconds = Annotated[int, Strict(), Field(gt=0, le=366 * 86_400)]


# -- the file, as pydantic models ----------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _unique_roles(roles: Sequence[Role]) -> Sequence[Role]:
    if len(set(roles)) != len(roles):
        raise ValueError("a role is listed twice")
    return roles


class SeverityIn(_Model):
    roles: list[Role] = Field(min_length=1)
    webhooks: list[StrictStr] = []
    ack_within_s: Seconds
    resolve_within_s: Seconds

    @model_validator(mode="after")
    def _check(self) -> SeverityIn:
        _unique_roles(self.roles)
        if self.resolve_within_s < self.ack_within_s:
            raise ValueError("resolve_within_s is shorter than ack_within_s")
        return self


class KindIn(_Model):
    roles: list[Role] | None = Field(default=None, min_length=1)
    webhooks: list[StrictStr] | None = None
    ack_within_s: Seconds | None = None
    resolve_within_s: Seconds | None = None

    @model_validator(mode="after")
    def _check(self) -> KindIn:
        if self.roles is not None:
            _unique_roles(self.roles)
        return self


class LevelIn(_Model):
    roles: list[Role] = Field(min_length=1)
    webhooks: list[StrictStr] = []

    @model_validator(mode="after")
    def _check(self) -> LevelIn:
        _unique_roles(self.roles)
        return self


class EscalationIn(_Model):
    remind_first_responders: StrictBool = True
    levels: list[LevelIn] = Field(min_length=1, max_length=9)


class WebhookIn(_Model):
    url: StrictStr | None = None
    url_env: StrictStr | None = None

    @model_validator(mode="after")
    def _check(self) -> WebhookIn:
        if (self.url is None) == (self.url_env is None):
            raise ValueError("give exactly one of url or url_env")
        if self.url is not None and not _URL.fullmatch(self.url):
            raise ValueError("url must be an http:// or https:// URL")
        if self.url_env is not None and not _ENV_NAME.fullmatch(self.url_env):
            raise ValueError("url_env must be an environment variable name (A-Z, 0-9, _)")
        return self


class RobotIn(_Model):
    kind: Literal["wecom", "dingtalk"]
    url_env: StrictStr  # the URL holds the robot's key: never in a file
    secret_env: StrictStr | None = None  # DingTalk's signing secret

    @model_validator(mode="after")
    def _check(self) -> RobotIn:
        for name in (self.url_env, self.secret_env):
            if name is not None and not _ENV_NAME.fullmatch(name):
                raise ValueError("url_env and secret_env are environment variable names")
        if self.secret_env is not None and self.kind != "dingtalk":
            raise ValueError("secret_env signs DingTalk robots only")
        return self


class GroupIn(_Model):
    """A place's group chat: its robot is told of every alert at the place (or inside it)."""

    robot: StrictStr
    grid: StrictStr | None = None
    building: StrictStr | None = None
    severities: list[Literal["I", "II", "III", "IV"]] = ["I", "II", "III", "IV"]


class RoutingPolicyIn(_Model):
    version: Literal[1]
    severities: dict[Literal["I", "II", "III", "IV"], SeverityIn]
    kinds: dict[StrictStr, KindIn] = {}
    escalation: EscalationIn
    webhooks: dict[StrictStr, WebhookIn] = {}
    robots: dict[StrictStr, RobotIn] = {}
    groups: list[GroupIn] = []
    reopen_within_s: int = Field(default=1800, ge=0, le=7 * 86400)


# -- the policy, as used -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Deadlines:
    ack_within_s: int
    resolve_within_s: int


@dataclass(frozen=True, slots=True)
class Targets:
    """Roles and named webhooks to notify."""

    roles: tuple[Role, ...]
    webhooks: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class KindOverride:
    roles: tuple[Role, ...] | None = None
    webhooks: tuple[str, ...] | None = None
    ack_within_s: int | None = None
    resolve_within_s: int | None = None


@dataclass(frozen=True, slots=True)
class Webhook:
    name: str
    url: str | None = field(default=None, repr=False)  # a URL may hold a token
    url_env: str | None = None


@dataclass(frozen=True, slots=True)
class RobotSpec:
    name: str
    kind: Literal["wecom", "dingtalk"]
    url_env: str
    secret_env: str | None = None


@dataclass(frozen=True, slots=True)
class Group:
    robot: str
    grid: str | None
    building: str | None
    severities: frozenset[Severity]

    def covers(self, alert: Alert) -> bool:
        loc = alert.location
        return (
            alert.severity in self.severities
            and (self.grid is None or loc.grid == self.grid)
            and (self.building is None or loc.building == self.building)
        )


@dataclass(frozen=True, slots=True)
class RoutingPolicy:
    source: str
    severities: Mapping[Severity, Targets]
    deadlines_by_severity: Mapping[Severity, Deadlines]
    kinds: Mapping[str, KindOverride]
    levels: tuple[Targets, ...]  # escalation level n is levels[n - 1]
    remind_first_responders: bool
    webhooks: Mapping[str, Webhook]
    reopen_within_s: int = 1800  # a condition back this soon after clearing reopens its alert
    robots: Mapping[str, RobotSpec] = field(default_factory=dict)
    groups: tuple[Group, ...] = ()

    @property
    def max_level(self) -> int:
        return len(self.levels)

    def first_responders(self, severity: Severity, kind: str) -> Targets:
        base = self.severities[severity]
        override = self.kinds.get(kind)
        if override is None:
            return base
        return Targets(
            roles=base.roles if override.roles is None else override.roles,
            webhooks=base.webhooks if override.webhooks is None else override.webhooks,
        )

    def deadlines(self, severity: Severity, kind: str) -> Deadlines:
        base = self.deadlines_by_severity[severity]
        override = self.kinds.get(kind)
        if override is None:
            return base
        return Deadlines(
            ack_within_s=override.ack_within_s or base.ack_within_s,
            resolve_within_s=override.resolve_within_s or base.resolve_within_s,
        )

    def audiences(self) -> list[Audience]:
        """Which alerts go first to which roles, alerts with the same roles together
        (``severity IV, battery, device_offline`` → property_duty): what a fleet import checks
        someone holds at every place with devices."""
        groups: dict[frozenset[Role], tuple[tuple[Role, ...], list[str], list[str]]] = {}
        for severity in Severity:
            roles = self.severities[severity].roles
            groups.setdefault(frozenset(roles), (roles, [], []))[1].append(severity.name)
        for kind, override in self.kinds.items():
            if override.roles is not None:
                roles = override.roles
                groups.setdefault(frozenset(roles), (roles, [], []))[2].append(kind)
        out = []
        for roles, severities, kinds in groups.values():
            names = [f"severity {', '.join(severities)}"] if severities else []
            out.append(Audience(", ".join(names + kinds), roles))
        return out

    def targets(self, severity: Severity, kind: str, level: int = 0) -> list[Targets]:
        """What to notify at escalation `level` (0: first responders), most senior first."""
        first = self.first_responders(severity, kind)
        if level <= 0:
            return [first]
        chosen = self.levels[min(level, self.max_level) - 1]
        return [chosen, first] if self.remind_first_responders else [chosen]


WHAT = "routing policy"


def default_policy_text() -> str:
    return resources.files("gateway.alerts").joinpath("routing.yaml").read_text(encoding="utf-8")


def load_routing_policy(path: Path | None = None) -> RoutingPolicy:
    """The routing policy in `path`, or the shipped default. Raises ConfigError."""
    if path is None:
        return parse_routing_policy(default_policy_text(), "gateway/alerts/routing.yaml (default)")
    return parse_routing_policy(read_text(path, WHAT), str(path))


def parse_routing_policy(text: str, source: str = "<routing policy>") -> RoutingPolicy:
    """Check everything and report every problem at once: a routing file must not half-load."""
    raw = load_mapping(text, source, WHAT, "version: 1")
    try:
        parsed = RoutingPolicyIn.model_validate(raw)
    except ValidationError as exc:
        raise invalid(WHAT, source, validation_problems(exc)) from None

    problems: list[str] = []
    missing = [name for name in SEVERITY_NAMES if name not in parsed.severities]
    if missing:
        problems.append(f"severities: missing {', '.join(missing)} (every severity is routed)")
    for name in parsed.webhooks:
        if not _WEBHOOK_NAME.fullmatch(name):
            problems.append(f"webhooks.{name}: a name is a-z, 0-9, _ and -, starting with a letter")
    for name in parsed.robots:
        if not _WEBHOOK_NAME.fullmatch(name):
            problems.append(f"robots.{name}: a name is a-z, 0-9, _ and -, starting with a letter")
    for i, group in enumerate(parsed.groups):
        if group.robot not in parsed.robots:
            problems.append(f"groups.{i}.robot: unknown robot {group.robot!r}")

    def check_refs(where: str, names: Sequence[str] | None) -> tuple[str, ...] | None:
        if names is None:
            return None
        for name in names:
            if name not in parsed.webhooks:
                problems.append(f"{where}.webhooks: unknown webhook {name!r}")
        if len(set(names)) != len(names):
            problems.append(f"{where}.webhooks: a webhook is listed twice")
        return tuple(names)

    severities: dict[Severity, Targets] = {}
    deadlines: dict[Severity, Deadlines] = {}
    for name, sev_in in parsed.severities.items():
        severity = Severity[name]
        severities[severity] = Targets(
            tuple(sev_in.roles), check_refs(f"severities.{name}", sev_in.webhooks) or ()
        )
        deadlines[severity] = Deadlines(sev_in.ack_within_s, sev_in.resolve_within_s)
    kinds: dict[str, KindOverride] = {}
    for kind, kind_in in parsed.kinds.items():
        kinds[kind] = KindOverride(
            roles=None if kind_in.roles is None else tuple(kind_in.roles),
            webhooks=check_refs(f"kinds.{kind}", kind_in.webhooks),
            ack_within_s=kind_in.ack_within_s,
            resolve_within_s=kind_in.resolve_within_s,
        )
        ack = kind_in.ack_within_s
        resolve = kind_in.resolve_within_s
        if ack is not None and resolve is not None and resolve < ack:
            problems.append(f"kinds.{kind}: resolve_within_s is shorter than ack_within_s")
    levels = tuple(
        Targets(tuple(level.roles), check_refs(f"escalation.levels.{i}", level.webhooks) or ())
        for i, level in enumerate(parsed.escalation.levels)
    )
    if problems:
        raise invalid(WHAT, source, problems)
    return RoutingPolicy(
        source=source,
        severities=severities,
        deadlines_by_severity=deadlines,
        kinds=kinds,
        levels=levels,
        remind_first_responders=parsed.escalation.remind_first_responders,
        webhooks={n: Webhook(n, w.url, w.url_env) for n, w in parsed.webhooks.items()},
        reopen_within_s=parsed.reopen_within_s,
        robots={n: RobotSpec(n, r.kind, r.url_env, r.secret_env) for n, r in parsed.robots.items()},
        groups=tuple(
            Group(g.robot, g.grid, g.building, frozenset(Severity[x] for x in g.severities))
            for g in parsed.groups
        ),
    )


# -- routing -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Recipient:
    """One member (or policy webhook) on one channel."""

    member_id: str  # a member id, or "webhook:<name>" for a webhook of the policy
    role: Role | None  # None for a webhook of the policy
    channel: str  # the contact channel's kind: mqtt | webhook | sms | app
    target: str = field(repr=False)  # topic, URL, phone number or app id: never logged


@dataclass(frozen=True, slots=True)
class Unreachable:
    """Someone the policy says to notify who cannot be: reported, never silently dropped."""

    who: str  # a member id, "webhook:<name>", or "" when nobody holds the role there
    role: Role | None
    # no_channel: the member has no contact channel; unsupported_channel: only channels
    # delivery cannot send on (sms, app); no_member: nobody holds the role for this place
    reason: UnreachableReason


@dataclass(frozen=True, slots=True)
class Route:
    alert_id: int
    level: int
    recipients: tuple[Recipient, ...]
    unreachable: tuple[Unreachable, ...] = ()


class NotificationSink(Protocol):
    """Where notifications are queued: `gateway.alerts.delivery.Outbox` (joins `conn`'s
    transaction, so an alert and its deliveries are committed together)."""

    def enqueue(
        self,
        notifications: Iterable[Notification],
        *,
        conn: Connection | None = None,
        now_ns: int | None = None,
    ) -> int: ...


@dataclass(frozen=True, slots=True)
class Dispatch:
    """What to send for one step of an alert, and whom it could not reach."""

    route: Route
    notifications: tuple[Notification, ...]


class Router:
    """Recipients of an alert from its place, severity, kind and escalation level.

    `environ` is read once, here: a webhook's URL variable set later is not seen, as with
    every other setting. `channels` are the contact channel kinds delivery can send on; a
    member reachable only on others is reported as unreachable.
    """

    def __init__(
        self,
        policy: RoutingPolicy,
        registry: Registry,
        *,
        environ: Mapping[str, str] | None = None,
        channels: Collection[str] = DELIVERABLE_CHANNELS,
    ) -> None:
        self.policy = policy
        self._registry = registry
        self._channels = frozenset(channels)
        env = environ or {}
        # name → kind, URL, secret
        self.robots: dict[str, tuple[Literal["wecom", "dingtalk"], str, str | None]] = {}
        for name, spec in policy.robots.items():
            url = env.get(spec.url_env, "")
            secret = env.get(spec.secret_env) if spec.secret_env else None
            if url and _URL.fullmatch(url) and (spec.secret_env is None or secret):
                self.robots[name] = (spec.kind, url, secret)
            else:
                log.warning(
                    "routing: robot %s has no usable URL or secret (%s%s unset or not http(s));"
                    " alerts routed to it will report it unreachable",
                    name, spec.url_env, f"/{spec.secret_env}" if spec.secret_env else "",
                )  # fmt: skip
        self._webhook_urls: dict[str, str] = {}
        for name, hook in policy.webhooks.items():
            url = hook.url if hook.url is not None else env.get(hook.url_env or "", "")
            if url and _URL.fullmatch(url):
                self._webhook_urls[name] = url
            else:
                log.warning(
                    "routing: webhook %s has no usable URL (%s is unset or not http(s)); "
                    "alerts routed to it will report it unreachable",
                    name,
                    hook.url_env,
                )

    def route(self, alert: Alert, level: int = 0) -> Route:
        """Whom to notify about `alert` at escalation `level`, innermost place first."""
        recipients: list[Recipient] = []
        unreachable: list[Unreachable] = []
        seen_members: set[str] = set()
        seen_hooks: set[str] = set()
        for targets in self.policy.targets(alert.severity, alert.kind, level):
            members = self._registry.members_for(alert.location, targets.roles)
            if alert.level is PlaceLevel.BUILDING and Role.UNIT_HEAD in targets.roles:
                # a building's alert (a fire incident) concerns every unit: their heads
                # evacuate them, and the incident silenced the unit alerts they had
                members += self._registry.members_within(alert.location, [Role.UNIT_HEAD])
            held = {m.role for m in members}
            unreachable.extend(
                Unreachable("", role, "no_member") for role in targets.roles if role not in held
            )
            for member in members:
                if member.id in seen_members:
                    continue
                seen_members.add(member.id)
                usable = [ch for ch in member.channels if self._usable(str(ch.kind), ch.target)]
                if not usable:
                    why: UnreachableReason = (
                        "unsupported_channel" if member.channels else "no_channel"
                    )
                    unreachable.append(Unreachable(member.id, member.role, why))
                    continue
                recipients.extend(
                    Recipient(member.id, member.role, str(ch.kind), ch.target) for ch in usable
                )
            for name in targets.webhooks:
                if name in seen_hooks:
                    continue
                seen_hooks.add(name)
                who = WEBHOOK_MEMBER_PREFIX + name
                url = self._webhook_urls.get(name)
                if url is None:
                    unreachable.append(Unreachable(who, None, "webhook_unset"))
                else:
                    recipients.append(Recipient(who, None, "webhook", url))
        for group in self.policy.groups:
            if group.covers(alert) and group.robot not in seen_hooks:
                seen_hooks.add(group.robot)
                who = ROBOT_MEMBER_PREFIX + group.robot
                robot = self.robots.get(group.robot)
                if robot is None:
                    unreachable.append(Unreachable(who, None, "webhook_unset"))
                else:
                    recipients.append(Recipient(who, None, robot[0], group.robot))
        route = Route(alert.id, level, tuple(recipients), tuple(unreachable))
        _report(route)
        return route

    def _usable(self, kind: str, target: str) -> bool:
        """A channel delivery can send on; a robot channel's target is a robot of the policy
        (a member's own WeCom or DingTalk robot) whose URL is set."""
        if kind not in self._channels:
            return False
        if kind not in ("wecom", "dingtalk"):
            return True
        robot = self.robots.get(target)
        return robot is not None and robot[0] == kind

    def member_recipients(self, member: Member) -> list[Recipient]:
        """`member` on every channel delivery can send on (a hand-over's new holder)."""
        return [
            Recipient(member.id, member.role, str(ch.kind), ch.target)
            for ch in member.channels
            if self._usable(str(ch.kind), ch.target)
        ]

    def recipients(self, alert: Alert, level: int = 0) -> list[Recipient]:
        """`route(...).recipients`; the unreachable are logged (see `route` to inspect them)."""
        return list(self.route(alert, level).recipients)

    def place_names(self, alert: Alert) -> tuple[str, ...]:
        """Display names from the community down to the alert's place ("" where unknown)."""
        return self._registry.place_names(alert.place)

    def plan(
        self,
        alert: Alert,
        *,
        event_seq: int,
        step: str,
        level: int | None = None,
    ) -> Dispatch:
        """Route `alert` (at its own escalation level unless told) and build the messages."""
        route = self.route(alert, alert.escalation_level if level is None else level)
        notes = notifications_for(
            alert, route.recipients, event_seq, step=step, place_names=self.place_names(alert)
        )
        return Dispatch(route, tuple(notes))


def _report(route: Route) -> None:
    for miss in route.unreachable:
        if miss.reason == "no_member":
            # Common and harmless for some places (a building alert has no unit head).
            log.info("alert %d: no %s responsible for its place", route.alert_id, miss.role)
        else:
            log.warning(
                "alert %d: %s (%s) cannot be notified: %s",
                route.alert_id,
                miss.who,
                miss.role or "webhook",
                miss.reason,
            )
    if not route.recipients:
        log.error("alert %d (level %d) reaches nobody", route.alert_id, route.level)


# -- messages -------------------------------------------------------------------------------


def iso_utc(ns: int) -> str:
    seconds, rest = divmod(ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, tz=UTC).replace(microsecond=rest // 1000)
    return stamp.isoformat().replace("+00:00", "Z")


def alert_payload(
    alert: Alert, *, event_seq: int, step: str, place_names: Sequence[str] = ()
) -> dict[str, Any]:
    """What a member needs to act on the alert: nothing personal beyond a pseudonym."""
    loc = alert.location
    return {
        "alert_id": alert.id,
        "event_seq": event_seq,
        "step": step,  # raised | upgraded | escalated | cleared | reopened | coordinated
        "kind": alert.kind,
        "key": alert.key,
        "severity": alert.severity.name,
        "colour": alert.severity.colour,
        "state": str(alert.state),
        "place": alert.place,
        "level": str(alert.level),
        "community": loc.community,
        "grid": loc.grid,
        "building": loc.building,
        "unit": loc.unit,
        "room": loc.room,
        "place_names": list(place_names),
        "raised_at": iso_utc(alert.first_ns),
        "last_seen_at": iso_utc(alert.last_ns),
        "count": alert.count,
        "device_id": alert.device_id,
        "subject_ref": alert.subject_ref,
        "incident_id": alert.incident_id,
        "escalation_level": alert.escalation_level,
    }


def notifications_for(
    alert: Alert,
    recipients: Sequence[Recipient],
    event_seq: int,
    *,
    step: str = "raised",
    place_names: Sequence[str] = (),
) -> list[Notification]:
    """One `Notification` per recipient and channel of one step of `alert`.

    The idempotency key is ``{alert_id}:{event_seq}:{member_id}:{channel}``, so a step
    delivered twice is recognised. A member with two targets of the same kind (two MQTT
    topics) gets ``{channel}#2`` for the second, keeping the keys unique.
    """
    payload = alert_payload(alert, event_seq=event_seq, step=step, place_names=place_names)
    out: list[Notification] = []
    used: dict[tuple[str, str], int] = {}
    for r in recipients:
        n = used[(r.member_id, r.channel)] = used.get((r.member_id, r.channel), 0) + 1
        channel_part = r.channel if n == 1 else f"{r.channel}#{n}"
        out.append(
            Notification(
                idempotency_key=f"{alert.id}:{event_seq}:{r.member_id}:{channel_part}",
                alert_id=alert.id,
                member_id=r.member_id,
                channel=r.channel,
                target=r.target,
                payload=dict(payload),
            )
        )
    return out


__all__ = [
    "DELIVERABLE_CHANNELS",
    "Deadlines",
    "Dispatch",
    "KindOverride",
    "NotificationSink",
    "Recipient",
    "Route",
    "Router",
    "RoutingPolicy",
    "Targets",
    "Unreachable",
    "Webhook",
    "alert_payload",
    "default_policy_text",
    "load_routing_policy",
    "notifications_for",
    "parse_routing_policy",
]
