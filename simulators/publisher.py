"""Publish simulated traffic through a real MQTT broker, QoS 1, with exact accounting.

Tests compare the report with what lands in InfluxDB, so counts are exact: a message counts
as sent once paho has queued it, as `published_ok` once its PUBACK arrived, and `run` waits
for every PUBACK (or the ack timeout) before it returns.

paho-mqtt 2.x notes that shape this module:
- message ids are 16-bit: paho refuses a publish (``MQTT_ERR_QUEUE_SIZE``) whose mid is still
  unacknowledged, so more than 65 535 outstanding messages fail. The publisher keeps at most
  `max_inflight` outstanding, blocking on a condition the `on_publish` callback signals.
- paho's own client-side window defaults to 20 in-flight messages and silently queues the
  rest; with any limit set, every PUBACK rescans all outstanding messages for queued ones
  (O(window) per ack: a 5000 window fell to 2.7k msg/s). So paho's limit is switched off
  (0) and the window is only ours: ~22k msg/s whatever its size.
- `on_publish` runs on the network thread and can fire before `publish()` has returned its
  mid, so the accounting counts slots, never looks mids up.
- a publish while disconnected returns ``MQTT_ERR_NO_CONN`` but stays queued and is sent after
  the automatic reconnect, so it counts as sent. Unacknowledged messages are resent (DUP) after
  a reconnect: when `SimReport.disconnects` > 0 a subscriber may see duplicates.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from adapters.nbiot import PUSH_PREFIX
from devices.errors import GridgateError
from simulators.fleet import make_fleet
from simulators.malformed import VALID
from simulators.push import Pusher
from simulators.traffic import MessageSource, Traffic

DEFAULT_MAX_INFLIGHT = 1000
MAX_MID = 65_535
_QUEUED = (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN)  # NO_CONN: resent later
_SLEEP_MIN_S = 0.001  # shorter waits are not worth a syscall; the schedule is absolute anyway
_BURST_S = 0.05  # how far the rate limiter may catch up after a stall


class PublishError(GridgateError):
    """The broker could not be reached or refused the connection."""


@dataclass(slots=True)
class SimReport:
    sent_by_family: dict[str, int] = field(default_factory=dict)
    bad_by_reason: dict[str, int] = field(default_factory=dict)
    total: int = 0  # queued by paho: good + bad
    published_ok: int = 0  # PUBACK received
    refused: int = 0  # PUBACK with a failure reason code (MQTT 5 brokers only)
    failed: int = 0  # paho would not even queue the message
    elapsed_s: float = 0.0  # first publish to last PUBACK
    max_clock_lead_ms: int = 0  # how far bumped timestamps ran ahead of the wall clock
    disconnects: int = 0
    community: str = ""

    @property
    def unacked(self) -> int:
        return self.total - self.published_ok - self.refused

    @property
    def expected_valid(self) -> int:
        """Messages that should become stored readings: good ones plus hostile-but-valid."""
        return sum(self.sent_by_family.values()) + self.bad_by_reason.get(VALID, 0)

    @property
    def rate(self) -> float:
        return self.total / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "community": self.community,
            "total": self.total,
            "published_ok": self.published_ok,
            "unacked": self.unacked,
            "refused": self.refused,
            "failed": self.failed,
            "sent_by_family": dict(sorted(self.sent_by_family.items())),
            "bad_by_reason": dict(sorted(self.bad_by_reason.items())),
            "expected_valid": self.expected_valid,
            "elapsed_s": round(self.elapsed_s, 3),
            "rate_msgs_per_s": round(self.rate, 1),
            "max_clock_lead_ms": self.max_clock_lead_ms,
            "disconnects": self.disconnects,
        }


@dataclass(slots=True, frozen=True)
class Progress:
    sent: int
    acked: int
    elapsed_s: float
    rate: float  # messages/s over the last interval


ProgressCallback = Callable[[Progress], None]


class _Pacer:
    """Token bucket as virtual scheduling (GCRA): message n is due at start + n/rate, with up
    to `_BURST_S` of catch-up after a stall, so the average rate is exact without sleeping
    once per message."""

    def __init__(self, rate: float, now: float) -> None:
        self.interval = 1.0 / rate
        self.base = now
        self.n = 0  # due = base + n·interval: no drift from summing floats

    def reserve(self, now: float) -> float:
        """Take the next slot; seconds to wait before sending (<= 0: send now)."""
        due = self.base + self.n * self.interval
        if due < now - _BURST_S:  # stalled: forget the backlog beyond the burst
            self.base, self.n, due = now - _BURST_S, 0, now - _BURST_S
        self.n += 1
        return due - now


class Publisher:
    """One MQTT connection (v3.1.1, clean session) publishing QoS 1 with a bounded window."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 18830,
        *,
        client_id: str | None = None,
        max_inflight: int = DEFAULT_MAX_INFLIGHT,
        keepalive: int = 30,
        connect_timeout_s: float = 10.0,
    ) -> None:
        if not 1 <= max_inflight < MAX_MID:
            raise ValueError(f"max_inflight must be within 1..{MAX_MID - 1}")
        self.host = host
        self.port = port
        self.max_inflight = max_inflight
        self.keepalive = keepalive
        self.connect_timeout_s = connect_timeout_s
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"gridgate-sim-{uuid.uuid4().hex[:12]}",
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        self.client.max_inflight_messages_set(0)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self._cond = threading.Condition()
        self._outstanding = 0
        self._acked = 0
        self._nacked = 0
        self._disconnects = 0
        self._connected = threading.Event()
        self._connect_error = ""
        self._stop = threading.Event()
        self._looping = False
        self.pusher: Pusher | None = None

    def push_to(
        self,
        url: str,
        *,
        onenet_token: str = "",
        ctwing_token: str = "",
        hikvision_secret: str = "",
    ) -> None:
        """Send NB-IoT devices' messages and Hikvision terminals' events (`$push/…` topics) to
        the gateway's push listener at `url`, as their platforms and terminals would; without
        it they count as failed."""
        self.pusher = Pusher(
            url,
            onenet_token=onenet_token,
            ctwing_token=ctwing_token,
            hikvision_secret=hikvision_secret,
            on_done=self._on_pushed,
        )

    def _on_pushed(self, ok: bool) -> None:
        with self._cond:
            self._outstanding -= 1
            if ok:
                self._acked += 1
            else:
                self._nacked += 1
            self._cond.notify()

    # -- connection ---------------------------------------------------------------------------

    def connect(self) -> None:
        try:
            self.client.connect(self.host, self.port, self.keepalive)
        except OSError as exc:
            raise PublishError(f"cannot reach MQTT broker {self.host}:{self.port}: {exc}") from exc
        self.client.loop_start()
        self._looping = True
        if not self._connected.wait(self.connect_timeout_s) or self._connect_error:
            self.close()
            why = self._connect_error or f"no CONNACK within {self.connect_timeout_s:g} s"
            raise PublishError(f"MQTT broker {self.host}:{self.port}: {why}")

    def close(self) -> None:
        if self.pusher is not None:
            self.pusher.close()
            self.pusher = None
        if self._looping:
            self.client.disconnect()
            self.client.loop_stop()
            self._looping = False

    def __enter__(self) -> Publisher:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def request_stop(self) -> None:
        """Stop sending soon (e.g. on SIGINT); `run` still waits for outstanding PUBACKs."""
        self._stop.set()

    # -- paho callbacks (network thread) -----------------------------------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            self._connect_error = f"connection refused: {reason_code}"
        self._connected.set()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self._cond:
            self._disconnects += 1

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self._cond:
            self._outstanding -= 1
            if reason_code.is_failure:
                self._nacked += 1
            else:
                self._acked += 1
            self._cond.notify()

    # -- publishing ---------------------------------------------------------------------------

    def _take_slot(self, timeout: float) -> bool:
        with self._cond:
            if self._outstanding >= self.max_inflight:
                self._cond.wait(timeout)
                if self._outstanding >= self.max_inflight:
                    return False
            self._outstanding += 1
            return True

    def _give_back_slot(self) -> None:
        with self._cond:
            self._outstanding -= 1
            self._cond.notify()

    def run(
        self,
        source: MessageSource,
        *,
        rate: float = 0.0,
        duration_s: float | None = None,
        count: int | None = None,
        progress: ProgressCallback | None = None,
        progress_interval_s: float = 1.0,
        ack_timeout_s: float = 60.0,
    ) -> SimReport:
        """Publish from `source` at `rate` msg/s (0 = flat out) until `count` messages or
        `duration_s` seconds, whichever comes first (neither: until `request_stop`); then
        wait for the PUBACKs."""
        if rate < 0:
            raise ValueError("rate must be >= 0")
        client = self.client
        report = SimReport()
        by_family: Counter[str] = Counter()
        by_reason: Counter[str] = Counter()
        with self._cond:
            acked0, nacked0, disc0 = self._acked, self._nacked, self._disconnects
        start = time.monotonic()
        deadline = start + duration_s if duration_s is not None else float("inf")
        pacer = _Pacer(rate, start) if rate > 0 else None
        ticker = _Ticker(progress, progress_interval_s, start)

        while (count is None or report.total + report.failed < count) and not self._stop.is_set():
            now = time.monotonic()
            if now >= deadline:
                break
            ticker.maybe(now, report.total, self._acked - acked0)
            if not self._take_slot(timeout=min(0.25, progress_interval_s)):
                continue  # window full: re-check the deadline and report progress
            if pacer is not None:
                now = time.monotonic()  # taking the slot may have blocked
                wait = pacer.reserve(now)
                if now + wait >= deadline:  # due after the end: rate x duration, not one more
                    self._give_back_slot()
                    break
                if wait >= _SLEEP_MIN_S:
                    self._stop.wait(wait)
            msg = source.next_message(time.time_ns())
            if msg is None:  # the source is done (a scheduled community reached its end)
                self._give_back_slot()
                break
            try:
                if msg.topic.startswith(PUSH_PREFIX):
                    queued = self.pusher is not None
                    if self.pusher is not None:
                        self.pusher.send(msg.topic, msg.payload)
                else:
                    info = client.publish(msg.topic, msg.payload, qos=1)
                    queued = info.rc in _QUEUED
            except ValueError:  # e.g. an invalid topic: count it, do not crash the run
                queued = False
            if not queued:
                self._give_back_slot()
                report.failed += 1
                continue
            report.total += 1
            if msg.family is not None:
                by_family[msg.family.value] += 1
                lead_ms = (msg.time_ns - time.time_ns()) // 1_000_000
                report.max_clock_lead_ms = max(report.max_clock_lead_ms, lead_ms)
            else:
                by_reason[msg.bad_reason or "unlabelled"] += 1

        self._drain(ack_timeout_s, ticker, report.total, acked0)
        with self._cond:
            report.published_ok = self._acked - acked0
            report.refused = self._nacked - nacked0
            report.disconnects = self._disconnects - disc0
        report.elapsed_s = time.monotonic() - start
        report.sent_by_family = dict(by_family)
        report.bad_by_reason = dict(by_reason)
        ticker.final(report.elapsed_s, report.total, report.published_ok)
        return report

    def _drain(self, timeout_s: float, ticker: _Ticker, sent: int, acked0: int) -> None:
        end = time.monotonic() + timeout_s
        while True:
            with self._cond:
                if self._outstanding <= 0:
                    return
                left = end - time.monotonic()
                if left <= 0:
                    return
                self._cond.wait(min(left, ticker.interval))
            ticker.maybe(time.monotonic(), sent, self._acked - acked0)


