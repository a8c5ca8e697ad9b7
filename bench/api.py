"""The HTTP API under the full community load: p50/p99 of the alert list and of a readings
history query, and raise-to-WebSocket latency, each against a baseline from the same run.

Method:

1. A registered community (default 3000 households, as bench/alert_latency.py builds it) and
   `gridgate run --api` as its own process: gateway and API in one process, as `make demo`
   runs them. The API is used as a grid member whose places are the whole community — a grid
   chief if one has them; in a simulated community each chief has one grid of ~300
   households (too few wearers for the samples), so it is the community's duty desk. Its
   account is made as `gridgate users add` makes one (places from the registry).
2. The community simulator publishes at `--speed`× (default 300×, the heaviest load
   alert_latency found this 2-core machine to carry with the gateway keeping up). While it
   runs, after a warm-up:
   * ONE HTTP client (a thread of this process, one request at a time) alternates
     `GET /api/v1/alerts?limit=50` and `GET /api/v1/readings?measurement=meter&field=power_kw
     &fn=mean&window=1h&group_by=building` (the API's default range, the last day, which holds
     the whole simulated run: its clock starts (speed − 1) × duration s back) at `--rate`
     requests a second — slow polls, so the client does not compete with what it measures;
   * `--samples` level-I elder triggers are published at jittered intervals, each at another
     unit, stamped with the simulated clock (bench/alert_latency.py's plan and messages). One
     WebSocket on `/api/v1/ws/alerts` and the members' MQTT subscriber take the time from
     the publish call to (a) the first feed message for that alert (its place and key) in
     state raised or notified and (b) its first member notification — both on this
     process's `time.perf_counter`.
3. Baselines, in the same run: the same HTTP queries by the same client once the simulator has
   stopped and the gateway has written every point (idle, and the full day of data — at least
   as much as any query under load saw); and for the WebSocket, the member MQTT notification
   of the same alerts (the gateway's own delivery, which does not poll).

Load (simulator acked and gateway received msg/s, from their progress lines) and CPU use are
printed for both phases: a busy machine in the idle phase means something else was running.

    .venv/bin/python -m bench.api [--households 3000] [--speed 300] [--duration 90]
                                  [--samples 30] [--rate 5] [--idle 30] [--seed 7]

Progress on stderr, results on stdout; never prints a payload.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
from websockets.exceptions import ConnectionClosed
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
    rate,
    stop_process,
    trigger_message,
    wait_until,
)
from bench.ingest import HOST, INFLUX_URL, MQTT_PORT, influx_count
from devices.places import location_key
from gateway.api.accounts import Accounts
from gateway.audit.store import AuditStore
from gateway.registry import Member, Registry, Role
from simulators.mqtt_tools import drop_session
from tests.support.influx_util import free_port
from tests.support.registered import key_file, registered_community

PASSWORD = "bench api passphrase"
START_TIMEOUT_S = 60.0
WARMUP_S = 10.0  # load running before the first query and trigger
TAIL_S = 5.0  # load still running after the last
DELIVERY_TIMEOUT_S = 20.0  # after the last trigger: longer and it counts missing
DRAIN_TIMEOUT_S = 60.0
ALERTS = ("/api/v1/alerts", {"limit": 50})
READINGS = ("/api/v1/readings", {"measurement": "meter", "field": "power_kw", "fn": "mean",
                                 "window": "1h", "group_by": "building"})  # fmt: skip
LABELS = {"alerts": "GET /alerts?limit=50", "readings": "GET /readings power_kw 1h/building"}
RAISED = ("raised", "notified")


def say(text: str) -> None:
    print(f"api-bench: {text}", file=sys.stderr, flush=True)


class Poller:
    """The one HTTP client: alert list and readings history, alternately, one request at a
    time, starting one every 1/`rate` s (or at once after a slower one). `start` … `stop` is a
    phase; the client and its connection are the same for every phase."""

    def __init__(self, url: str, token: str, rate: float) -> None:
        self.client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"},
                                   timeout=30)  # fmt: skip
        self.every = 1 / rate
        self.errors = 0
        self.cells = 0  # readings cells in the latest answer (is the query reading data?)
        self.listed = 0  # alerts in the latest list
        self.times: dict[str, list[float]] = {}
        self.span = 0.0
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None

    def _get(self, what: str) -> None:
        path, params = ALERTS if what == "alerts" else READINGS
        started = time.perf_counter()
        try:
            r = self.client.get(path, params=params)
        except httpx.HTTPError as exc:
            self.errors += 1
            say(f"{path}: {type(exc).__name__}")
            return
        took = (time.perf_counter() - started) * 1000
        if r.status_code != 200:
            self.errors += 1
            say(f"{path} answered {r.status_code}")
            return
        self.times[what].append(took)
        if what == "readings":
            self.cells = int(r.json()["count"])
        else:
            self.listed = len(r.json()["data"])

    def _run(self) -> None:
        started = time.perf_counter()
        n = 0
        while not self._halt.is_set():
            began = time.perf_counter()
            self._get("alerts" if n % 2 == 0 else "readings")
            n += 1
            self._halt.wait(max(0.0, self.every - (time.perf_counter() - began)))
        self.span = time.perf_counter() - started

    def start(self) -> None:
        self.times = {"alerts": [], "readings": []}
        self._halt.clear()
        self._thread = threading.Thread(target=self._run, name="http-poller", daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, list[float]]:
        self._halt.set()
        if self._thread is not None:
            self._thread.join(60)
        return {k: sorted(v) for k, v in self.times.items()}

    def close(self) -> None:
        self.stop()
        self.client.close()


class Feed(threading.Thread):
    """One WebSocket on /api/v1/ws/alerts: when each trigger's alert first came on it raised
    or notified (by place and key, after the trigger was published)."""

    def __init__(self, url: str, token: str, triggers: Sequence[Trigger]) -> None:
        super().__init__(name="ws-feed", daemon=True)
        self.by_alert = {(t.place, t.critical.key): t for t in triggers}
        self.arrived: dict[tuple[str, str], float] = {}
        self.messages = 0
        self.closed_with: str | None = None
        ws_url = url.replace("http://", "ws://", 1) + f"/api/v1/ws/alerts?token={token}"
        self._stack = contextlib.ExitStack()  # connect() is a context manager (websockets 17)
        self.ws = self._stack.enter_context(connect(ws_url, open_timeout=10, max_size=2**24))
        snapshot = json.loads(self.ws.recv(10))
        if snapshot.get("type") != "snapshot":
            raise RuntimeError(f"the alert feed began with {snapshot.get('type')!r}")

    def run(self) -> None:
        try:
            for raw in self.ws:
                now = time.perf_counter()
                message = json.loads(raw)
                self.messages += 1
                if message.get("type") != "alert":
                    continue
                alert = message["alert"]
                key = (str(alert.get("place")), str(alert.get("key")))
                trigger = self.by_alert.get(key)
                if trigger is None or trigger.published is None:
                    continue
                if alert.get("state") in RAISED:
                    self.arrived.setdefault(key, now)
        except ConnectionClosed as exc:  # 4008: the API found this client too slow
            self.closed_with = f"{exc.rcvd.code} {exc.rcvd.reason}" if exc.rcvd else "no close"

    def close(self) -> None:
        self._stack.close()
        self.join(10)


def community_viewer(registry_url: str, community: str) -> Member:
    """A grid member whose places include the whole community, a grid chief first."""
    with Registry.open(registry_url) as registry:
        covering = [
            m
            for m in registry.members()
            if m.active and community in {location_key(s) for s in m.scopes}
        ]
    if not covering:
        raise SystemExit(f"api-bench: no grid member's places include community {community}")
    order = list(Role)
    return min(covering, key=lambda m: (order.index(m.role), m.id))


def wait_api(url: str, alive: Callable[[], None]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        alive()
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("the API did not come up")
        time.sleep(0.1)


def ms(values: Sequence[float], p: float) -> str:
    return f"{percentile(values, p):8.1f}" if values else f"{'-':>8}"


def times(a: Sequence[float], b: Sequence[float], p: float) -> str:
    return f"{percentile(a, p) / percentile(b, p):6.2f}×" if a and b else f"{'n/a':>7}"


def run(args: argparse.Namespace, tmp: Path, code: str) -> int:
    database = f"bench_{code}"
    say(f"building and registering {args.households} households (community {code})")
    _, registry_url, fleet = registered_community(args.households, args.seed, code, tmp)
    triggers = plan_triggers(registry_url, code, args.samples, args.seed)
    viewer = community_viewer(registry_url, code)
    audit_path = tmp / "audit.sqlite3"
    with AuditStore(audit_path) as audit, Registry.open(registry_url, audit=audit) as registry:
        Accounts(registry, audit).add_user(viewer.id, PASSWORD, actor="bench")
    port = free_port()
    url = f"http://{HOST}:{port}"
    env = clean_env(
        GRIDGATE_MQTT_HOST=HOST,
        GRIDGATE_MQTT_PORT=str(MQTT_PORT),
        GRIDGATE_MQTT_CLIENT_ID=f"gw-{code}",  # the alert publisher is gw-{code}-alerts
        GRIDGATE_COMMUNITY=code,
        GRIDGATE_INFLUX_URL=INFLUX_URL,
        GRIDGATE_INFLUX_DATABASE=database,
        GRIDGATE_PSEUDONYM_KEY_FILE=str(key_file(tmp)),
        GRIDGATE_REGISTRY_URL=registry_url,
        GRIDGATE_REQUIRE_REGISTRATION="true",
        GRIDGATE_ALERTS="true",
        GRIDGATE_AUDIT_PATH=str(audit_path),
        GRIDGATE_DEADLETTER_PATH=str(tmp / "deadletter.sqlite3"),
        GRIDGATE_SPOOL_DIR=str(tmp / "spool"),
        GRIDGATE_API_HOST=HOST,
        GRIDGATE_API_PORT=str(port),
        GRIDGATE_LOG_LEVEL="INFO",
    )
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
        wait_api(url, gateway.check_alive)
        r = httpx.post(f"{url}/api/v1/auth/token", timeout=30,
                       data={"username": viewer.id, "password": PASSWORD})  # fmt: skip
        r.raise_for_status()
        token = r.json()["access_token"]
        poller = Poller(url, token, args.rate)
        feed = Feed(url, token, triggers)
        feed.start()
        say(f"gateway and API up, signed in as {viewer.id} ({viewer.role.value}); "
            "starting the simulator")  # fmt: skip
        simulator = Simulator(args, code, fleet, tmp)
        sim = simulator

        def alive() -> None:
            gateway.check_alive()
            if sim.proc.poll() is not None and sim.proc.returncode != 0:
                raise RuntimeError(f"simulator failed ({sim.proc.returncode})")

        deadline = time.perf_counter() + START_TIMEOUT_S
        while (first := sim.latest()) is None or first.acked == 0:
            alive()
            if time.perf_counter() > deadline:
                raise RuntimeError("the simulator reported no progress")
            time.sleep(0.05)
        run_start = first.at - first.elapsed_s  # the simulator's publishing began
        t0 = max(time.perf_counter(), run_start + WARMUP_S)
        t1 = run_start + args.duration - TAIL_S
        interval = (t1 - t0) / len(triggers)
        jitter = random.Random(args.seed)
        due = [t0 + (i + 0.5 + jitter.uniform(-0.3, 0.3)) * interval for i in range(len(triggers))]
        say(f"load phase: {t1 - t0:.0f} s of HTTP polls at {args.rate:g}/s and "
            f"{len(triggers)} level-I triggers")  # fmt: skip
        wait_until(t0, alive)
        assert gateway.proc is not None
        pids = {"gateway+API": gateway.proc.pid, "simulator": sim.proc.pid,
                "this benchmark": os.getpid()}  # fmt: skip
        cpu_start = cpu_snapshot(pids)
        poller.start()
        for trigger, when in zip(triggers, due, strict=True):
            wait_until(when, alive)
            latest = sim.latest()
            assert latest is not None
            topic, payload = trigger_message(trigger, latest.sim_s * 1000)
            members.mark_published(trigger)
            wearable.publish(topic, payload)
        wait_until(t1, alive)
        loaded = poller.stop()
        loaded_span, loaded_cells, loaded_listed = poller.span, poller.cells, poller.listed
        cpu_load = cpu_usage(cpu_start, cpu_snapshot(pids))
        sim_window = sim.between(t0, t1)
        deadline = time.perf_counter() + DELIVERY_TIMEOUT_S
        while time.perf_counter() < deadline and not all(
            t.first is not None and (t.place, t.critical.key) in feed.arrived for t in triggers
        ):
            time.sleep(0.05)
        say("load phase done; waiting for the simulator to end and the gateway to write it all")
        sim.proc.wait(args.duration + 60)
        expected = sum(sim.report().get("expected_points", {}).values()) + wearable.acked
        deadline = time.perf_counter() + DRAIN_TIMEOUT_S
        while (points := influx_count(database)) < expected and time.perf_counter() < deadline:
            time.sleep(0.5)
        # the gateway's 10 s lines while the simulator ran (each covers the 10 s before it)
        gw_window = gateway.between(run_start + WARMUP_S, run_start + args.duration + 1)
        say(f"idle phase: {args.idle:g} s of the same HTTP polls ({points:,} points stored)")
        idle_pids = {"gateway+API": gateway.proc.pid, "this benchmark": os.getpid()}
        cpu_start = cpu_snapshot(idle_pids)
        poller.start()
        time.sleep(args.idle)  # the idle phase is a measuring window of this length, not a wait
        idle = poller.stop()
        idle_span, idle_cells = poller.span, poller.cells
        cpu_idle = cpu_usage(cpu_start, cpu_snapshot(idle_pids))
        errors = poller.errors
    finally:
        if feed is not None:
            feed.close()
        if poller is not None:
            poller.close()
        if simulator is not None:
            stop_process(simulator.proc)
        gateway.stop()
        for client in (members, wearable):
            if client is not None:
                client.close()

    # -- results --------------------------------------------------------------------------------
    sent = [t for t in triggers if t.published is not None]
    ws = sorted(
        (feed.arrived[(t.place, t.critical.key)] - t.published) * 1000
        for t in sent
        if t.published is not None and (t.place, t.critical.key) in feed.arrived
    )
    mqtt = sorted((t.first - t.published) * 1000 for t in sent if t.first and t.published)
    gw_rates = [s.received_rate for s in gw_window]
    load = rate(sim_window[0], sim_window[-1]) if len(sim_window) >= 2 else 0.0

    def line(label: str, text: str) -> None:
        print(f"{label:<21}: {text}")

    def request_rate(phase: dict[str, list[float]], span: float) -> str:
        n = sum(len(v) for v in phase.values())
        return f"{n} requests in {span:.0f} s ({n / span if span else 0:.1f}/s)"

    print(f"API latency under load: {args.households} households at {args.speed:g}× real time, "
          f"`gridgate run --api` (one process), as {viewer.id} ({viewer.role.value}, whole "
          f"community)")  # fmt: skip
    gw = (f"gateway received {statistics.median(gw_rates):,.0f} msg/s (median of {len(gw_rates)}"
          f" 10 s lines, {min(gw_rates):,.0f}–{max(gw_rates):,.0f}), backlog at most "
          f"{max(s.backlog for s in gw_window):,}") if gw_rates else "no gateway progress lines"  # fmt: skip
    line("load", f"{load:,.0f} msg/s acked by the broker (simulator); {gw}")
    line("CPU under load", cpu_load)
    line("CPU idle phase", cpu_idle)
    line("HTTP client", f"load: {request_rate(loaded, loaded_span)}; idle: "
         f"{request_rate(idle, idle_span)}; errors {errors}")  # fmt: skip
    line("answers", f"alert list {loaded_listed} alerts; readings {loaded_cells} cells under load "
         f"(last answer), {idle_cells} idle")  # fmt: skip
    print()
    print(f"{'':<34} {'idle':>21}   {'under load':>21}   {'load / idle':>17}")
    print(f"{'':<34} {'n':>4} {'p50 ms':>8} {'p99 ms':>8}   {'n':>4} {'p50 ms':>8} "
          f"{'p99 ms':>8}   {'p50':>7} {'p99':>8}")  # fmt: skip
    for what in ("alerts", "readings"):
        a, b = idle[what], loaded[what]
        print(f"{LABELS[what]:<34} {len(a):>4} {ms(a, 50)} {ms(a, 99)}   {len(b):>4} {ms(b, 50)} "
              f"{ms(b, 99)}   {times(b, a, 50)} {times(b, a, 99)}")  # fmt: skip
    print()
    print(f"{'raise (publish) →':<34} {'n':>4} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for label, values in (("first member MQTT notification", mqtt),
                          ("WebSocket alert message", ws)):  # fmt: skip
        top = f"{values[-1]:8.1f}" if values else f"{'-':>8}"
        print(f"{label:<34} {len(values):>4} {ms(values, 50)} {ms(values, 99)} {top}")
    print(f"{'WebSocket / MQTT':<34} {'':>4} {times(ws, mqtt, 50):>8} {times(ws, mqtt, 99):>8}")
    print()
    line("samples", f"{len(sent)} level-I triggers, {len(ws)} seen raised on the feed, "
         f"{len(mqtt)} notified to a member; {feed.messages} feed messages"
         + (f"; the feed was closed: {feed.closed_with}" if feed.closed_with else ""))  # fmt: skip
    if gateway.problems:
        worst = gateway.problems.most_common(6)
        line("gateway warnings", ", ".join(f"{n} × {w}" for w, n in worst))
    ok = errors == 0 and len(ws) == len(sent) == len(mqtt) and loaded_cells > 0
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--households", type=int, default=3000)
    parser.add_argument("--speed", type=float, default=300.0, help="simulated s per real s")
    parser.add_argument("--duration", type=float, default=90.0, help="real s the simulator runs")
    parser.add_argument("--samples", type=int, default=30, help="level-I triggers")
    parser.add_argument("--rate", type=float, default=5.0, help="HTTP requests per second")
    parser.add_argument("--idle", type=float, default=30.0, help="s of the idle baseline")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if args.households < 1 or args.samples < 1 or args.rate <= 0 or args.idle <= 0:
        parser.error("need --households >= 1, --samples >= 1, --rate > 0, --idle > 0")
    if args.duration - WARMUP_S - TAIL_S < 0.1 * args.samples:
        parser.error(f"--duration leaves too little time: {WARMUP_S + TAIL_S:g} s of warm-up and"
                     " tail plus at least 0.1 s per sample")  # fmt: skip
    code = f"ap{uuid.uuid4().hex[:6]}"
    tmp = Path(tempfile.mkdtemp(prefix="gridgate-bench-api-"))
    try:
        return run(args, tmp, code)
    finally:
        for client_id in (f"gw-{code}", f"gw-{code}-alerts"):
            try:
                drop_session(HOST, MQTT_PORT, client_id)
            except OSError as exc:
                say(f"could not drop MQTT session {client_id}: {exc}")
        try:
            httpx.post(f"{INFLUX_URL}/query", params={"q": f'DROP DATABASE "bench_{code}"'})
        except httpx.HTTPError as exc:
            say(f"could not drop InfluxDB database bench_{code}: {exc}")
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
