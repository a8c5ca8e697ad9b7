"""The alert side of a running gateway: rules on the pipeline's de-identified readings and
liveness changes, the engine as the pipeline's alert sink, and three background loops —
time-driven rules, escalation deadlines, and delivery from the outbox."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError

from devices.errors import StorageError
from devices.info import DeviceInfo
from devices.liveness import LivenessEvent
from devices.location import Location
from devices.places import PlaceLevel, place_at
from devices.reading import Reading
from gateway.alerts.delivery import (
    DeliveryWorker,
    Hub,
    MqttPublisher,
    Outbox,
    OutboxItem,
    PayloadRejected,
    WebhookSecrets,
    WebhookSender,
)
from gateway.alerts.delivery.robots import ROBOT_CHANNELS, Robot, RobotSender
from gateway.alerts.engine import AlertChange, AlertEngine
from gateway.alerts.escalation import Escalator
from gateway.alerts.lifecycle import Lifecycle
from gateway.alerts.model import Alert, Condition, Refusal, Severity
from gateway.alerts.routing import Router, load_routing_policy
from gateway.alerts.rules import RuleEngine, load_rules
from gateway.alerts.store import BatchAuditSink
from gateway.audit.store import AuditLogError
from gateway.mqtt.tls import MqttTls
from gateway.registry import Registry
from privacy.audit import AuditRefused

log = logging.getLogger(__name__)


@dataclass
class AlertConfig:
    rules_path: Path | None = None
    routing_path: Path | None = None
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 18830
    mqtt_client_id: str = "gridgate-alerts"
    mqtt_username: str | None = None
    mqtt_password: str | None = field(default=None, repr=False)
    mqtt_tls: MqttTls | None = None
    # GRIDGATE_* variables the routing policy and webhook secrets name (settings.environment)
    environ: Mapping[str, str] = field(default_factory=dict)
    tick_s: float = 1.0
    escalation_s: float = 5.0
    clock_ns: Callable[[], int] = field(default=time.time_ns)
    public_url: str | None = None  # where members open their page: robots' messages link it


DELIVERY_FAILED = "delivery_failed"
ROBOT_CONCURRENCY = 200  # robot items waiting for a window (merged into digests meanwhile)
ROBOT_LEASE_S = 180.0  # past a robot's 60 s window and its 10 s timeout
ALERT_REFUSED = "alert_refused"
SPOOL_FULL = "spool_full"
# The outside world being down: the registry database or the audit log cannot be reached,
# is locked past its timeout, or its disk is full. Worth retrying; anything else is not.
_RETRYABLE: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    DisconnectionError,
    sqlite3.OperationalError,
    AuditLogError,
    OSError,
)


def is_retryable(exc: BaseException) -> bool:
    """Whether the alert store failed because the outside world is down (try again later)
    rather than because of what it was given (a refused record, a rule's bad value)."""
    return isinstance(exc, _RETRYABLE) and not isinstance(exc, AuditRefused)


def refusal_reason(exc: BaseException) -> str:
    """A short reason safe to store and log: our own messages are kept (they name positions,
    never values); a library's message may quote a value, so only its type is kept."""
    if isinstance(exc, AuditRefused | PayloadRejected):
        return str(exc)[:200]
    return type(exc).__name__


def _duty_desk_condition(
    kind: str, about: Condition | Alert, now_ns: int, detail: dict[str, object]
) -> Condition:
    """An alert about the gateway itself for the community's duty desk: at the community, as
    severe as what it is about, open until a person resolves it."""
    return Condition(
        rule_id=kind,
        key=kind,
        kind=kind,
        severity=about.severity,
        location=place_at(about.location, PlaceLevel.COMMUNITY),
        level=PlaceLevel.COMMUNITY,
        at_ns=now_ns,
        detail=detail,
        auto_clear=False,
    )


def alert_refused_condition(refused: Condition, now_ns: int) -> Condition:
    """The alert that an alert could not be recorded (an administrator looks at the dead
    letter). It names the kind only: the refused condition's device and place may be what
    made it unrecordable."""
    return _duty_desk_condition(ALERT_REFUSED, refused, now_ns, {"refused_kind": refused.kind})


def spool_full_condition(
    community: str, full: bool, now_ns: int, detail: dict[str, object]
) -> Condition:
    """The alert that the disk spool is full while InfluxDB is down: the gateway stops
    reading, so new readings — alarms too — wait at the broker. Cleared when it has room."""
    return Condition(
        rule_id=SPOOL_FULL,
        key=SPOOL_FULL,
        kind=SPOOL_FULL,
        severity=Severity.II,
        location=Location(community),
        level=PlaceLevel.COMMUNITY,
        at_ns=now_ns,
        active=full,
        detail=detail,
    )


def delivery_failed_condition(failed: Alert, channel: str, now_ns: int) -> Condition:
    """The alert that a notification of `failed` could not be delivered."""
    detail: dict[str, object] = {
        "failed_alert_id": failed.id,
        "failed_kind": failed.kind,
        "channel": channel,
    }
    return _duty_desk_condition(DELIVERY_FAILED, failed, now_ns, detail)


class TimedRules:
    """The rule engine as the pipeline's evaluator; remembers the newest device-clock reading
    time, the timeline on which time-driven rules (absence, night leak) are ticked.

    Readings stamped at receipt (DL/T 645 frames have no clock) do not move it: in an
    accelerated simulation they are hours ahead of every device clock, and ticking there would
    make every meter look silent."""

    def __init__(self, rules: RuleEngine) -> None:
        self.rules = rules
        self.newest_ns = 0

    def on_reading(
        self, reading: Reading, device: DeviceInfo | None, *, device_clock: bool = True
    ) -> list[Condition]:
        if device_clock and reading.time_ns > self.newest_ns:
            self.newest_ns = reading.time_ns
        return self.rules.on_reading(reading, device)

    def on_liveness(self, event: LivenessEvent, device: DeviceInfo | None) -> list[Condition]:
        return self.rules.on_liveness(event, device)

    def tick(self) -> list[Condition]:
        return self.rules.tick(self.newest_ns) if self.newest_ns else []


class AlertService:
    def __init__(
        self,
        registry: Registry,
        audit: BatchAuditSink,
        config: AlertConfig,
        *,
        household_ref: Callable[[str], str],
    ) -> None:
        """`household_ref`: a household id's pseudonym (the alerts' subject reference)."""
        self.config = config
        self._household_ref = household_ref
        self.registry = registry
        self._households: dict[str, tuple[str, bool]] = {}
        self.rules = TimedRules(
            RuleEngine(load_rules(config.rules_path), households=self._household_of)
        )
        self.router = Router(
            load_routing_policy(config.routing_path), registry, environ=config.environ
        )
        self.outbox = Outbox(registry.engine, clock_ns=config.clock_ns)
        self.engine = AlertEngine(
            registry, audit, clock_ns=config.clock_ns, router=self.router, outbox=self.outbox
        )
        self.escalator = Escalator(
            self.engine.store, self.router, clock_ns=config.clock_ns, outbox=self.outbox
        )
        self.lifecycle = Lifecycle(
            self.engine.store, clock_ns=config.clock_ns, router=self.router, outbox=self.outbox
        )
        self.hub = Hub()
        self.audit = audit
        self.changes = 0
        # called (in the event loop) after alerts changed in this process: the API's live
        # feed looks at once instead of at its next poll
        self.on_change: list[Callable[[], None]] = []
        self.deliveries_refused = 0  # notifications the outbox would not take (bugs)
        self._worker: DeliveryWorker | None = None
        self._robot_worker: DeliveryWorker | None = None

    def refresh_households(self, devices: Sequence[DeviceInfo]) -> None:
        """device → (household subject reference, elder living alone), for the solitary-elder
        water rule and elder devices' offline alerts. The subject is the household id's
        pseudonym: a registry id is not one, and the outbox refuses a subject that is not.
        Queries the registry (run it in a thread); the new map is swapped in whole."""
        alone = {h.id: h.elder_alone for h in self.registry.households()}
        refs: dict[str, str] = {}
        households: dict[str, tuple[str, bool]] = {}
        for d in devices:
            if d.household:
                ref = refs.get(d.household)
                if ref is None:
                    ref = refs[d.household] = self._household_ref(d.household)
                households[d.device_id] = (ref, alone.get(d.household, False))
        self._households = households

    def _household_of(self, device_id: str) -> tuple[str, bool] | None:
        return self._households.get(device_id)

    async def accept(self, conditions: list[Condition]) -> list[Refusal]:
        """The pipeline's alert sink: alerts and their notifications are committed together.

        Returns the conditions that were refused (the rest are accepted): one that cannot be
        recorded never holds the others hostage. Raises StorageError(retryable=True) when the
        database or the audit log is down; then nothing of a refusal-free batch is lost, and
        what was committed before the failure counts a repeat when it comes again.
        """
        try:
            changes, refused = await asyncio.to_thread(self._handle_isolating, conditions, 0)
        except Exception as exc:
            if is_retryable(exc):
                raise StorageError(
                    f"alert store unavailable: {type(exc).__name__}", retryable=True
                ) from exc
            raise
        self.changes += len(changes)
        if changes:
            self._changed()
        if refused:
            changes += await asyncio.to_thread(self._report_refused, conditions, refused)
        for change in list(changes):
            if change.delivery_refused and change.alert.kind != DELIVERY_FAILED:
                changes += await self._delivery_refused(change)
        if any(c.notify for c in changes):
            self._notify_workers()
        return refused

    def _changed(self) -> None:
        for listener in self.on_change:
            listener()

    def _handle_isolating(
        self, conditions: Sequence[Condition], offset: int
    ) -> tuple[list[AlertChange], list[Refusal]]:
        """All at once; if refused (not retryable), by halves down to the single conditions
        that cannot be recorded — each of the others in a transaction that can commit."""
        try:
            return self.engine.handle(conditions), []
        except Exception as exc:
            if is_retryable(exc):
                raise
            if len(conditions) == 1:
                return [], [Refusal(offset, refusal_reason(exc))]
        mid = len(conditions) // 2
        first, first_refused = self._handle_isolating(conditions[:mid], offset)
        second, second_refused = self._handle_isolating(conditions[mid:], offset + mid)
        return first + second, first_refused + second_refused

    def _report_refused(
        self, conditions: Sequence[Condition], refused: Sequence[Refusal]
    ) -> list[AlertChange]:
        """Each refusal is logged; the duty desk of each community gets one `alert_refused`
        alert (one open per community). If even that is refused, it is only logged: no loop."""
        worst: dict[str, Condition] = {}
        for refusal in refused:
            cond = conditions[refusal.index]
            log.error("alert %s (%s) refused: %s", cond.kind, cond.rule_id, refusal.reason)
            if cond.kind == ALERT_REFUSED:
                continue
            community = cond.location.community
            if community not in worst or cond.severity < worst[community].severity:
                worst[community] = cond
        now = self.config.clock_ns()
        changes: list[AlertChange] = []
        for cond in worst.values():
            try:
                changes += self.engine.handle([alert_refused_condition(cond, now)])
            except Exception as exc:
                log.error("the alert_refused alert itself failed: %s", type(exc).__name__)
        return changes

    async def _delivery_refused(self, change: AlertChange) -> list[AlertChange]:
        """The outbox refused an alert's notifications (a payload it takes for personal data):
        a bug, so loud — counted, logged, and raised to the duty desk like a dead delivery."""
        self.deliveries_refused += 1
        log.error(
            "alert %d (%s): the outbox refused its notifications (%s); telling the duty desk",
            change.alert.id,
            change.alert.kind,
            change.delivery_refused,
        )
        cond = delivery_failed_condition(change.alert, "outbox", self.config.clock_ns())
        try:
            return await asyncio.to_thread(self.engine.handle, [cond])
        except Exception as exc:
            log.error("the delivery_failed alert itself failed: %s", type(exc).__name__)
            return []

    async def _delivery_dead(self, item: OutboxItem) -> None:
        """Someone was not told: recorded on the alert, and raised as an alert of its own to
        the community duty desk (one open per community, so a dead channel is one alert, not
        one per message; a failure to deliver *that* alert is only recorded, never looped)."""
        log.error(
            "alert %s: delivery to %s over %s given up: %s",
            item.alert_id,
            item.member_id,
            item.channel,
            item.last_error,
        )
        failed = await asyncio.to_thread(
            self.lifecycle.delivery_failed,
            item.alert_id,
            item.member_id,
            item.channel,
            item.last_error or "",
        )
        if failed.kind == DELIVERY_FAILED:
            return
        await self.accept([delivery_failed_condition(failed, item.channel, self.config.clock_ns())])

    def _notify_workers(self) -> None:
        for worker in (self._worker, self._robot_worker):
            if worker is not None:
                worker.notify()

    def _robot_sender(self) -> RobotSender | None:
        robots = {
            name: Robot(name, kind, url, secret)
            for name, (kind, url, secret) in self.router.robots.items()
        }
        if not robots:
            return None
        base = self.config.public_url.rstrip("/") if self.config.public_url else ""

        def link_for(alert_id: int) -> str | None:
            return f"{base}/m/?alert={alert_id}" if base else None

        return RobotSender(robots, clock_ns=self.config.clock_ns, link_for=link_for)

    async def run(self, stop: asyncio.Event) -> None:
        cfg = self.config
        webhooks = WebhookSender(WebhookSecrets.from_env(cfg.environ))
        robots = self._robot_sender()
        try:
            async with MqttPublisher(
                cfg.mqtt_host,
                cfg.mqtt_port,
                client_id=cfg.mqtt_client_id,
                username=cfg.mqtt_username,
                password=cfg.mqtt_password,
                tls=cfg.mqtt_tls,
            ) as mqtt:
                self._worker = DeliveryWorker(
                    self.outbox,
                    mqtt,
                    webhooks,
                    clock_ns=cfg.clock_ns,
                    on_dead=self._delivery_dead,
                    hub=self.hub,
                    audit=self.audit,
                    skip_channels=ROBOT_CHANNELS,
                )
                if robots is not None:
                    # its own worker: a robot's items may wait a minute for its rate window
                    self._robot_worker = DeliveryWorker(
                        self.outbox, None, None, clock_ns=cfg.clock_ns,
                        on_dead=self._delivery_dead, audit=self.audit, robots=robots,
                        channels=ROBOT_CHANNELS, concurrency=ROBOT_CONCURRENCY,
                        lease_s=ROBOT_LEASE_S,
                    )  # fmt: skip
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._worker.run(stop), name="alert-delivery")
                    if self._robot_worker is not None:
                        tg.create_task(self._robot_worker.run(stop), name="robot-delivery")
                    tg.create_task(self._every(stop, cfg.tick_s, self._tick), name="alert-rules")
                    tg.create_task(
                        self._every(stop, cfg.escalation_s, self._escalate), name="escalation"
                    )
        finally:
            await webhooks.aclose()
            if robots is not None:
                await robots.aclose()

    async def _tick(self) -> None:
        conditions = self.rules.tick()
        if conditions:
            await self.accept(conditions)  # refusals are logged and reported by accept

    async def _escalate(self) -> None:
        while True:
            done = await asyncio.to_thread(self.escalator.due)
            if done:
                self._changed()
            if done:
                self._notify_workers()
            if len(done) < 200:
                return

    @staticmethod
    async def _every(stop: asyncio.Event, every_s: float, step: Callable[[], object]) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every_s)
            try:
                result = step()
                if asyncio.iscoroutine(result):
                    await result
            except Exception as exc:  # a failing loop must not take the gateway down
                log.error("%s failed: %s", getattr(step, "__name__", "alert task"), exc)
