"""The HTTP API under the full community load: p50/p99 of the alert list and of a readings
history query, and raise-to-WebSocket latency, each against a baseline from the same run.

Method:

1. A registered community (default 3000 households) and `gridgate run --api` as its own
   process (gateway and API in one process, as `make demo` runs them), an admin account
   scoped to the whole community.
2. The community simulator publishes at `--speed`× (default 300×, the heaviest load the
   alert-latency benchmark found this 2-core machine to carry). Meanwhile:
   * ONE HTTP client (a thread of this process) alternates `GET /api/v1/alerts?limit=50` and
     `GET /api/v1/readings` (meter `energy_kwh`, max per building per hour over the last
     simulated day) at `--rate` requests a second — slow polls, so the client does not compete
     with what it measures;
   * `--samples` level-I elder triggers are published (each at another unit, as
     bench/alert_latency.py does); the time from the publish call to (a) the first
     WebSocket `/api/v1/ws/alerts` message for that alert and (b) the first member's MQTT
     notification is taken on this process's clock.
3. Baselines, in the same run: the same HTTP queries after the simulator has stopped and the
   gateway has drained (idle, same data), and the members' MQTT notification (the gateway's
   own delivery, which does not poll) for the WebSocket path.

    .venv/bin/python -m bench.api [--households 3000] [--speed 300] [--duration 90]
                                  [--samples 30] [--rate 5] [--seed 7]

Progress on stderr, results on stdout; never prints a payload.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import connect

from bench.alert_latency import (
    Gateway,
    MemberApps,
    Simulator,
    Trigger,
    Wearable,
    clean_env,
    cpu_snapshot,
    cpu_usage,
    percentile,
    plan_triggers,
    stop_process,
    trigger_message,
    wait_until,
)
from bench.ingest import HOST, INFLUX_URL, MQTT_PORT
from gateway.api.accounts import Accounts
from gateway.audit.store import AuditStore
from gateway.registry import Registry
from privacy.keys import KeyRing
from simulators.mqtt_tools import drop_session
from tests.support.influx_util import free_port
from tests.support.registered import registered_community

PASSWORD = "bench passphrase"
NS = 1_000_000_000


def say(text: str) -> None:
    print(f"api-bench: {text}", file=sys.stderr, flush=True)


class Poller(threading.Thread):
    """The one HTTP client: alert list and readings history, alternately, at `rate`/s."""

    def __init__(self, url: str, token: str, rate: float, sim_end_s: Any) -> None:
        super().__init__(name="http-poller", daemon=True)
        self.client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"},
                                   timeout=30)  # fmt: skip
        self.every = 1 / rate
        self.sim_end_s = sim_end_s  # () -> the simulated "now" (epoch s)
        self.times: dict[str, list[float]] = {"alerts": [], "readings": []}
        self.errors = 0
        self.halt = threading.Event()

    def once(self, what: str) -> None:
        end = int(self.sim_end_s())
        if what == "alerts":
            path, params = "/api/v1/alerts", {"limit": 50}
        else:
            path = "/api/v1/readings"
            params = {"measurement": "meter", "field": "energy_kwh", "fn": "max",
                      "window": "1h", "group_by": "building",
                      "start": _iso(end - 86400), "end": _iso(end)}  # fmt: skip
        started = time.perf_counter()
        r = self.client.get(path, params=params)
        took = (time.perf_counter() - started) * 1000
        if r.status_code != 200:
            self.errors += 1
            say(f"{path} answered {r.status_code}: {r.text[:200]}")
            return
        self.times[what].append(took)

    def run(self) -> None:
        n = 0
        while not self.halt.is_set():
            self.once("alerts" if n % 2 == 0 else "readings")
            n += 1
            self.halt.wait(self.every)

    def stop(self) -> dict[str, list[float]]:
        self.halt.set()
        self.join(60)
        return {k: sorted(v) for k, v in self.times.items()}


class Feed(threading.Thread):
    """The WebSocket client: when each trigger's alert first appeared on the feed."""

    def __init__(self, url: str, token: str, triggers: Sequence[Trigger]) -> None:
        super().__init__(name="ws-feed", daemon=True)
        self.by_alert = {(t.place, t.critical.key): t for t in triggers}
        self.arrived: dict[tuple[str, str], float] = {}
        self.messages = 0
        self._connection = connect(url.replace("http", "ws") + f"/api/v1/ws/alerts?token={token}")
        self.ws = self._connection.__enter__()
        self.snapshot = json.loads(self.ws.recv(10))

    def run(self) -> None:
        try:
            for raw in self.ws:
                now = time.perf_counter()
                message = json.loads(raw)
                self.messages += 1
                if message.get("type") != "alert":
                    continue
                alert = message["alert"]
                key = (alert["place"], alert["key"])
                trigger = self.by_alert.get(key)
                if trigger is not None and trigger.published is not None:
                    self.arrived.setdefault(key, now)
        except Exception as exc:  # closed at the end, or by the server (4008: too slow)
            code = getattr(getattr(exc, "rcvd", None), "code", None)
            if code not in (None, 1000):
                say(f"feed closed with {code}")

    def close(self) -> None:
        self._connection.__exit__(None, None, None)
        self.join(10)


