"""InfluxDB goes down under a running gateway (`gridgate run`, a real process) and comes back:
nothing is lost, nothing is acknowledged before it was written, and a SIGTERM during the outage
— with the write queue full behind the failing writes — stops the gateway instead of hanging.

The InfluxDB stopped here is a private influxd (tests/support/influx_util.py): the shared
one serves every other test in parallel.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from adapters import gridgate_json
from devices.families import Family
from gateway.storage.influx_v1 import InfluxV1Client
from gateway.storage.retention import rp_name
from simulators.mqtt_tools import drop_session, publish_all
from tests.support.gateway_util import (
    gateway_env,
    last_stop_report,
    pipeline_log,
    start_gateway_process,
)
from tests.support.influx_util import PrivateInflux
from tests.support.polling import wait_for
from tests.support.readings import expected_points, family_readings, stored_points
from tests.support.services import Services
from tests.support.spool import spooled_readings

pytestmark = pytest.mark.integration

BATCH = 100
GRACE_S = 2.0  # the gateway's shutdown grace
EXIT_BOUND_S = GRACE_S + 10  # generous: a hang check, not a claim about speed
WRITE_FAILED = "InfluxDB write failed"


async def stored_count(influx: InfluxV1Client) -> int:
    return sum([await influx.count(f.value, "schema", rp=rp_name(f.value)) for f in Family])


async def wait_until(what: str, timeout_s: float, check: Callable[[], Awaitable[bool]]) -> None:
    """Poll `check` until it holds; its errors (a failed query) propagate."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.1)


@pytest.mark.parametrize(
    ("outage", "spool"),
    [("stopped", False), ("frozen", False), ("frozen", True)],
    ids=["stopped", "frozen", "frozen-spooled"],
)
async def test_influx_outage_loses_nothing_and_a_sigterm_during_it_does_not_hang(
    services: Services,
    private_influx: PrivateInflux,
    unique: str,
    influx_db: str,
    tmp_path: Path,
    outage: str,
    spool: bool,
) -> None:
    """`stopped`: connections refused. `frozen` (SIGSTOP): connections accepted and never
    answered, every write waits for its timeout — the SIGTERM must still end within the
    grace. Without a spool (or with a full one) the writers keep retrying with the write
    queue full behind them; with one, the outage is spooled and acked, and replayed after the
    restart (tests/integration/test_spool_outage.py has the spool's own cases)."""
    base_ms = int(time.time() * 1000) - 3_600_000
    before = family_readings(unique, 50, base_ms)  # 200 messages while InfluxDB is up
    during = family_readings(unique, 300, base_ms + 600_000)  # 1200: twelve batches, while down
    total = len(before) + len(during)
    env = gateway_env(services, unique, influx_db, tmp_path) | {
        "GRIDGATE_INFLUX_URL": private_influx.url,
        "GRIDGATE_BATCH_SIZE": str(BATCH),
        "GRIDGATE_SHUTDOWN_GRACE_S": str(GRACE_S),
        "GRIDGATE_INFLUX_TIMEOUT_S": "2",
        "GRIDGATE_SPOOL": "true" if spool else "false",
    }
    log_path = tmp_path / "gateway.log"
    gateway = start_gateway_process(env, log_path)
    try:
        async with InfluxV1Client(private_influx.url, influx_db) as influx:

            async def stored_at_least(n: int) -> bool:
                return await stored_count(influx) >= n

            await asyncio.to_thread(
                publish_all, services.mqtt_host, services.mqtt_port,
                [gridgate_json.encode(r) for r in before],
            )  # fmt: skip
            await wait_until("the first readings", 30, lambda: stored_at_least(len(before)))

            if outage == "frozen":
                private_influx.freeze()
            else:
                private_influx.stop()
            mark = len(log_path.read_text())
            # The broker acknowledges these whatever the gateway does: they are "published".
            await asyncio.to_thread(
                publish_all, services.mqtt_host, services.mqtt_port,
                [gridgate_json.encode(r) for r in during],
            )  # fmt: skip
            if spool:  # a write times out, then every batch goes to the spool and is acked
                await wait_for(
                    lambda: spooled_readings(tmp_path / "spool") == len(during), 60, "the spool"
                )
            else:
                # Both writers fail and retry (0.5 s, 1 s, …): more than a second, in which
                # the consumer fills the write queue behind them and waits for room.
                await wait_for(
                    lambda: log_path.read_text()[mark:].count(WRITE_FAILED) >= 4, 30, "retries"
                )
            assert gateway.poll() is None, pipeline_log(log_path)

            signalled = time.monotonic()
            gateway.send_signal(signal.SIGTERM)
            try:
                gateway.wait(EXIT_BOUND_S)
            except subprocess.TimeoutExpired:
                gateway.kill()
                gateway.wait(10)
                pytest.fail(
                    f"gateway still running {EXIT_BOUND_S:g} s after SIGTERM during an InfluxDB"
                    f" outage (shutdown grace {GRACE_S:g} s): shutdown hangs\n"
                    + pipeline_log(log_path)
                )
            stopped_after = time.monotonic() - signalled
            assert gateway.returncode == 0, pipeline_log(log_path)
            report = last_stop_report(log_path.read_text())
            assert report["written"] == len(before), (report, stopped_after)
            if spool:  # acknowledged what was written and what was spooled
                assert report["acked"] == report["spooled"] + len(before) == total, report
            else:  # acknowledged exactly what was written: nothing of the outage
                assert report["acked"] == len(before), (report, stopped_after)
                assert report["write_retries"] >= 4

            if outage == "frozen":
                private_influx.thaw()
            else:
                private_influx.start()
            gateway = start_gateway_process(env, log_path)  # the broker redelivers the rest
            await wait_until("every reading after the restart", 120, lambda: stored_at_least(total))
            stored = await stored_points(influx)
            if spool:
                await wait_for(lambda: spooled_readings(tmp_path / "spool") == 0, 30, "replay")
        expected = expected_points(before + during)
        assert len(expected) == total
        assert not expected - stored, f"lost: {sorted(expected - stored)[:5]}"
        assert not stored - expected, f"not published: {sorted(stored - expected)[:5]}"
    finally:
        if gateway.poll() is None:
            gateway.send_signal(signal.SIGTERM)
            try:
                gateway.wait(EXIT_BOUND_S + 20)
            except subprocess.TimeoutExpired:
                gateway.kill()
                gateway.wait(10)
        drop_session(services.mqtt_host, services.mqtt_port, env["GRIDGATE_MQTT_CLIENT_ID"])
