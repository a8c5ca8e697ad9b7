"""A paho-mqtt 2.x `Client` that receives and acknowledges in bulk.

Measured on the stock client draining a QoS 1 backlog: for every message paho does one
`select` and about four tiny `recv`s (its `loop_read` handles one packet per wake-up when no
QoS 2 flows are open), and every `ack()` writes a wake-up byte to its socket pair. This
subclass changes only those three things:

* the socket is wrapped in a read buffer with `pending()` — paho's own hook (used for TLS) that
  tells its loop not to wait in `select` while bytes are already buffered;
* `loop_read` handles up to `READ_BURST` packets per wake-up instead of one;
* `ack_many` queues all PUBACKs of a written batch as one write with one wake-up;
* `read_paused` (a callable) stops reading while it says so — the byte budget of what is
  received but not yet acked: the loop still writes acks and keepalive pings, and the broker
  keeps what is not read;
* `on_message` is called directly: the stock client first matches every topic against the
  per-topic callbacks of `message_callback_add` (a third of its receive time here), which
  this client does not offer.

These touch paho internals (`_create_socket`, `_packet_read`, `_packet_queue`); `supported()`
checks they exist, and `PahoSource` falls back to the stock client if they do not.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable, Sequence
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

READ_BURST = 256
PAUSE_S = 0.01  # while over the byte budget: how long a read is put off
RECV_BYTES = 256 * 1024
_PUBACK = 0x40
_INTERNALS = (
    "_create_socket",
    "_packet_read",
    "_packet_queue",
    "_loop_rc_handle",
    "_handle_on_message",
    "_in_callback_mutex",
    "_sock",
)


def supported() -> bool:
    probe = mqtt.Client(CallbackAPIVersion.VERSION2)
    return all(hasattr(probe, name) for name in _INTERNALS)


class ReadBufferedSocket:
    """Serves paho's small reads from one large `recv`; everything else goes to the socket."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._buf = b""
        self._pos = 0

    def recv(self, n: int) -> bytes:
        buf, pos = self._buf, self._pos
        if pos >= len(buf):
            data: bytes = self._sock.recv(max(n, RECV_BYTES))  # BlockingIOError passes up
            if len(data) <= n:
                return data  # includes b"" at end of stream
            self._buf, self._pos = data, n
            return data[:n]
        end = min(pos + n, len(buf))
        self._pos = end
        return buf[pos:end]

    def pending(self) -> int:
        return len(self._buf) - self._pos

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class BulkClient(mqtt.Client):
    read_paused: Callable[[], bool] | None = None
    _kept_alive = 0.0  # when a packet was last read while paused

    def _create_socket(self) -> Any:
        sock = super()._create_socket()
        if isinstance(sock, socket.socket):  # plain TCP/unix only; TLS already buffers
            return ReadBufferedSocket(sock)
        return sock

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        paused = self.read_paused
        for _ in range(READ_BURST):
            if self._sock is None:
                return MQTTErrorCode.MQTT_ERR_NO_CONN
            if paused is not None and paused():
                now = time.monotonic()
                if now - self._kept_alive < self._keepalive / 3:
                    # select() says readable until we read: without the sleep it would spin
                    time.sleep(PAUSE_S)
                    break
                # one packet now and then: paho counts bytes received as the broker's sign of
                # life, and would otherwise close the connection after a minute's pause
                self._kept_alive = now
            rc = self._packet_read()
            if rc > 0:
                return self._loop_rc_handle(rc)
            if rc == MQTTErrorCode.MQTT_ERR_AGAIN:
                break
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def message_callback_add(self, sub: str, callback: Any) -> None:
        raise TypeError("BulkClient has no per-topic callbacks: use on_message")

    def _handle_on_message(self, message: mqtt.MQTTMessage) -> None:
        on_message = self.on_message
        if on_message is None:
            return
        with self._in_callback_mutex:
            try:
                on_message(self, self._userdata, message)
            except Exception as err:
                self._easy_log(mqtt.MQTT_LOG_ERR, "Caught exception in on_message: %s", err)
                if not self.suppress_exceptions:
                    raise

    def ack_many(self, mids: Sequence[int]) -> MQTTErrorCode:
        """Queue one PUBACK per mid as a single write (MQTT 3.1.1 / QoS 1 only)."""
        if not mids:
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        packets = b"".join([struct.pack("!BBH", _PUBACK, 2, mid) for mid in mids])
        return self._packet_queue(_PUBACK, packets, 0, 1)
