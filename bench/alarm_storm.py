"""A `hostile` + alarm-storm run in real time (default 10 minutes, 3000 households): how many
notifications reach the grid members, against the bound the alert engine promises.

The test suite runs the same storm at 120× (tests/integration/test_alert_storm.py); this runs
it at the speed asked for (default 1×: ten real minutes) with `gridgate run` as its own
process. Every gas and smoke detector of the community flaps in and out of alarm every minute,
the `hostile` scenario sends spoofed and malformed input, and the member apps are an MQTT
subscriber. At the end it prints the storm's size, the alerts and notifications, the bound
(notified alerts × their recipients × (raise + one upgrade + first clearing + first
return)) and checks it.

    .venv/bin/python -m bench.alarm_storm [--households 3000] [--minutes 10] [--speed 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from bench.alert_latency import Gateway, clean_env
from bench.ingest import HOST, INFLUX_URL, MQTT_PORT, ROOT
from simulators.mqtt_tools import drop_session
from tests.support.members import Members
from tests.support.registered import key_file, registered_community
from tests.support.storm import storm_outcome


def say(text: str) -> None:
    print(f"alarm-storm: {text}", file=sys.stderr, flush=True)


async def run(args: argparse.Namespace, tmp: Path) -> int:
    code = "st" + uuid.uuid4().hex[:8]
    database = f"gg_{code}"
    say(f"registering a {args.households}-household community ({code})")
    _, registry_url, fleet = registered_community(args.households, args.seed, code, tmp)
    client_id = f"gw-{code}"
    env = clean_env(
        GRIDGATE_PSEUDONYM_KEY_FILE=str(key_file(tmp)),
        GRIDGATE_MQTT_HOST=HOST,
        GRIDGATE_MQTT_PORT=str(MQTT_PORT),
        GRIDGATE_MQTT_CLIENT_ID=client_id,
        GRIDGATE_INFLUX_URL=INFLUX_URL,
        GRIDGATE_INFLUX_DATABASE=database,
        GRIDGATE_COMMUNITY=code,
        GRIDGATE_DEADLETTER_PATH=str(tmp / "deadletter.sqlite3"),
        GRIDGATE_SPOOL_DIR=str(tmp / "spool"),
        GRIDGATE_REQUIRE_REGISTRATION="true",
        GRIDGATE_REGISTRY_URL=registry_url,
        GRIDGATE_AUDIT_PATH=str(tmp / "audit.sqlite3"),
        GRIDGATE_BATCH_SIZE="5000",
        GRIDGATE_LINGER_MS="200",
        GRIDGATE_LOG_LEVEL="INFO",
    )
    members = Members(HOST, MQTT_PORT, code)
    gateway = Gateway(env)
    gateway.start()
    sim_s = args.minutes * 60 + 120  # the storm starts after a minute and is watched a minute
    real_s = sim_s / args.speed
    say(f"storm of {args.minutes} min at {args.speed:g}× ({real_s:.0f} s real), hostile input too")
    try:
        await asyncio.to_thread(gateway.wait_ready)
        sim = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.cli", "simulate", "--quiet",
            "--households", str(args.households), "--speed", str(args.speed),
            "--duration", str(real_s), "--seed", str(args.seed), "--community", code,
            "--fleet-out", str(fleet), "--host", HOST, "--port", str(MQTT_PORT),
            "--scenario", f"alarm-storm@*@1m@span={args.minutes}m",
            "--scenario", "hostile@b01@1m",
            cwd=ROOT, stdout=subprocess.PIPE,
        )  # fmt: skip
        started = time.monotonic()
        communicate = asyncio.ensure_future(sim.communicate())
        while not communicate.done():
            await asyncio.wait([communicate], timeout=30)
            say(f"{time.monotonic() - started:5.0f} s: {members.count()} notifications so far")
        out, _ = communicate.result()
        if sim.returncode != 0:
            say(f"simulator failed ({sim.returncode})")
            return 1
        report: dict[str, Any] = json.loads(out)
        say("storm over; waiting for the outbox to drain")
        outcome = await storm_outcome(registry_url, tmp / "audit.sqlite3", members)
    finally:
        await asyncio.to_thread(gateway.stop)
        members.close()
        drop_session(HOST, MQTT_PORT, client_id)
        async with httpx.AsyncClient() as influx:
            await influx.post(f"{INFLUX_URL}/query", params={"q": f'DROP DATABASE "{database}"'})

    by_kind = report["messages"]["by_kind"]
    storm = report["scenario_messages"].get("alarm-storm", 0)
    alarms = by_kind.get("gas_alarm", 0) + by_kind.get("smoke_alarm", 0)
    print(f"households:           {args.households}")
    print(f"storm:                {args.minutes} min at {args.speed:g}x")
    print(f"messages published:   {report['publisher']['published_ok']}")
    print(f"storm messages:       {storm} ({alarms} alarm events)")
    print(f"hostile rejections:   {sum(report['expected_rejections'].values())} expected")
    print(f"alerts:               {len(outcome.alerts)}")
    print(f"notified alerts:      {len(outcome.notified)}")
    print(f"notifications:        {outcome.notifications} (bound {outcome.bound})")
    print(f"silent reopenings:    {outcome.steps['reopened']}")
    print(f"grouped into incidents: {outcome.steps['grouped']}")
    print(f"escalations:          {outcome.steps['escalated']} (level I unacknowledged for 5 min)")
    outcome.check()
    print("bounded: yes")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--households", type=int, default=3000)
    parser.add_argument("--minutes", type=int, default=10, help="length of the storm")
    parser.add_argument("--speed", type=float, default=1.0, help="simulated/real time")
    parser.add_argument("--seed", type=int, default=61)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gridgate-storm-") as tmp:
        return asyncio.run(run(args, Path(tmp)))


if __name__ == "__main__":
    sys.exit(main())
