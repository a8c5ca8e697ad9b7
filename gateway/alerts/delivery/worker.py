"""The delivery worker: takes due outbox items, sends them, records the outcome.

Crash safety is the outbox's ordering: an item is marked sent only after the channel confirmed
it (PUBACK, HTTP 2xx, a connected screen's queue took it). A process killed in between leaves
it pending; after its lease runs out (`lease_s`) a worker — this one restarted, or another
process — sends it again with the SAME idempotency key, and receivers that deduplicate by that
key see it exactly once.

Failures are retried with exponential backoff and jitter per channel (`RetryPolicy`): webhooks
go dead after 8 attempts by default; MQTT never does (its failures are the broker being away,
and a member's topic is the channel of last resort). A dead item is reported to `on_dead` (the
caller raises an alert of its own) and written to the audit log (R3.6 alert actions); the
outbox remembers whether that report happened, so a crash in between reports it again on the
next start — `on_dead` must therefore tolerate a repeat (key its alert by the delivery key).

The outbox is synchronous SQLAlchemy; its calls run in `asyncio.to_thread` so a busy database
never stalls the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from gateway.alerts.delivery.outbox import (
    DeliveryError,
    Outbox,
    OutboxItem,
    OutboxState,
)
from gateway.alerts.delivery.robots import ROBOT_CHANNELS
from gateway.alerts.delivery.websocket import Hub
from privacy.audit import AuditAction

log = logging.getLogger(__name__)

AUDIT_ACTOR = "gridgate-delivery"
NS = 1_000_000_000
REPORT_RETRY_S = 60.0


class MqttSender(Protocol):
    def publish(self, topic: str, payload: bytes) -> Awaitable[None]: ...


class WebhookSenderLike(Protocol):
    def send(self, url: str, body: bytes, *, delivery_id: str) -> Awaitable[None]: ...


class RobotSenderLike(Protocol):
    """`gateway.alerts.delivery.robots.RobotSender`."""

    def send(self, item: OutboxItem) -> Awaitable[None]: ...


class AuditSink(Protocol):
    """`gateway.audit.store.AuditStore`."""

    def append(
        self,
        actor: str,
        action: AuditAction,
        subject: str,
        details: Mapping[str, Any] | None = None,
    ) -> Any: ...


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Backoff after failed attempt n: ``base_s * factor**(n-1)`` capped at `max_s`, less up to
    `jitter` of itself at random (so receivers that failed together are not hit together
    again). `max_attempts=None`: never dead."""

    max_attempts: int | None = 8
    base_s: float = 2.0
    factor: float = 2.0
    max_s: float = 600.0
    jitter: float = 0.25

    def __post_init__(self) -> None:
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1 (or None: retry forever)")
        if self.base_s < 0 or self.factor < 1 or self.max_s < 0 or not 0 <= self.jitter <= 1:
            raise ValueError("bad retry policy")

    def exhausted(self, attempts: int) -> bool:
        return self.max_attempts is not None and attempts >= self.max_attempts

    def delay_s(self, attempts: int, rand: float = 0.0) -> float:
        """Seconds to wait after `attempts` failed attempts; `rand` in [0, 1)."""
        exp = min(max(attempts - 1, 0), 64)
        base = min(self.max_s, self.base_s * self.factor**exp)
        return base * (1.0 - self.jitter * rand)


DEFAULT_RETRY: Mapping[str, RetryPolicy] = {
    "webhook": RetryPolicy(max_attempts=8),
    "wecom": RetryPolicy(max_attempts=8),
    "dingtalk": RetryPolicy(max_attempts=8),
    "mqtt": RetryPolicy(max_attempts=None, base_s=1.0, max_s=60.0),
    "websocket": RetryPolicy(max_attempts=3, base_s=1.0),
}


@dataclass(slots=True)
class DeliveryStats:
    sent: int = 0
    failed: int = 0  # attempts that failed and will be retried
    dead: int = 0
    errors: int = 0  # outbox or callback errors (the item stays pending and is taken again)


