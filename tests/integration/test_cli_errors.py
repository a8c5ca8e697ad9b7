"""`gridgate run` says what is wrong with the broker it was pointed at — which host and port,
which settings, why — and keeps retrying: a port nobody listens on, a broker that refuses the
credentials. The password is never printed."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.broker import PrivateBroker
from tests.support.gateway_util import gateway_env
from tests.support.services import ROOT, Services

pytestmark = pytest.mark.integration

PASSWORD = "n0t-to-be-pr1nted"


class Gridgate:
    """`gridgate run` as a process whose stderr is read line by line as it comes."""

    def __init__(self, env: dict[str, str]) -> None:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("GRIDGATE_")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "run", "--no-progress", "--workers", "1"],
            cwd=ROOT,
            env=environ | env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for_line(self, fragment: str, timeout_s: float = 20.0) -> str:
        """The first stderr line holding `fragment`; fails on timeout or if the process ends."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no line with {fragment!r} in {timeout_s} s:\n" + self.text)
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"gridgate ended before {fragment!r}:\n" + self.text)
            self.lines.append(line)
            if fragment in line:
                return line

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def terminate(self) -> int:
        """SIGTERM, and the exit status (it must stop on its own)."""
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(30)
        while (line := self._queue.get(timeout=5)) is not None:
            self.lines.append(line)
        return code


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port bound by nobody's listener: connecting is refused, deterministically
    (the socket holds the port, so nothing else can start listening on it meanwhile)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


def run_env(services: Services, unique: str, influx_db: str, tmp_path: Path) -> dict[str, str]:
    """The real InfluxDB (its own database), every file in tmp_path, and a fresh key."""
    return gateway_env(services, unique, influx_db, tmp_path) | {
        "GRIDGATE_AUDIT_PATH": str(tmp_path / "audit.sqlite3"),
        "GRIDGATE_LOG_LEVEL": "INFO",
    }


def test_an_unreachable_broker_is_an_error_naming_host_port_and_settings(
    services: Services, unique: str, influx_db: str, tmp_path: Path, closed_port: int
) -> None:
    env = run_env(services, unique, influx_db, tmp_path) | {
        "GRIDGATE_MQTT_PORT": str(closed_port),
        "GRIDGATE_MQTT_USERNAME": "gw",
        "GRIDGATE_MQTT_PASSWORD": PASSWORD,
    }
    gridgate = Gridgate(env)
    try:
        line = gridgate.wait_for_line("cannot reach the MQTT broker")
        assert " ERROR " in line, line
        assert f"at 127.0.0.1:{closed_port} (GRIDGATE_MQTT_HOST/GRIDGATE_MQTT_PORT)" in line
        assert "connection refused" in line and "retrying" in line, line
        assert gridgate.proc.poll() is None  # still running: the outside world is retried
    finally:
        code = gridgate.terminate()
    assert code == 0, gridgate.text
    # said once, not once per attempt (the next report is due after 30 s)
    assert sum("cannot reach" in x for x in gridgate.lines) == 1, gridgate.text
    assert PASSWORD not in gridgate.text


@pytest.fixture
def locked_broker(tmp_path: Path) -> Iterator[PrivateBroker]:
    broker = PrivateBroker(tmp_path / "mosquitto", allow_anonymous=False)
    broker.start()
    yield broker
    broker.stop()


def test_a_broker_refusing_the_credentials_names_them_but_not_the_password(
    services: Services,
    unique: str,
    influx_db: str,
    tmp_path: Path,
    locked_broker: PrivateBroker,
) -> None:
    env = run_env(services, unique, influx_db, tmp_path) | {
        "GRIDGATE_MQTT_PORT": str(locked_broker.port),
        "GRIDGATE_MQTT_USERNAME": "gw",
        "GRIDGATE_MQTT_PASSWORD": PASSWORD,
    }
    gridgate = Gridgate(env)
    try:
        line = gridgate.wait_for_line("refused the connection")
        assert " ERROR " in line, line
        assert f"the MQTT broker at 127.0.0.1:{locked_broker.port}" in line, line
        assert "not authorized; check GRIDGATE_MQTT_USERNAME/GRIDGATE_MQTT_PASSWORD" in line
        assert "(username set, password set)" in line, line
    finally:
        code = gridgate.terminate()
    assert code == 0, gridgate.text
    assert PASSWORD not in gridgate.text and "=gw" not in gridgate.text