class _Ticker:
    """Calls the progress callback about once per interval, with the recent rate."""

    def __init__(self, callback: ProgressCallback | None, interval: float, start: float) -> None:
        self.callback = callback
        self.interval = interval
        self.start = start
        self.next_at = start + interval
        self.last_at = start
        self.last_sent = 0

    def maybe(self, now: float, sent: int, acked: int) -> None:
        if self.callback is None or now < self.next_at:
            return
        rate = (sent - self.last_sent) / max(now - self.last_at, 1e-9)
        self.callback(Progress(sent, acked, now - self.start, rate))
        self.last_at, self.last_sent = now, sent
        self.next_at = now + self.interval

    def final(self, elapsed_s: float, sent: int, acked: int) -> None:
        if self.callback is not None:
            self.callback(Progress(sent, acked, elapsed_s, sent / elapsed_s if elapsed_s else 0.0))


def simulate(
    *,
    host: str,
    port: int,
    community: str,
    devices: int,
    seed: int = 0,
    rate: float = 0.0,
    duration_s: float | None = None,
    count: int | None = None,
    bad_ratio: float = 0.0,
    max_inflight: int = DEFAULT_MAX_INFLIGHT,
    progress: ProgressCallback | None = None,
) -> SimReport:
    """Build a fleet, publish its traffic, report: what ``gridgate simulate`` does."""
    fleet = make_fleet(community, devices, seed)
    traffic = Traffic(fleet, seed=seed, bad_ratio=bad_ratio, community=community)
    with Publisher(host, port, max_inflight=max_inflight) as pub:
        report = pub.run(traffic, rate=rate, duration_s=duration_s, count=count, progress=progress)
    report.community = community
    return report


def add_broker_arguments(parser: argparse.ArgumentParser) -> None:
    """--host/--port of the broker to publish to, defaulting to the gateway's settings."""
    parser.add_argument(
        "--host",
        default=os.environ.get("GRIDGATE_MQTT_HOST", "127.0.0.1"),
        help="MQTT broker host (env GRIDGATE_MQTT_HOST)",
    )
    parser.add_argument(
        "--port",
        type=int,
        # a string default is converted only when `simulate` runs: a bad variable must not
        # break every other command's parser
        default=os.environ.get("GRIDGATE_MQTT_PORT", "18830"),
        help="MQTT broker port (env GRIDGATE_MQTT_PORT)",
    )