class DeliveryWorker:
    """Sends outbox items, at most `concurrency` at a time. Run `run(stop)` as a task; call
    `notify()` after an enqueue to skip the poll interval."""

    def __init__(
        self,
        outbox: Outbox,
        mqtt_sender: MqttSender | None,
        webhook_sender: WebhookSenderLike | None,
        *,
        clock_ns: Callable[[], int] = time.time_ns,
        on_dead: Callable[[OutboxItem], Awaitable[None] | None],
        hub: Hub | None = None,
        audit: AuditSink | None = None,
        retry: Mapping[str, RetryPolicy] | None = None,
        concurrency: int = 16,
        poll_s: float = 0.5,
        lease_s: float = 60.0,
        shutdown_grace_s: float = 5.0,
        rand: Callable[[], float] = random.random,
        robots: RobotSenderLike | None = None,
        channels: Collection[str] | None = None,
        skip_channels: Collection[str] = (),
    ) -> None:
        """`robots`: the group-robot sender; `channels` / `skip_channels`: the channels this
        worker takes (group robots have a worker of their own, since their items may wait a
        minute for a robot's rate window and must not hold up anyone else's alerts)."""
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        for sender in (mqtt_sender, webhook_sender):
            timeout = getattr(sender, "timeout_s", None)
            if isinstance(timeout, int | float) and lease_s <= timeout:
                raise ValueError(
                    f"lease_s ({lease_s}) must exceed the senders' timeout ({timeout}): "
                    "a send still running when its lease ends is taken a second time"
                )
        self.outbox = outbox
        self.mqtt = mqtt_sender
        self.webhook = webhook_sender
        self.hub = hub
        self.robots = robots
        self._channels = None if channels is None else frozenset(channels)
        self._skip_channels = frozenset(skip_channels)
        self.audit = audit
        self.on_dead = on_dead
        self.retry = {**DEFAULT_RETRY, **(retry or {})}
        self.concurrency = concurrency
        self.poll_s = poll_s
        # Longer than any send can take (sender timeouts), or a slow send is taken twice.
        self.lease_ns = int(lease_s * NS)
        self.shutdown_grace_s = shutdown_grace_s
        self.stats = DeliveryStats()
        self._clock_ns = clock_ns
        self._rand = rand
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Unreported dead items are looked for on start, and again (at most every
        # REPORT_RETRY_S) after a report failed.
        self._report_dead_at: float | None = 0.0

    # -- driving ----------------------------------------------------------------------------

    def notify(self) -> None:
        """New items were enqueued: look now (thread-safe)."""
        loop, wake = self._loop, self._wake
        if loop is None or wake is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(wake.set)

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop` is set; then give in-flight sends `shutdown_grace_s` to finish
        (those cut off stay pending and are sent again later: safe, same key)."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        stop_wait = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                self._wake.clear()  # before looking: a notify() from now on is not lost
                if self._report_due():
                    await self._report_unreported_dead()
                started = await self._fill()
                if started and len(self._inflight) < self.concurrency:
                    continue  # maybe more are due
                waits: set[asyncio.Future[Any]] = {stop_wait, *self._inflight.values()}
                wake = asyncio.create_task(self._wake.wait())
                waits.add(wake)
                await asyncio.wait(waits, timeout=self.poll_s, return_when=asyncio.FIRST_COMPLETED)
                wake.cancel()
        finally:
            stop_wait.cancel()
            await self._drain()

    async def run_once(self) -> int:
        """Take what is due now, send it all and wait for the outcomes; returns how many were
        taken. For tests and one-shot tools; `run` is the service loop."""
        self._loop = asyncio.get_running_loop()
        if self._report_due():
            await self._report_unreported_dead()
        total = 0
        while True:
            started = await self._fill()
            total += started
            if self._inflight:
                await asyncio.wait(set(self._inflight.values()))
            if not started:
                return total

    async def _fill(self) -> int:
        free = self.concurrency - len(self._inflight)
        if free <= 0:
            return 0
        try:
            items = await asyncio.to_thread(
                self.outbox.claim,
                self._clock_ns(),
                free,
                lease_ns=self.lease_ns,
                exclude=frozenset(self._inflight),
                channels=self._channels,
                skip_channels=self._skip_channels,
            )
        except Exception:
            self.stats.errors += 1
            log.exception("alert outbox: claiming due deliveries failed; will retry")
            return 0
        for item in items:
            task = asyncio.create_task(self._deliver(item))
            self._inflight[item.idempotency_key] = task
            task.add_done_callback(self._forget(item.idempotency_key))
        return len(items)

    def _forget(self, key: str) -> Callable[[asyncio.Task[None]], None]:
        def done(_task: asyncio.Task[None]) -> None:
            self._inflight.pop(key, None)

        return done

    async def _drain(self) -> None:
        tasks = list(self._inflight.values())
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks, timeout=self.shutdown_grace_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
            log.warning(
                "%d alert deliveries cut off by shutdown; resent after restart", len(pending)
            )

    # -- one item ---------------------------------------------------------------------------

    async def _send(self, item: OutboxItem) -> None:
        if item.channel == "mqtt":
            if self.mqtt is None:
                raise DeliveryError("no MQTT publisher configured")
            await self.mqtt.publish(item.target, item.wire_body())
        elif item.channel == "webhook":
            if self.webhook is None:
                raise DeliveryError("no webhook sender configured", permanent=True)
            await self.webhook.send(item.target, item.wire_body(), delivery_id=item.idempotency_key)
        elif item.channel in ROBOT_CHANNELS:
            if self.robots is None:
                raise DeliveryError("no group robot configured", permanent=True)
            await self.robots.send(item)
        elif item.channel == "websocket":
            # Delivered only if a connected screen's queue took it: a hub with no subscriber
            # (nothing serves the WebSocket yet) received nothing, so the item is not "sent" —
            # it is retried, then dead with this reason, like any channel nobody answers on.
            if self.hub is None:
                raise DeliveryError("no WebSocket hub configured")
            if self.hub.publish(item.wire_payload()) == 0:
                raise DeliveryError("no WebSocket screen connected")
        else:
            raise DeliveryError(f"unknown channel {item.channel!r}", permanent=True)

    async def _deliver(self, item: OutboxItem) -> None:
        key = item.idempotency_key
        try:
            await self._send(item)
        except DeliveryError as exc:
            await self._failed(item, exc)
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a sender bug: retry, and say so
            log.exception("alert delivery %s: unexpected error", key)
            await self._failed(item, DeliveryError(f"internal error ({type(exc).__name__})"))
            return
        try:
            await asyncio.to_thread(self.outbox.mark_sent, key, self._clock_ns())
        except Exception:
            # Sent but not recorded: it goes out again after the lease, same key (dedup).
            self.stats.errors += 1
            log.exception("alert delivery %s sent but not recorded; it will be resent", key)
            return
        self.stats.sent += 1
        log.debug("alert delivery %s sent (%s, attempt %d)", key, item.channel, item.attempts)

    async def _failed(self, item: OutboxItem, exc: DeliveryError) -> None:
        key = item.idempotency_key
        now = self._clock_ns()
        policy = self.retry.get(item.channel, DEFAULT_RETRY["webhook"])
        dead = exc.permanent or policy.exhausted(item.attempts)
        try:
            if dead:
                await asyncio.to_thread(self.outbox.mark_failed, key, now, exc.reason, dead=True)
            else:
                delay = policy.delay_s(item.attempts, self._rand())
                if exc.retry_after_s is not None:
                    delay = max(delay, exc.retry_after_s)
                await asyncio.to_thread(
                    self.outbox.mark_failed, key, now, exc.reason, retry_at_ns=now + int(delay * NS)
                )
        except Exception:
            self.stats.errors += 1
            log.exception("alert delivery %s failed and could not be recorded", key)
            return
        if not dead:
            self.stats.failed += 1
            log.info(
                "alert delivery %s (%s) attempt %d failed: %s; retrying",
                key, item.channel, item.attempts, exc.reason,
            )  # fmt: skip
            return
        self.stats.dead += 1
        log.warning(
            "alert delivery %s (%s) dead after %d attempt(s): %s",
            key, item.channel, item.attempts, exc.reason,
        )  # fmt: skip
        dead_item = replace(item, state=OutboxState.DEAD, last_error=exc.reason, dead_ns=now)
        await self._report_dead(dead_item)

    # -- dead items -------------------------------------------------------------------------

    async def _report_dead(self, item: OutboxItem) -> None:
        """Audit record, then `on_dead`, then remember both happened."""
        try:
            if self.audit is not None:
                await asyncio.to_thread(
                    self.audit.append,
                    AUDIT_ACTOR,
                    AuditAction.ALERT_ACTION,
                    f"alert:{item.alert_id}",
                    {
                        "event": "delivery_dead",
                        "delivery_id": item.idempotency_key,
                        "member_id": item.member_id,
                        "channel": item.channel,
                        "attempts": item.attempts,
                        "error": item.last_error,
                    },
                )
            reported = self.on_dead(item)
            if inspect.isawaitable(reported):
                await reported
            await asyncio.to_thread(self.outbox.mark_dead_reported, item.idempotency_key)
        except Exception:
            self.stats.errors += 1
            self._report_later()
            log.exception("dead alert delivery %s: reporting failed", item.idempotency_key)

    def _report_due(self) -> bool:
        return self._report_dead_at is not None and time.monotonic() >= self._report_dead_at

    def _report_later(self) -> None:
        if self._report_dead_at is None:
            self._report_dead_at = time.monotonic() + REPORT_RETRY_S

    async def _report_unreported_dead(self) -> None:
        self._report_dead_at = None
        try:
            items = await asyncio.to_thread(self.outbox.dead_unreported)
        except Exception:
            self.stats.errors += 1
            self._report_later()
            log.exception("alert outbox: reading unreported dead deliveries failed")
            return
        for item in items:
            await self._report_dead(item)


__all__ = [
    "AUDIT_ACTOR",
    "DEFAULT_RETRY",
    "DeliveryStats",
    "DeliveryWorker",
    "MqttSender",
    "RetryPolicy",
    "WebhookSenderLike",
]
