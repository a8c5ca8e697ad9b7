"""Messages in from MQTT, acknowledged only after their durable hand-off (R8 at-least-once).

The pipeline sees a `MessageSource`: something that yields batches of messages and takes acks
back. `PahoSource` is the paho-mqtt 2.x implementation: MQTT 3.1.1, a fixed client id, a
persistent session, QoS 1, `manual_ack=True`, and paho's own network loop in its thread
(`loop_start`). Measured fastest of paho's options: 3.1.1 ≈ 45k msg/s vs ≈ 28k with MQTT 5,
whose per-message properties object costs; `loop()` reads one packet per select. The number of
unacknowledged messages is bounded by the broker's in-flight window, which is what bounds the
memory here: the broker stops sending until we ack.

A broker that cannot be reached, refuses the connection or drops it is an ERROR naming the
broker, the settings that point at it and the reason (`_Outage` keeps it to the first failure,
a changed reason and one line every `REPORT_EVERY_S` after that); paho keeps retrying with
backoff, and the reconnection is logged too: the outside world being down is retried, never
silent.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
import ssl
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from gateway.mqtt import paho_fast
from gateway.mqtt.tls import MqttTls
from gateway.mqtt.tls import describe as tls_describe

log = logging.getLogger(__name__)

RETRY_MIN_S, RETRY_MAX_S = 1, 30  # paho's reconnect backoff: doubling between these
REPORT_EVERY_S = 30.0  # an outage that goes on is logged again this often
# What a received message costs beyond its payload and topic (Message, token, deque slot),
# measured with tracemalloc: the budget counts it so that many tiny messages add up too.
MESSAGE_OVERHEAD = 400
BACKOFF = f"with backoff ({RETRY_MIN_S} s doubling to {RETRY_MAX_S} s)"
# CONNACK reason codes (paho maps MQTT 3.1.1's return codes to MQTT 5's) → the setting to check
_BAD_CREDENTIALS = {134, 135}  # bad user name or password; not authorized
_BAD_CLIENT_ID = 133
_UNSPECIFIED = 128  # the reason paho gives for a connection that dropped


@dataclass(slots=True, frozen=True)
class Message:
    """One inbound message. `token` is opaque to the pipeline: it gives it back in `ack`."""

    topic: str
    payload: bytes
    received_ns: int
    token: Any


class MessageSource(Protocol):
    async def next_batch(self, max_messages: int, timeout_s: float) -> list[Message]:
        """Up to `max_messages` messages; waits at most `timeout_s` for the first one."""
        ...

    def ack(self, messages: Sequence[Message]) -> None:
        """Acknowledge messages whose readings are durably stored (or dead-lettered)."""
        ...

    @property
    def connected(self) -> bool: ...


@dataclass(slots=True, frozen=True)
class _Token:
    mid: int
    qos: int
    generation: int  # the connection it came on: a mid means nothing on a later connection
    size: int  # what it counts against the byte budget until acked


class PahoSource:
    """paho-mqtt 2.x client bridged to asyncio. Use as an async context manager."""

    def __init__(
        self,
        host: str,
        port: int,
        subscriptions: Sequence[str],
        *,
        client_id: str,
        username: str | None = None,
        password: str | None = None,
        keepalive_s: int = 30,
        bulk: bool = True,
        settings_prefix: str = "GRIDGATE_MQTT_",
        tls: MqttTls | None = None,
        max_held_bytes: int = 0,
    ) -> None:
        """`settings_prefix` names the variables that set host, port, credentials and client
        id, so that a connection problem says which setting to look at. `max_held_bytes`
        (0: none) bounds what is received but not yet acked: past it nothing more is read
        from the socket (the broker keeps the rest), so memory does not follow a backlog."""
        self._host, self._port, self._keepalive = host, port, keepalive_s
        self._prefix = settings_prefix
        self._credentials = (bool(username), bool(username) and password is not None)
        self._outage = _Outage()
        self._up = False  # connected and accepted, as far as the callbacks know
        self._ever_up = False
        self._subscriptions = list(subscriptions)
        self._buffer: collections.deque[Message] = collections.deque()
        # bytes received (written by paho's thread only) and acked (the event loop's only):
        # their difference is what the budget counts, without a lock or a lost update
        self._received_bytes = 0
        self._acked_bytes = 0
        self.max_held_bytes = max_held_bytes
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._waiting = False
        self._generation = 0
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._stopping = False
        if bulk and not paho_fast.supported():
            log.warning("paho internals changed: using the stock client (slower, still correct)")
            bulk = False
        client_class = paho_fast.BulkClient if bulk else mqtt.Client
        client = client_class(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
            manual_ack=True,
        )
        if username:
            client.username_pw_set(username, password)
        if tls is not None:
            tls.apply(client)
        client.reconnect_delay_set(min_delay=RETRY_MIN_S, max_delay=RETRY_MAX_S)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        if isinstance(client, paho_fast.BulkClient) and max_held_bytes:
            client.read_paused = self._over_budget
        elif max_held_bytes:
            log.warning("the stock paho client cannot pause reading: no byte budget")
        self._client = client

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> PahoSource:
        self._loop = asyncio.get_running_loop()
        self._client.connect_async(self._host, self._port, keepalive=self._keepalive)
        # loop_start (not our own thread running loop_forever): with paho's thread registered,
        # ack() from the asyncio thread only queues the PUBACK and wakes the network loop,
        # instead of writing to the socket concurrently with it.
        self._client.loop_start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stopping = True
        # disconnect() queues DISCONNECT after any acks already queued, so they go out first.
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)

    async def wait_subscribed(self, stop: asyncio.Event | None = None) -> bool:
        """Wait until the broker has granted our subscriptions (or `stop` is set)."""
        while not self._subscribed.is_set():
            if stop is not None and stop.is_set():
                return False
            await asyncio.to_thread(self._subscribed.wait, 0.2)
        return True

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    # -- paho callbacks (network thread) --------------------------------------------------

    @property
    def _broker(self) -> str:
        """Where, and which settings say so: what an operator needs to fix an address."""
        settings = f"{self._prefix}HOST/{self._prefix}PORT"
        return f"the MQTT broker at {self._host}:{self._port} ({settings})"

    def _on_connect(
        self, client: mqtt.Client, _u: Any, flags: Any, reason: Any, _props: Any
    ) -> None:
        if reason.is_failure:
            why = str(reason).lower()
            self._trouble(f"{self._broker} refused the connection: {why}{self._hint(reason)}")
            return
        self._generation += 1
        client.subscribe([(topic, 1) for topic in self._subscriptions])
        again, self._up, self._ever_up = self._ever_up, True, True
        self._connected.set()
        ended = self._outage.end()
        where = f"{self._host}:{self._port}"
        if ended is None:
            log.info("MQTT connected to the broker at %s (session present: %s)", where,
                     flags.session_present)  # fmt: skip
        else:
            down_s, attempts = ended
            log.warning(
                "MQTT connected to the broker at %s%s after %.0f s (%d failed attempts;"
                " session present: %s)", where, " again" if again else "", down_s, attempts,
                flags.session_present,
            )  # fmt: skip

    def _hint(self, reason: Any) -> str:
        """Which setting a refusal points at; whether credentials are set, never their value."""
        code = getattr(reason, "value", None)
        if code in _BAD_CREDENTIALS:
            user, password = (("set" if given else "not set") for given in self._credentials)
            return (
                f"; check {self._prefix}USERNAME/{self._prefix}PASSWORD (username {user},"
                f" password {password})"
            )
        if code == _BAD_CLIENT_ID:
            return f"; check {self._prefix}CLIENT_ID"
        return ""

    def _on_connect_fail(self, _c: mqtt.Client, _u: Any) -> None:
        # paho calls this from inside its `except OSError`, so the error is the one handled
        why = _connect_error(sys.exception())
        self._trouble(f"cannot reach {self._broker}: {why}")

    def _trouble(self, what: str) -> None:
        """A failed attempt: logged the first time, when the reason changes, and every
        REPORT_EVERY_S while it goes on; paho retries in any case."""
        if self._stopping:
            return
        report = self._outage.failed(what)
        if report is None:
            return
        attempts, down_s = report
        if attempts == 1:
            log.error("%s; retrying %s", what, BACKOFF)
        else:
            log.error("%s; still retrying every %d s at most (%d attempts in %.0f s)", what,
                      RETRY_MAX_S, attempts, down_s)  # fmt: skip

    def _on_subscribe(
        self, _c: mqtt.Client, _u: Any, _mid: int, reasons: list[Any], _props: Any
    ) -> None:
        if any(r.is_failure for r in reasons):
            log.error("MQTT subscription refused by the broker: %s", reasons)
            return
        self._subscribed.set()
        log.info("MQTT subscribed to %s", ", ".join(self._subscriptions))

    def _on_disconnect(
        self, _c: mqtt.Client, _u: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        self._connected.clear()
        self._subscribed.clear()
        was_up, self._up = self._up, False
        if self._stopping or not was_up:  # a refused or failed attempt is reported already
            return
        self._outage.begin()
        why = "connection lost" if getattr(reason, "value", None) == _UNSPECIFIED else str(reason)
        log.error("MQTT disconnected from %s: %s; reconnecting %s", self._broker, why, BACKOFF)

    def _over_budget(self) -> bool:
        return self._received_bytes - self._acked_bytes >= self.max_held_bytes

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        payload = bytes(msg.payload)
        size = len(payload) + len(msg._topic) + MESSAGE_OVERHEAD
        self._received_bytes += size
        self._buffer.append(
            Message(
                msg._topic.decode("utf-8", "replace"),
                payload,
                time.time_ns(),
                _Token(msg.mid, msg.qos, self._generation, size),
            )
        )
        if self._waiting:
            self._waiting = False
            assert self._loop is not None
            self._loop.call_soon_threadsafe(self._wake.set)

    # -- MessageSource --------------------------------------------------------------------

    async def next_batch(self, max_messages: int, timeout_s: float) -> list[Message]:
        buffer = self._buffer
        if not buffer and timeout_s > 0:
            self._wake.clear()
            self._waiting = True
            if not buffer:  # re-check: a message may have landed before _waiting was seen
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout_s)
            self._waiting = False
        n = min(max_messages, len(buffer))
        return [buffer.popleft() for _ in range(n)]

    def ack(self, messages: Sequence[Message]) -> None:
        self._acked_bytes += sum(m.token.size for m in messages)
        generation = self._generation
        # QoS 0 needs no ack; a message from an earlier connection will be redelivered, and
        # its mid may mean another message on this one.
        mids = [
            m.token.mid for m in messages if m.token.qos == 1 and m.token.generation == generation
        ]
        client = self._client
        if isinstance(client, paho_fast.BulkClient):
            rc = client.ack_many(mids)
            if rc is not MQTTErrorCode.MQTT_ERR_SUCCESS:
                log.debug("acks not sent: %s", rc)
            return
        for mid in mids:
            client.ack(mid, 1)

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    @property
    def held_bytes(self) -> int:
        """Bytes received and not yet acked (what the budget counts)."""
        return self._received_bytes - self._acked_bytes


class _Outage:
    """How long the broker has been away and when that was last said (paho's thread only)."""

    def __init__(self) -> None:
        self.since: float | None = None
        self.attempts = 0
        self.reported_at = 0.0
        self.reason = ""

    def begin(self) -> None:
        if self.since is None:
            self.since = time.monotonic()

    def failed(self, reason: str) -> tuple[int, float] | None:
        """Count a failed attempt; (attempts, seconds down) if it is time to say so."""
        now = time.monotonic()
        self.begin()
        self.attempts += 1
        changed, self.reason = reason != self.reason, reason
        if not changed and now - self.reported_at < REPORT_EVERY_S:
            return None
        self.reported_at = now
        return self.attempts, now - (self.since or now)

    def end(self) -> tuple[float, int] | None:
        """Connected: (seconds down, failed attempts) if there was an outage."""
        if self.since is None:
            return None
        ended = (time.monotonic() - self.since, self.attempts)
        self.since, self.attempts, self.reason = None, 0, ""
        return ended


def _connect_error(exc: BaseException | None) -> str:
    """A failed connect in a few words (the OS's own words for the rarer ones)."""
    if isinstance(exc, ssl.SSLError):  # before OSError, which it is
        return tls_describe(exc)
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return f"host name not resolved ({exc.strerror or exc})"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    return str(exc) if exc is not None else "connection failed"


async def broker_reachable(host: str, port: int, *, timeout_s: float = 2.0) -> bool:
    """The broker accepts a TCP connection (readiness checks; no session is opened)."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True
