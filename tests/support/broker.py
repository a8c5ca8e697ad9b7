"""A throwaway Mosquitto for tests that stop, restart or lock down their broker."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateBroker:
    """A Mosquitto on a free loopback port with its own persistence directory.
    `allow_anonymous=False` with no password file refuses every client (CONNACK "not
    authorized"), as a broker does with wrong credentials."""

    def __init__(
        self,
        root: Path,
        *,
        allow_anonymous: bool = True,
        auth: str = "",
        autosave: str = "autosave_interval 1\n",
        listener: str = "",
        inflight: int = 10_000,
        queued: int = 1_000_000,
    ) -> None:
        """`auth`: access lines (`gridgate broker-config`'s mosquitto-auth.conf) in place of
        `allow_anonymous`; `autosave`: the persistence lines; `listener`: lines for the
        listener (its TLS files); `inflight`, `queued`: the per-client windows (beyond both,
        Mosquitto drops QoS 1 messages)."""
        self.port = free_port()
        self.root = root
        (root / "data").mkdir(parents=True, exist_ok=True)
        user = "root" if os.geteuid() == 0 else ""
        access = auth or f"allow_anonymous {'true' if allow_anonymous else 'false'}\n"
        (root / "mosquitto.conf").write_text(
            f"listener {self.port} 127.0.0.1\n{listener}"
            f"{access}persistence true\n"
            f"persistence_location {root / 'data'}/\nmax_inflight_messages {inflight}\n"
            f"max_queued_messages {queued}\n{autosave}" + (f"user {user}\n" if user else "")
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen([binary, "-c", str(self.root / "mosquitto.conf")])
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()  # Mosquitto saves its persistence file on SIGTERM
            self.proc.wait(10)
            self.proc = None


def subscribed_then_gone(port: int, drain_s: float = 0.0, topic: str = "kept/#") -> int:
    """A persistent QoS 1 subscriber to `topic`: how many messages it got before it left (it
    keeps reading until `drain_s` passes with nothing new)."""
    got, last, ready = 0, time.monotonic(), threading.Event()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"sink-{topic}", clean_session=False)

    def on_connect(cl: mqtt.Client, *_: object) -> None:
        cl.subscribe(topic, qos=1)
        ready.set()

    def on_message(*_: object) -> None:
        nonlocal got, last
        got, last = got + 1, time.monotonic()

    c.on_connect, c.on_message = on_connect, on_message
    c.connect("127.0.0.1", port)
    c.loop_start()
    assert ready.wait(10)
    last = time.monotonic()
    while time.monotonic() - last < drain_s:
        time.sleep(0.05)
    c.disconnect()
    c.loop_stop()
    return got
