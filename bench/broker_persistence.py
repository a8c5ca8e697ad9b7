"""What a broker SIGKILL loses of a backlog it had acknowledged, per Mosquitto persistence
setting, and what each setting costs in publish rate (issue 14).

Mosquitto has no write-ahead log: it snapshots its whole in-memory database to
`mosquitto.db` every `autosave_interval` seconds (or, with `autosave_on_changes`, after that
many changes). For each setting: a persistent QoS 1 subscriber goes away, N messages are
published and acknowledged, the broker is SIGKILLed right away, restarted, and the subscriber
counts what it gets back. Rates are printed as a ratio to the first setting, measured in the
same run.

    .venv/bin/python -m bench.broker_persistence [--messages 100000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from simulators.mqtt_tools import publish_all
from tests.support.broker import free_port, subscribed_then_gone

TOPIC = "bench/#"
SETTINGS = {
    "autosave_interval 60 (seconds; the old generated config)": "autosave_interval 60\n",
    "autosave_interval 1 (seconds)": "autosave_interval 1\n",
    "autosave_on_changes, every 1000 changes": "autosave_on_changes true\nautosave_interval 1000\n",
    "autosave_on_changes, every 100 changes": "autosave_on_changes true\nautosave_interval 100\n",
}


def start(conf: Path, port: int) -> subprocess.Popen[bytes]:
    """The broker, once it accepts connections (loading a large snapshot takes a while)."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    proc = subprocess.Popen([binary, "-c", str(conf)], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise
            time.sleep(0.1)


def measure(extra: str, n: int) -> tuple[float, int]:
    root = Path(tempfile.mkdtemp(prefix="gg-persist-"))
    port = free_port()
    user = "user root\n" if os.geteuid() == 0 else ""
    conf = root / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
        f"persistence_location {root}/\nmax_queued_messages 2000000\nmax_queued_bytes 0\n"
        f"{user}{extra}"
    )
    broker = start(conf, port)
    try:
        subscribed_then_gone(port, topic=TOPIC)  # it goes away: messages queue for it
        messages = [(f"bench/m/{i % 100}", b"x" * 120) for i in range(n)]
        started = time.perf_counter()
        publish_all("127.0.0.1", port, messages)  # every one acknowledged by the broker
        rate = n / (time.perf_counter() - started)
        broker.send_signal(signal.SIGKILL)
        broker.wait()
        broker = start(conf, port)
        received = subscribed_then_gone(port, 3.0, topic=TOPIC)
    finally:
        broker.terminate()
        broker.wait()
        shutil.rmtree(root, ignore_errors=True)
    return rate, n - received


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=100_000)
    args = parser.parse_args()
    base: float | None = None
    print(f"{args.messages:,} QoS 1 messages acknowledged, then the broker SIGKILLed")
    for name, extra in SETTINGS.items():
        rate, lost = measure(extra, args.messages)
        base = base or rate
        print(f"  {name:<58} {rate:>8,.0f} msg/s ({rate / base:4.2f}×)  lost {lost:>7,}")


if __name__ == "__main__":
    main()