def _iso(epoch_s: int) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat()


def summary(values: Sequence[float]) -> str:
    if not values:
        return "no samples"
    return (f"p50 {percentile(values, 50):7.1f} ms   p99 {percentile(values, 99):7.1f} ms   "
            f"(n {len(values)}, mean {statistics.fmean(values):.1f})")  # fmt: skip


def ratio(a: Sequence[float], b: Sequence[float], p: float) -> str:
    if not a or not b:
        return "n/a"
    return f"{percentile(a, p) / percentile(b, p):.2f}×"


def run(args: argparse.Namespace, tmp: Path, code: str) -> int:
    database = f"bench_{code}"
    say(f"building and registering {args.households} households (community {code})")
    KeyRing.generate_file(tmp / "pseudonym.key")
    _, registry_url, fleet = registered_community(args.households, args.seed, code, tmp)
    triggers = plan_triggers(registry_url, code, args.samples, args.seed)
    audit_path = tmp / "audit.sqlite3"
    with AuditStore(audit_path) as audit, Registry.open(registry_url, audit=audit) as registry:
        Accounts(registry, audit).add_user("bench-admin", PASSWORD, role="admin", scope=code,
                                           actor="bench")  # fmt: skip
    port = free_port()
    url = f"http://{HOST}:{port}"
    env = clean_env(
        GRIDGATE_MQTT_HOST=HOST, GRIDGATE_MQTT_PORT=str(MQTT_PORT),
        GRIDGATE_MQTT_CLIENT_ID=f"gw-{code}", GRIDGATE_COMMUNITY=code,
        GRIDGATE_INFLUX_URL=INFLUX_URL, GRIDGATE_INFLUX_DATABASE=database,
        GRIDGATE_PSEUDONYM_KEY_FILE=str(tmp / "pseudonym.key"),
        GRIDGATE_REGISTRY_URL=registry_url, GRIDGATE_AUDIT_PATH=str(audit_path),
        GRIDGATE_DEADLETTER_PATH=str(tmp / "deadletter.sqlite3"),
        GRIDGATE_API_PORT=str(port), GRIDGATE_LOG_LEVEL="INFO",
    )  # fmt: skip
    gateway = Gateway(env, extra_args=["--api"])
    simulator: Simulator | None = None
    members: MemberApps | None = None
    wearable: Wearable | None = None
    feed: Feed | None = None
    poller: Poller | None = None
    try:
        members = MemberApps(code, triggers, f"bench-members-{code}")
        wearable = Wearable(f"bench-wearable-{code}")
        gateway.start()
        gateway.wait_ready()
        token = httpx.post(f"{url}/api/v1/auth/token", timeout=30,
                           data={"username": "bench-admin", "password": PASSWORD}).json()["access_token"]  # fmt: skip
        feed = Feed(url, token, triggers)
        feed.start()
        say("gateway and API running; starting the simulator")
        simulator = Simulator(args, code, fleet, tmp)
        sim = simulator

        def alive() -> None:
            gateway.check_alive()
            if sim.proc.poll() is not None and sim.proc.returncode != 0:
                raise RuntimeError(f"simulator failed ({sim.proc.returncode})")

        while (first := sim.latest()) is None or first.acked == 0:
            alive()
            time.sleep(0.05)

        def sim_now() -> float:
            latest = sim.latest()
            return latest.sim_s if latest else time.time()

        run_start = first.at - first.elapsed_s
        t0 = max(time.perf_counter(), run_start + 10)  # warm-up
        t1 = run_start + args.duration - 5
        wait_until(t0, alive)
        poller = Poller(url, token, args.rate, sim_now)
        assert gateway.proc is not None
        pids = {"gateway+API": gateway.proc.pid, "simulator": sim.proc.pid}
        cpu_start = cpu_snapshot(pids)
        poller.start()
        interval = (t1 - t0) / len(triggers)
        for i, trigger in enumerate(triggers):
            wait_until(t0 + (i + 0.5) * interval, alive)
            topic, payload = trigger_message(trigger, int(sim_now()) * 1000)
            members.mark_published(trigger)
            wearable.publish(topic, payload)
        wait_until(t1, alive)
        loaded = poller.stop()
        cpu = cpu_usage(cpu_start, cpu_snapshot(pids))
        load = gateway.between(t0, t1 + 10)
        time.sleep(3)  # the last triggers' notifications
        say("load phase done; waiting for the simulator to end and the gateway to drain")
        sim.proc.wait(args.duration + 60)
        while (gs := gateway.between(time.perf_counter() - 15, time.perf_counter())) and gs[
            -1
        ].backlog:
            time.sleep(1)
        time.sleep(2)
        idle_poller = Poller(url, token, args.rate, sim_now)
        idle_poller.start()
        time.sleep(len(loaded["alerts"]) * 2 / args.rate)  # as many queries as under load
        idle = idle_poller.stop()
        errors = poller.errors + idle_poller.errors
    finally:
        if feed is not None:
            feed.close()
        if simulator is not None:
            stop_process(simulator.proc)
        gateway.stop()
        for client in (members, wearable):
            if client is not None:
                client.close()
        drop_session(HOST, MQTT_PORT, f"gw-{code}")

    sent = [t for t in triggers if t.published is not None]
    ws = sorted((feed.arrived[(t.place, t.critical.key)] - t.published) * 1000
                for t in sent if (t.place, t.critical.key) in feed.arrived and t.published)  # fmt: skip
    mqtt = sorted((t.first - t.published) * 1000 for t in sent if t.first and t.published)
    rates = [s.received_rate for s in load]
    print(f"API under load: {args.households} households at {args.speed:g}×, gridgate run --api "
          f"(one process), one HTTP client at {args.rate:g} requests/s")  # fmt: skip
    print(f"{'gateway received':<34}: {statistics.median(rates) if rates else 0:,.0f} msg/s "
          f"(median of its 10 s lines); CPU {cpu}")  # fmt: skip
    for what, label in (("alerts", "GET /alerts?limit=50"), ("readings", "GET /readings (day, per building)")):  # fmt: skip
        print(f"{label:<34}: under load {summary(loaded[what])}")
        print(f"{'':<34}  idle       {summary(idle[what])}")
        print(f"{'':<34}  load/idle  p50 {ratio(loaded[what], idle[what], 50)}   "
              f"p99 {ratio(loaded[what], idle[what], 99)}")  # fmt: skip
    print(f"{'raise → WebSocket (publish→msg)':<34}: {summary(ws)}")
    print(f"{'raise → member MQTT (baseline)':<34}: {summary(mqtt)}")
    print(f"{'':<34}  WS/MQTT    p50 {ratio(ws, mqtt, 50)}   p99 {ratio(ws, mqtt, 99)}")
    print(f"{'samples':<34}: {len(sent)} triggers, {len(ws)} seen on the feed, {len(mqtt)} by a "
          f"member; {feed.messages} feed messages; HTTP errors {errors}")  # fmt: skip
    return 0 if errors == 0 and len(ws) == len(sent) else 1


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--households", type=int, default=3000)
    parser.add_argument("--speed", type=float, default=300.0)
    parser.add_argument("--duration", type=float, default=90.0, help="seconds of load")
    parser.add_argument("--samples", type=int, default=30, help="level-I triggers")
    parser.add_argument("--rate", type=float, default=5.0, help="HTTP requests per second")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    code = "ap" + uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory(prefix="gridgate-bench-api-") as tmp:
        return run(args, Path(tmp), code)


if __name__ == "__main__":
    sys.exit(main())
