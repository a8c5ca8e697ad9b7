"""`gridgate demo` as a newcomer runs it, on a terminal (a pty), through the real services.

It must say what runs where, show a live line that fits 80 columns and a line per alert step,
and end with counts of this run that add up; mistakes in its arguments are refused before
anything starts. A second run at the same place says why no new alert appears.
"""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from gateway.cli.terminal import columns
from tests.support.gateway_util import gateway_env
from tests.support.services import Services

pytestmark = pytest.mark.xdist_group("demo")

SCENARIO = "gas-leak@b01/u1@10m"
CST = timezone(timedelta(hours=8))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(services: Services, unique: str, database: str, tmp: Path) -> dict[str, str]:
    env = gateway_env(services, unique, database, tmp)
    env.pop("GRIDGATE_REQUIRE_REGISTRATION")  # the demo's devices are all registered
    env.pop("GRIDGATE_COMMUNITY")  # the demo sets its own
    env.pop("GRIDGATE_MQTT_CLIENT_ID")
    env |= {
        "GRIDGATE_AUDIT_PATH": str(tmp / "audit.sqlite3"),
        "GRIDGATE_API_PORT": str(_free_port()),
        "GRIDGATE_PUSH_PORT": str(_free_port()),  # its NB-IoT devices push here
        "COLUMNS": "80",
    }
    return {k: v for k, v in os.environ.items() if not k.startswith("GRIDGATE_")} | env


def run_on_terminal(
    args: list[str],
    env: dict[str, str],
    cwd: Path,
    timeout: float,
    *,
    interrupt_on: tuple[str, ...] = (),
) -> tuple[int, str]:
    """Run `gridgate demo ARGS` with a pty as its terminal; (exit status, what it showed).
    Each pattern of `interrupt_on` (a regex), once shown, gets the demo one Ctrl-C (SIGINT),
    in order."""
    pending = list(interrupt_on)
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "demo", *args],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        env=env,
        cwd=cwd,
    )
    os.close(slave)
    out = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the process closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
                if pending and re.search(pending[0].encode(), out):
                    pending.pop(0)
                    proc.send_signal(signal.SIGINT)
            elif proc.poll() is not None:
                break
        rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return rc, out.decode(errors="replace")


def screen_lines(shown: str) -> list[str]:
    """Every line as it was on the screen at some moment: each rewrite of the live line
    (after a carriage return) counts as one."""
    text = re.sub(r"\x1b\[K", "", shown.replace("\r\n", "\n"))
    return [part for line in text.split("\n") for part in line.split("\r") if part]


def number(pattern: str, text: str) -> int:
    found = re.search(pattern, text)
    assert found, f"{pattern!r} not in:\n{text}"
    return int(found[1].replace(",", ""))


@pytest.mark.parametrize(
    ("scenario", "says"),
    [
        ("gas-leek@b01", "did you mean 'gas-leak'"),
        ("gas-leak@b99", "'b99' is not in community"),
        ("gas-leak@b01/u1@9h", "after the end of the run"),
        ("gas-leak", "expected NAME@PLACE"),
    ],
)
def test_a_mistaken_scenario_is_refused_before_anything_starts(
    services: Services, unique: str, tmp_path: Path, scenario: str, says: str
) -> None:
    env = _env(services, unique, f"never_{unique}", tmp_path)
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "demo", "--households", "100",
         "--community", unique, "--scenario", scenario],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert says in proc.stderr
    assert time.monotonic() - started < 30
    # nothing was imported, written or started
    assert not (tmp_path / "registry.sqlite3").exists()
    assert not (tmp_path / ".run").exists()


