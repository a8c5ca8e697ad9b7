"""The alert side of a running gateway: rules on the pipeline's de-identified readings and
liveness changes, the engine as the pipeline's alert sink, and three background loops —
time-driven rules, escalation deadlines, and delivery from the outbox."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from devices.info import DeviceInfo
from devices.reading import Reading
from gateway.alerts.delivery import (
    DeliveryWorker,
    Hub,
    MqttPublisher,
    Outbox,
    OutboxItem,
    WebhookSecrets,
    WebhookSender,
)
from gateway.alerts.engine import AlertChange, AlertEngine
from gateway.alerts.escalation import Escalator
from gateway.alerts.lifecycle import Lifecycle
from gateway.alerts.model import Alert, Condition, PlaceLevel, place_at
from gateway.alerts.routing import Router, load_routing_policy
from gateway.alerts.rules import RuleEngine, load_rules
from gateway.liveness import LivenessEvent
from gateway.registry import Registry
from gateway.registry.store import AuditSink

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
    tick_s: float = 1.0
    escalation_s: float = 5.0
    clock_ns: Callable[[], int] = field(default=time.time_ns)


DELIVERY_FAILED = "delivery_failed"


def delivery_failed_condition(failed: Alert, channel: str, now_ns: int) -> Condition:
    """The alert that a notification of `failed` could not be delivered: at the community (the
    duty desk's place), as severe as what was not delivered, open until a person resolves it."""
    return Condition(
        rule_id=DELIVERY_FAILED,
        key=DELIVERY_FAILED,
        kind=DELIVERY_FAILED,
        severity=failed.severity,
        location=place_at(failed.location, PlaceLevel.COMMUNITY),
        level=PlaceLevel.COMMUNITY,
        at_ns=now_ns,
        detail={"failed_alert_id": failed.id, "failed_kind": failed.kind, "channel": channel},
        auto_clear=False,
    )


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
    def __init__(self, registry: Registry, audit: AuditSink, config: AlertConfig) -> None:
        self.config = config
        self.registry = registry
        self._households: dict[str, tuple[str, bool]] = {}
        self.rules = TimedRules(
            RuleEngine(load_rules(config.rules_path), households=self._household_of)
        )
        self.router = Router(load_routing_policy(config.routing_path), registry)
        self.outbox = Outbox(registry.engine, clock_ns=config.clock_ns)
        self.engine = AlertEngine(
            registry, audit, clock_ns=config.clock_ns, router=self.router, outbox=self.outbox
        )
        self.escalator = Escalator(
            self.engine.store, self.router, clock_ns=config.clock_ns, outbox=self.outbox
        )
        self.lifecycle = Lifecycle(self.engine.store, clock_ns=config.clock_ns)
        self.hub = Hub()
        self.audit = audit
        self.changes = 0
        self._worker: DeliveryWorker | None = None

    def refresh_households(self, devices: Sequence[DeviceInfo]) -> None:
        """device → (household, elder living alone), for the solitary-elder water rule.
        Queries the registry (run it in a thread); the new map is swapped in whole."""
        alone = {h.id: h.elder_alone for h in self.registry.households()}
        self._households = {
            d.device_id: (d.household, alone.get(d.household, False))
            for d in devices
            if d.household
        }

    def _household_of(self, device_id: str) -> tuple[str, bool] | None:
        return self._households.get(device_id)

    async def accept(self, conditions: list[Condition]) -> None:
        """The pipeline's alert sink: alerts and their notifications are committed together."""
        changes: list[AlertChange] = await asyncio.to_thread(self.engine.handle, conditions)
        self.changes += len(changes)
        if self._worker is not None and any(c.notify for c in changes):
            self._worker.notify()

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

    async def run(self, stop: asyncio.Event) -> None:
        cfg = self.config
        webhooks = WebhookSender(WebhookSecrets.from_env())
        try:
            async with MqttPublisher(
                cfg.mqtt_host,
                cfg.mqtt_port,
                client_id=cfg.mqtt_client_id,
                username=cfg.mqtt_username,
                password=cfg.mqtt_password,
            ) as mqtt:
                self._worker = DeliveryWorker(
                    self.outbox,
                    mqtt,
                    webhooks,
                    clock_ns=cfg.clock_ns,
                    on_dead=self._delivery_dead,
                    hub=self.hub,
                    audit=self.audit,
                )
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._worker.run(stop), name="alert-delivery")
                    tg.create_task(self._every(stop, cfg.tick_s, self._tick), name="alert-rules")
                    tg.create_task(
                        self._every(stop, cfg.escalation_s, self._escalate), name="escalation"
                    )
        finally:
            await webhooks.aclose()

    async def _tick(self) -> None:
        conditions = self.rules.tick()
        if conditions:
            await self.accept(conditions)

    async def _escalate(self) -> None:
        while True:
            done = await asyncio.to_thread(self.escalator.due)
            if done and self._worker is not None:
                self._worker.notify()
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
