"""Run the gateway for integration tests: in-process (asyncio task) or as a real process."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from gateway.pipeline.metrics import GatewayMetrics
from gateway.runtime import run_gateway
from gateway.settings import Settings
from tests.support.registered import key_file
from tests.support.services import ROOT, Services


def gateway_env(services: Services, community: str, database: str, tmp: Path) -> dict[str, str]:
    return {
        "GRIDGATE_PSEUDONYM_KEY_FILE": str(key_file(tmp)),
        "GRIDGATE_MQTT_HOST": services.mqtt_host,
        "GRIDGATE_MQTT_PORT": str(services.mqtt_port),
        "GRIDGATE_INFLUX_URL": services.influx_url,
        "GRIDGATE_INFLUX_DATABASE": database,
        "GRIDGATE_COMMUNITY": community,
        "GRIDGATE_MQTT_CLIENT_ID": f"gw-{community}",
        "GRIDGATE_DEADLETTER_PATH": str(tmp / "deadletter.sqlite3"),
        "GRIDGATE_SPOOL_DIR": str(tmp / "spool"),
        "GRIDGATE_LINGER_MS": "50",
        # ad-hoc devices: these tests are about transport and storage, not the registry
        "GRIDGATE_REQUIRE_REGISTRATION": "false",
        "GRIDGATE_REGISTRY_URL": f"sqlite:///{tmp / 'registry.sqlite3'}",
        "GRIDGATE_BATCH_SIZE": "1000",
    }


def settings_for(services: Services, community: str, database: str, tmp: Path) -> Settings:
    env = gateway_env(services, community, database, tmp)
    return Settings(**{k.removeprefix("GRIDGATE_").lower(): v for k, v in env.items()})


@asynccontextmanager
async def running_gateway(
    settings: Settings, alert_clock_ns: Callable[[], int] = time.time_ns
) -> AsyncIterator[GatewayMetrics]:
    """The gateway as a task of this event loop; stopped (gracefully) on exit."""
    stop, ready = asyncio.Event(), asyncio.Event()
    metrics = GatewayMetrics()
    task = asyncio.create_task(
        run_gateway(settings, stop, metrics, ready=ready, alert_clock_ns=alert_clock_ns)
    )
    try:
        await asyncio.wait_for(ready.wait(), 30)
        yield metrics
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def start_gateway_process(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """`gridgate run` as a separate OS process (so a test can SIGKILL it); returns once it
    has subscribed."""
    start = log_path.stat().st_size if log_path.exists() else 0
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "run", "--no-progress", "--workers", "1"],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    while b"MQTT subscribed" not in log_path.read_bytes()[start:]:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("gateway did not subscribe:\n" + log_path.read_text()[-2000:])
        time.sleep(0.05)
    return proc


def pipeline_log(log_path: Path) -> str:
    """The gateway log's last lines about ingestion (not the alerts these readings raise)."""
    keep = ("gateway.pipeline", "gateway.mqtt.source", "gridgate:", "Traceback", "Error")
    lines = [ln for ln in log_path.read_text().splitlines() if any(k in ln for k in keep)]
    return "\n".join(lines[-30:])


def last_stop_report(log_text: str) -> dict[str, Any]:
    """The counters `gridgate run` logs as it exits ("stopped: {...}")."""
    line = [ln for ln in log_text.splitlines() if "stopped: {" in ln][-1]
    report: dict[str, Any] = json.loads(line.split("stopped: ", 1)[1])
    return report
