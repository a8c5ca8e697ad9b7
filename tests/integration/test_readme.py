"""Every example in README.md runs as written.

Each ```sh block is run by bash (`set -eu`, as a person pasting it), in order, in one scratch
directory whose GRIDGATE_* variables point at the test services, with `gridgate` on the PATH
— the blocks build on each other as a reader's session would (the demo leaves the alerts the
next blocks act on). Blocks that need the HTTP API get `gridgate api` running and `API` set to
it. The ```json payload is decoded by its adapter. ```text blocks are synopses, not examples;
the two `make` commands are what CI itself runs (and test_demo runs the demo).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from adapters import gridgate_json
from devices.validation import stamp_and_check
from tests.support.gateway_util import gateway_env
from tests.support.services import ROOT, Services

pytestmark = pytest.mark.xdist_group("demo")  # the README's community is "demo"

README = ROOT / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.S | re.M)


def blocks(kind: str) -> list[str]:
    return [
        body for lang, body in FENCE.findall(README.read_text(encoding="utf-8")) if lang == kind
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def api_running(env: dict[str, str], cwd: Path, url: str) -> Iterator[None]:
    log = (cwd / "api.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "api"], env=env, cwd=cwd, stdout=log, stderr=log
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, (cwd / "api.log").read_text()
            assert time.monotonic() < deadline, "gridgate api did not start"
            time.sleep(0.2)
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_the_readme_has_examples_to_run() -> None:
    assert len(blocks("sh")) >= 5
    assert not any("…" in block for block in blocks("sh")), "a placeholder in an example"


def test_the_json_payload_example_decodes() -> None:
    [payload] = blocks("json")
    data = json.loads(payload)
    topic = f"gridgate/v1/demo/safety/{data['device_id']}/telemetry"
    [reading] = gridgate_json.decode(topic, payload.encode())
    received = data["ts"] * 1_000_000
    stamped = stamp_and_check(reading, received, received, 30 * 86400, 300)
    assert stamped.time_ns == received and stamped.values["gas_lel_pct"] == 3.5


def test_every_shell_example_runs_as_written(
    services: Services, influx_db: str, tmp_path: Path
) -> None:
    env = gateway_env(services, "demo", influx_db, tmp_path)
    for name in ("GRIDGATE_REQUIRE_REGISTRATION", "GRIDGATE_COMMUNITY", "GRIDGATE_MQTT_CLIENT_ID"):
        env.pop(name)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env |= {
        "GRIDGATE_AUDIT_PATH": str(tmp_path / "audit.sqlite3"),
        "GRIDGATE_API_PORT": str(port),
        "API": url,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDGATE_")} | env
    outputs = []
    for block in blocks("sh"):
        with api_running(env, tmp_path, url) if "$API" in block else _nothing():
            proc = subprocess.run(
                ["bash", "-eu", "-c", block],
                env=env,
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=300,
            )
        shown = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"{block}\n--- exit {proc.returncode}:\n{shown[-4000:]}"
        assert "Traceback" not in shown and "rejected:" not in shown, f"{block}\n{shown}"
        outputs.append(shown)
    everything = "\n".join(outputs)
    (tmp_path / "readme-run.txt").write_text(everything, encoding="utf-8")
    # what the examples are there to show
    assert "demo: this run" in everything
    assert '"rp_meter"."meter"' in everything  # query counts names the retention policies
    assert everything.count('"time_source": "device"') == 2  # both decoded with their clocks
    assert '"energy_kwh": 123456.78' in everything
    assert "now closed" in everything and "chain intact" in everything  # audited
    assert '"state":"resolved"' in everything  # through the API as well


@contextmanager
def _nothing() -> Iterator[None]:
    yield