def test_the_demo_tells_its_story_in_80_columns(
    services: Services, unique: str, influx_db: str, tmp_path: Path
) -> None:
    env = _env(services, unique, influx_db, tmp_path)
    args = ["--households", "120", "--speed", "300", "--duration", "8", "--community", unique,
            "--scenario", SCENARIO]  # fmt: skip
    rc, shown = run_on_terminal(args, env, tmp_path, timeout=240)
    lines = screen_lines(shown)
    text = "\n".join(lines)
    assert rc == 0, text
    too_wide = [line for line in lines if columns(line) > 80]
    assert not too_wide, "\n".join(too_wide)

    # what runs where, before the data
    for start_line in ("demo: simulated time", "demo: broker   mqtt://127.0.0.1:",
                       "demo: InfluxDB", "demo: alerts   gridgate alerts list",
                       "demo: screen", "demo: scenario gas-leak at b01/u1"):  # fmt: skip
        assert start_line in text
    assert "stand-in for the emergency webhook" in text
    # the simulated time ends at the present, where a person looks for recent data
    end = re.search(r"simulated time \d\d-\d\d \d\d:\d\d → (\d\d-\d\d \d\d:\d\d)", text)
    assert end, text
    now = datetime.now(CST)
    ends = datetime.strptime(f"{now.year}-{end[1]}", "%Y-%m-%d %H:%M").replace(tzinfo=CST)
    assert abs((ends - now).total_seconds()) < 180
    # the live line rewrote itself in place on the terminal
    assert re.search(r"\r\x1b\[K\d\d-\d\d \d\d:\d\d │ [\d,]+ msgs [\d,]+/s │", shown)
    # the alert, as one readable line naming the place and who was told
    assert re.search(r"#\d+ +I+ +gas_leak raised at 1号楼 1单元 → \d+ members", text), text
    # counts of this run that add up
    published = number(r"messages  ([\d,]+) published", text)
    received = number(r"· ([\d,]+) received", text)
    assert published == received > 0
    assert number(r"· ([\d,]+) still queued", text) == 0
    distinct = number(r"points    ([\d,]+) distinct", text)
    liveness = number(r"\+ ([\d,]+) liveness points", text)
    stored = number(r"InfluxDB  ([\d,]+) points of", text)
    assert stored == distinct + liveness  # a fresh database: this run is every run
    assert number(r"alerts    (\d+) raised", text) >= 1
    assert number(r"webhook   (\d+) signed deliveries", text) >= 1

    # Again at the same place, at once: no new alert, and the demo says why.
    rc, shown = run_on_terminal(args, env, tmp_path, timeout=240)
    text = "\n".join(screen_lines(shown))
    assert rc == 0, text
    assert "still open from earlier runs" in text or re.search(
        r"gas_leak reopened at 1号楼 1单元", text
    ), text
    assert "gas_leak raised at 1号楼 1单元" not in text


def test_ctrl_c_stops_the_simulator_drains_the_broker_and_sums_up(
    services: Services, unique: str, influx_db: str, tmp_path: Path
) -> None:
    """Until the present (2 simulated hours at 300×: 24 s), interrupted after a few seconds:
    the simulator stops, the gateway drains what the broker holds, the counts add up."""
    env = _env(services, unique, influx_db, tmp_path)
    args = ["--households", "120", "--speed", "300", "--history", "2h", "--community", unique,
            "--no-api"]  # fmt: skip
    rc, shown = run_on_terminal(
        args, env, tmp_path, timeout=60, interrupt_on=(r"│ [1-9][\d,]{2,} msgs",)
    )
    text = "\n".join(screen_lines(shown))
    assert rc == 0, text
    assert "demo: simulated time" in text and "(UTC+8) at 300× (24 s real)" in text
    published = number(r"messages  ([\d,]+) published", text)
    assert published == number(r"· ([\d,]+) received", text) > 0, text
    assert number(r"· ([\d,]+) still queued", text) == 0, text
    assert "stay queued at the broker" not in text, text
    assert "reached the present" not in text  # it was stopped before


def test_after_catching_up_with_the_present_it_serves_until_ctrl_c(
    services: Services, unique: str, influx_db: str, tmp_path: Path
) -> None:
    env = _env(services, unique, influx_db, tmp_path)
    args = ["--households", "60", "--speed", "600", "--history", "20m", "--community", unique,
            "--no-api"]  # fmt: skip
    rc, shown = run_on_terminal(
        args, env, tmp_path, timeout=240, interrupt_on=("reached the present",)
    )
    text = "\n".join(screen_lines(shown))
    assert rc == 0, text
    assert text.index("demo: this run") < text.index("reached the present")
