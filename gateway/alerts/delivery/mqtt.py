"""Alerts out over MQTT (R5.6): per-member topics (``gridgate/alerts/member/{member}``) for the
grid members' app and per-community topics (``gridgate/alerts/community/{community}``) for
emergency consumers, at QoS 1.

`publish` returns only once the broker sent PUBACK: that is the confirmation the outbox waits
for before marking a delivery sent. QoS 1 is at-least-once, and with MQTT 3.1.1 nothing in the
protocol tells a receiver that a message is a duplicate of one it already has (the DUP flag
only marks a retransmission of the same packet, not our resend after a timeout or a crash).
So every payload carries ``delivery_id`` (the outbox's idempotency key), and **receivers must
deduplicate by ``delivery_id``** — then they see each delivery exactly once.

A persistent session (fixed client id, clean_session=False) lets paho finish in-flight QoS 1
messages after a reconnect. Each gateway process needs its own client id: a second client with
the same id makes the broker drop the first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from gateway.alerts.delivery.outbox import DeliveryError
from gateway.mqtt.tls import MqttTls

log = logging.getLogger(__name__)

DEFAULT_CLIENT_ID = "gridgate-alerts"
DEFAULT_TIMEOUT_S = 10.0


class MqttPublisher:
    """paho-mqtt 2.x (MQTT 3.1.1, its own network thread) with an awaitable QoS 1 publish.
    Use as an async context manager, from one event loop."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str = DEFAULT_CLIENT_ID,
        username: str | None = None,
        password: str | None = None,
        keepalive_s: int = 30,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_inflight: int = 100,
        tls: MqttTls | None = None,
    ) -> None:
        self._host, self._port, self._keepalive = host, port, keepalive_s
        self.timeout_s = timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: dict[int, asyncio.Future[None]] = {}
        self._connected = threading.Event()
        self._stopping = False
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
        )
        if username:
            client.username_pw_set(username, password)
        if tls is not None:
            tls.apply(client)
        client.max_inflight_messages_set(max_inflight)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        self._client = client

    async def __aenter__(self) -> MqttPublisher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._client.connect_async(self._host, self._port, keepalive=self._keepalive)
        self._client.loop_start()

    async def close(self) -> None:
        self._stopping = True
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(DeliveryError("MQTT publisher closed"))
        self._pending.clear()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout_s: float) -> bool:
        return await asyncio.to_thread(self._connected.wait, timeout_s)

    async def publish(self, topic: str, payload: bytes, *, timeout_s: float | None = None) -> None:
        """Publish at QoS 1; returns when the broker acknowledged (PUBACK). Raises
        `DeliveryError` (retryable) when not connected, refused or not acknowledged in time;
        a message that timed out may still reach the broker later — hence ``delivery_id``."""
        if self._loop is None:
            raise DeliveryError("MQTT publisher not started")
        if not self._connected.is_set():
            # Not queued inside paho: the outbox is the queue, and retries it with backoff.
            raise DeliveryError("MQTT not connected")
        info = self._client.publish(topic, payload, qos=1)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise DeliveryError(f"MQTT publish refused ({mqtt.error_string(info.rc)})")
        # The PUBACK callback reaches this loop through call_soon_threadsafe, so it runs after
        # this synchronous block has registered the future, never before.
        fut = self._loop.create_future()
        self._pending[info.mid] = fut
        try:
            await asyncio.wait_for(fut, self.timeout_s if timeout_s is None else timeout_s)
        except TimeoutError:
            raise DeliveryError("MQTT PUBACK timeout") from None
        finally:
            if self._pending.get(info.mid) is fut:
                del self._pending[info.mid]

    # -- paho callbacks (network thread) ----------------------------------------------------

    def _on_connect(self, _c: mqtt.Client, _u: Any, flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            log.error("alert MQTT connect to %s:%s refused: %s", self._host, self._port, reason)
            return
        self._connected.set()
        log.info("alert MQTT publisher connected (session present: %s)", flags.session_present)

    def _on_disconnect(
        self, _c: mqtt.Client, _u: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        self._connected.clear()
        if not self._stopping:
            log.warning("alert MQTT publisher disconnected (%s); reconnecting", reason)

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, _reason: Any, _p: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self._acked, mid)

    def _acked(self, mid: int) -> None:
        fut = self._pending.pop(mid, None)
        if fut is not None and not fut.done():
            fut.set_result(None)


__all__ = ["DEFAULT_CLIENT_ID", "MqttPublisher"]
