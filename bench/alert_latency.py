"""Detection-to-delivery latency of critical (level-I) alerts under the full community load.

Method:

1. A registered community (default 3000 households: fleet → registry SQLite in a temp dir,
   as the integration tests build it) and `gridgate run` as a separate process against it,
   with alerts on and otherwise default pipeline settings (batch 5000, linger 200 ms).
2. The community simulator (`python -m simulators.community_cli`) publishes every device's
   traffic at `--speed`× real time; its progress lines give the load it produced (msg/s
   acknowledged by the broker) and the simulated clock.
3. While that runs, this process acts as a wearable: it publishes a level-I elder event (SOS
   or fall, whichever the shipped rules grade I) in the gateway's own JSON format at QoS 1,
   `--samples` times at jittered intervals, each for a *different unit* (one open alert per
   place and condition key: a second SOS in the same unit would only count a repeat, never
   notify). Another client subscribes to ``gridgate/alerts/member/#`` as the members' apps do
   (deduplicating by ``delivery_id``) and matches each notification to its trigger by the
   alert's place and key (``step == "raised"``); the payload's ``device_id`` is checked too.
   Latency = first (and last) member notification received − the trigger's publish call,
   both on this process's `time.perf_counter`; it is split at the alert's ``raised_ns`` in
   the registry (the engine's wall clock): publish → raised is MQTT in, batch linger and the
   InfluxDB write, raised → member is the engine's transaction, the outbox and delivery.
4. Afterwards: every trigger must have reached every member the routing policy names; the
   gateway's counters and the InfluxDB point count (against the simulator's expected points)
   show the load was real and fully processed. Processes, MQTT sessions, the database and the
   temp dir are removed.

Why this way: the path measured is the one a real SOS takes — broker → gateway batch (linger)
→ InfluxDB write → alert engine (SQLite transaction with its outbox rows) → delivery worker →
broker → member — and it shares the gateway, the broker, the registry database and the CPU
with thousands of readings a second, which is where the delay of a critical alert comes from.
Triggers are stamped with the *simulated* clock (from the simulator's progress lines), not the
real one: the simulated clock runs hours behind, and a reading from "now" would move the
rules' time-driven clock (absence, night-flow rules) ahead of every other device and raise
alerts that are not part of the load.

The default speed, 300× (≈ 4,100 msg/s, 300 times what the 3000 households send in real time),
is the heaviest load this benchmark's 2-core machine carries with the gateway keeping up (its
backlog stays below one batch) while the simulator, Mosquitto and InfluxDB share the CPU; at
600× (≈ 8,300 msg/s) the machine is saturated and the figures measure queueing behind a
growing backlog. The CPU line of the output shows which case a run was in — and whether
something else on the machine took CPU during it.

    .venv/bin/python -m bench.alert_latency [--households 3000] [--speed 300] [--samples 100]
                                            [--duration 90] [--seed 7]

Progress goes to stderr, the results to stdout. Never prints a payload.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import select

from adapters import gridgate_json
from bench.ingest import HOST, INFLUX_URL, MQTT_PORT, ROOT, influx_count, peak_rss_mb
from devices.families import Channel, ElderEvent, Family
from devices.info import DeviceInfo
from devices.location import Location
from devices.places import PlaceLevel, place_at, place_key
from devices.reading import Reading
from gateway.alerts.model import Severity
from gateway.alerts.routing import load_routing_policy
from gateway.alerts.rules import EventRule, load_rules
from gateway.alerts.store import AlertRow
from gateway.registry import Registry
from privacy.keys import KeyRing
from simulators.mqtt_tools import drop_session
from tests.support.registered import registered_community

MEMBER_TOPICS = "gridgate/alerts/member/#"
START_TIMEOUT_S = 60.0
DELIVERY_TIMEOUT_S = 30.0  # after the last trigger: longer and a notification counts missing
WARMUP_S = 5.0  # load running before the first trigger
TAIL_S = 5.0  # load still running after the last trigger
POLL_S = 0.02
NS = 1_000_000_000


def say(text: str) -> None:
    print(f"alert-latency: {text}", file=sys.stderr, flush=True)


# -- the community and its triggers -----------------------------------------------------------


@dataclass(frozen=True)
class Critical:
    """An elder event the shipped rules grade level I: event kind, condition key, alert kind."""

    event: str
    key: str
    kind: str


def critical_elder_events() -> list[Critical]:
    """From the rules in force, so a changed rules file changes the triggers, not the result."""
    elder_events = {e.value for e in ElderEvent}
    found = []
    for rule in load_rules().rules:
        if not isinstance(rule, EventRule) or Family.ELDER not in rule.family:
            continue
        if rule.level is not PlaceLevel.UNIT:
            continue
        for event, severity in rule.kinds.items():
            if severity is Severity.I and event in elder_events:
                found.append(Critical(event, rule.condition_key, rule.condition_kind))
    if not found:
        raise SystemExit("alert-latency: the alert rules grade no elder event level I")
    return sorted(found, key=lambda c: c.event != ElderEvent.SOS.value)  # SOS first


@dataclass
class Trigger:
    device_id: str
    location: Location  # the registry's: what the gateway will use
    critical: Critical
    place: str  # the unit's place key: the alert's place
    expected: int  # member notifications the routing policy sends for it
    published: float | None = None  # time.perf_counter() at the publish call
    first: float | None = None  # first member notification received
    published_ns: int = 0  # the same two instants on the wall clock, to compare with the
    first_ns: int = 0  # gateway's own records (the alert's raised_ns)
    raised_ns: int = 0  # when the gateway's alert engine took the condition (time.time_ns)
    last: float | None = None  # latest member notification received
    notified: int = 0
    wrong_device: int = 0  # notifications naming another device (should stay 0)

    @property
    def complete(self) -> bool:
        return self.notified >= self.expected


def plan_triggers(registry_url: str, community: str, n: int, seed: int) -> list[Trigger]:
    """`n` triggers, each at another unit with a wearable (then the next critical event kind
    at the same units), each by a registered wearable of that unit."""
    criticals = critical_elder_events()
    policy = load_routing_policy()
    with Registry.open(registry_url) as registry:
        by_unit: dict[str, list[DeviceInfo]] = defaultdict(list)
        for info in registry.all_devices():
            if info.family is Family.ELDER and info.location.community == community:
                by_unit[place_key(info.location, PlaceLevel.UNIT)].append(info)
        units = sorted(by_unit)
        random.Random(seed).shuffle(units)
        capacity = len(units) * len(criticals)
        if n > capacity:
            raise SystemExit(
                f"alert-latency: at most {capacity} samples for this community ({len(units)} "
                f"units with a wearable × {len(criticals)} level-I elder events)"
            )
        triggers: list[Trigger] = []
        for round_, critical in enumerate(criticals):
            roles = policy.first_responders(Severity.I, critical.kind).roles
            for unit in units:
                if len(triggers) == n:
                    return triggers
                devices = by_unit[unit]
                info = devices[round_ % len(devices)]
                members = registry.members_for(place_at(info.location, PlaceLevel.UNIT), roles)
                expected = sum(1 for m in members for ch in m.channels if str(ch.kind) == "mqtt")
                triggers.append(Trigger(info.device_id, info.location, critical, unit, expected))
    return triggers


def trigger_message(trigger: Trigger, sim_ms: int) -> tuple[str, bytes]:
    values: dict[str, Any] = {"battery_pct": 80.0, "worn": True}
    if trigger.critical.event == ElderEvent.FALL.value:
        values["activity"] = "lying"
    reading = Reading(
        device_id=trigger.device_id,
        family=Family.ELDER,
        channel=Channel.EVENT,
        kind=trigger.critical.event,
        time_ns=sim_ms * 1_000_000,
        location=trigger.location,
        values=values,
    )
    return gridgate_json.encode(reading)


# -- MQTT clients: the wearable and the members' apps -----------------------------------------


def _client(client_id: str) -> tuple[mqtt.Client, threading.Event]:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True,
        protocol=mqtt.MQTTv311,
    )  # fmt: skip
    ready = threading.Event()
    return client, ready


class MemberApps:
    """One subscriber standing in for every member's app: deduplicates by `delivery_id`,
    matches notifications of raised alerts to triggers by (place, key)."""

    def __init__(self, community: str, triggers: Sequence[Trigger], client_id: str) -> None:
        self.community = community
        self.by_alert = {(t.place, t.critical.key): t for t in triggers}
        self.lock = threading.Lock()
        self.seen: set[str] = set()
        self.duplicates = 0
        self.unmatched = 0  # a raised alert of a trigger's place and key before its trigger
        self.background: Counter[str] = Counter()  # other alerts' notifications, by kind
        self.client, self.subscribed = _client(client_id)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.connect(HOST, MQTT_PORT)
        self.client.loop_start()
        if not self.subscribed.wait(10):
            raise RuntimeError("members' subscriber could not subscribe")

    def _on_connect(self, c: mqtt.Client, _u: object, _f: object, reason: Any, _p: object) -> None:
        if not reason.is_failure:
            c.subscribe(MEMBER_TOPICS, qos=1)

    def _on_subscribe(self, _c: mqtt.Client, _u: object, _m: int, _r: object, _p: object) -> None:
        self.subscribed.set()

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        now, now_ns = time.perf_counter(), time.time_ns()
        try:
            payload = json.loads(msg.payload)
        except ValueError:
            return
        if not isinstance(payload, dict) or payload.get("community") != self.community:
            return  # another community's alerts (other tests or benchmarks)
        with self.lock:
            delivery = str(payload.get("delivery_id"))
            if delivery in self.seen:
                self.duplicates += 1
                return
            self.seen.add(delivery)
            trigger = self.by_alert.get((str(payload.get("place")), str(payload.get("key"))))
            if trigger is None or payload.get("step") != "raised":
                self.background[str(payload.get("kind"))] += 1
                return
            if trigger.published is None:
                self.unmatched += 1
                return
            if trigger.first is None:
                trigger.first, trigger.first_ns = now, now_ns
            trigger.last = now
            trigger.notified += 1
            if payload.get("device_id") != trigger.device_id:
                trigger.wrong_device += 1

    def mark_published(self, trigger: Trigger) -> None:
        with self.lock:
            trigger.published, trigger.published_ns = time.perf_counter(), time.time_ns()

    def all_complete(self) -> bool:
        with self.lock:
            return all(t.complete for t in self.by_alert.values() if t.published is not None)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Wearable:
    """The publisher of the triggers (QoS 1), as a wristband's uplink would be."""

    def __init__(self, client_id: str) -> None:
        self.client, self.connected = _client(client_id)
        self.acked = 0
        self.client.on_connect = self._on_connect
        self.client.on_publish = self._on_publish
        self.client.connect(HOST, MQTT_PORT)
        self.client.loop_start()
        if not self.connected.wait(10):
            raise RuntimeError("trigger publisher could not connect")

    def _on_connect(self, _c: mqtt.Client, _u: object, _f: object, reason: Any, _p: object) -> None:
        if not reason.is_failure:
            self.connected.set()

    def _on_publish(self, _c: mqtt.Client, _u: object, _m: int, _r: object, _p: object) -> None:
        self.acked += 1

    def publish(self, topic: str, payload: bytes) -> None:
        info = self.client.publish(topic, payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise RuntimeError(f"trigger publish refused: {mqtt.error_string(info.rc)}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# -- the two processes ------------------------------------------------------------------------


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any GRIDGATE_* of its own (a webhook URL, another broker):
    everything the children use is set here, on 127.0.0.1."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDGATE_")}
    return env | extra


@dataclass
class SimSample:
    at: float  # perf_counter when read
    elapsed_s: float
    sim_s: int
    sent: int
    acked: int


_SIM_LINE = re.compile(r"simulate:\s+([\d.]+)s sim (\S+) sent (\d+) acked (\d+) rate")


class Simulator:
    """`python -m simulators.community_cli` with its progress lines parsed as they come."""

    def __init__(self, args: argparse.Namespace, code: str, fleet: Path, tmp: Path) -> None:
        self.report_path = tmp / "simulator.json"
        cmd = [
            sys.executable, "-m", "simulators.community_cli",
            "--households", str(args.households), "--speed", f"{args.speed:g}",
            "--duration", f"{args.duration:g}", "--seed", str(args.seed),
            "--community", code, "--fleet-out", str(fleet),
            "--host", HOST, "--port", str(MQTT_PORT),
        ]  # fmt: skip
        self.samples: list[SimSample] = []
        self.lock = threading.Lock()
        with self.report_path.open("wb") as out:
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env=clean_env(), stdout=out, stderr=subprocess.PIPE, text=True
            )
        self.reader = threading.Thread(target=self._read, name="simulator-stderr", daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            m = _SIM_LINE.search(line)
            if m is None:
                continue
            sim_s = int(datetime.fromisoformat(m[2]).timestamp())
            sample = SimSample(time.perf_counter(), float(m[1]), sim_s, int(m[3]), int(m[4]))
            with self.lock:
                self.samples.append(sample)

    def latest(self) -> SimSample | None:
        with self.lock:
            return self.samples[-1] if self.samples else None

    def between(self, start: float, end: float) -> list[SimSample]:
        with self.lock:
            return [s for s in self.samples if start <= s.at <= end]

    def report(self) -> dict[str, Any]:
        text = self.report_path.read_text() if self.report_path.exists() else ""
        loaded: dict[str, Any] = json.loads(text) if text.strip() else {}
        return loaded


@dataclass
class GatewaySample:
    at: float
    received: int
    received_rate: float
    written: int
    backlog: int


_GW_PROGRESS = re.compile(
    r"received\s+([\d,]+)\s+\(\s*([\d,]+)/s\)\s+written\s+([\d,]+)\s+\(\s*[\d,]+/s\)"
    r"\s+dead-lettered\s+[\d,]+\s+backlog\s+(-?[\d,]+)"
)
_GW_LOG = re.compile(r"^\S+ \S+ (WARNING|ERROR|CRITICAL)\s+(\S+): (.*)$")


def _int(text: str) -> int:
    return int(text.replace(",", ""))


class Gateway:
    """`gridgate run` (with its 10 s progress lines) as a separate process."""

    def __init__(self, env: dict[str, str], extra_args: Sequence[str] = ()) -> None:
        self.env = env
        self.extra_args = list(extra_args)  # e.g. --api
        self.proc: subprocess.Popen[str] | None = None
        self.reader: threading.Thread | None = None
        self.subscribed = threading.Event()
        self.alerts_connected = threading.Event()
        self.lock = threading.Lock()
        self.samples: list[GatewaySample] = []
        self.problems: Counter[str] = Counter()  # warnings and errors by level and logger
        self.tail: deque[str] = deque(maxlen=30)
        self.final: dict[str, Any] = {}  # the counters it logs when it stops

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "run", *self.extra_args],
            cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.reader = threading.Thread(target=self._read, name="gateway-stderr", daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.rstrip("\n")
            with self.lock:
                self.tail.append(line)
            if "MQTT subscribed" in line:
                self.subscribed.set()
            elif "alert MQTT publisher connected" in line:
                self.alerts_connected.set()
            if (m := _GW_PROGRESS.search(line)) is not None:
                sample = GatewaySample(
                    time.perf_counter(), _int(m[1]), float(_int(m[2])), _int(m[3]), _int(m[4])
                )
                with self.lock:
                    self.samples.append(sample)
            elif (m := _GW_LOG.match(line)) is not None:
                what = f"{m[1]} {m[2]}"
                if "webhook_unset" in m[3]:
                    what += " (webhook_unset)"
                with self.lock:
                    self.problems[what] += 1
            if (i := line.find("stopped: {")) >= 0:
                with contextlib.suppress(ValueError):
                    self.final = json.loads(line[i + len("stopped: ") :])

    def check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            code = None if self.proc is None else self.proc.returncode
            with self.lock:
                tail = "\n".join(self.tail)
            raise RuntimeError(f"gateway exited ({code}); its last log lines:\n{tail}")

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (self.subscribed.is_set() and self.alerts_connected.is_set()):
            self.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError("gateway did not subscribe and connect its alert publisher")
            time.sleep(0.05)

    def between(self, start: float, end: float) -> list[GatewaySample]:
        with self.lock:
            return [s for s in self.samples if start <= s.at <= end]

    def stop(self) -> None:
        """SIGTERM (graceful: it flushes, then logs its counters), then read the rest."""
        stop_process(self.proc)
        if self.reader is not None:
            self.reader.join(10)


def stop_process(proc: subprocess.Popen[Any] | None, timeout_s: float = 30) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def read_raised(registry_url: str, community: str, triggers: Sequence[Trigger]) -> None:
    """Each trigger's alert as the gateway recorded it: `raised_ns` is the engine's clock when
    it took the condition, after the reading's batch was written to InfluxDB."""
    by_alert = {(t.place, t.critical.key): t for t in triggers}
    with Registry.open(registry_url) as registry, registry.reading() as session:
        rows = session.execute(
            select(AlertRow.place, AlertRow.key, AlertRow.raised_ns).where(
                AlertRow.community == community
            )
        ).all()
    for place, key, raised_ns in rows:
        if (trigger := by_alert.get((place, key))) is not None:
            trigger.raised_ns = raised_ns


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU time so far (Linux /proc; None elsewhere): the machine's busy and total jiffies, and
    seconds used by each named process."""

    at: float
    machine: tuple[int, int] | None
    procs: dict[str, float | None]


def cpu_snapshot(pids: dict[str, int]) -> CpuSnapshot:
    machine: tuple[int, int] | None = None
    try:
        jiffies = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        machine = (sum(jiffies) - jiffies[3] - jiffies[4], sum(jiffies))  # idle and iowait
    except (OSError, ValueError, IndexError):
        pass
    procs: dict[str, float | None] = {}
    for name, pid in pids.items():
        try:  # utime and stime: fields 14 and 15, counted from the state after "(comm)"
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            procs[name] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            procs[name] = None
    return CpuSnapshot(time.perf_counter(), machine, procs)


def cpu_usage(a: CpuSnapshot, b: CpuSnapshot) -> str:
    """`a` → `b` as "machine 93 % of 2 cores; gateway 61 %, … of one core"."""
    span = b.at - a.at
    parts = []
    if a.machine and b.machine and b.machine[1] > a.machine[1]:
        busy = (b.machine[0] - a.machine[0]) / (b.machine[1] - a.machine[1])
        parts.append(f"machine {busy:.0%} busy ({os.cpu_count()} cores)")
    used = []
    for name, start in a.procs.items():
        end = b.procs.get(name)
        if start is not None and end is not None and span > 0:
            used.append(f"{name} {(end - start) / span:.0%}")
    if used:
        parts.append("of one core: " + ", ".join(used))
    return "; ".join(parts) or "not available (no /proc)"


# -- measuring --------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest rank: the smallest value with at least p % of the values at or below it."""
    k = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[k - 1]


def wait_until(due: float, alive: Callable[[], None]) -> None:
    while (left := due - time.perf_counter()) > 0:
        alive()
        time.sleep(min(POLL_S, left))


def rate(first: SimSample, last: SimSample) -> float:
    span = last.elapsed_s - first.elapsed_s
    return (last.acked - first.acked) / span if span > 0 else 0.0


def run(args: argparse.Namespace, tmp: Path, code: str) -> int:
    database = f"bench_{code}"
    say(f"building and registering {args.households} households (community {code})")
    KeyRing.generate_file(tmp / "pseudonym.key")
    _, registry_url, fleet = registered_community(args.households, args.seed, code, tmp)
    triggers = plan_triggers(registry_url, code, args.samples, args.seed)
    kinds = Counter(t.critical.kind for t in triggers)
    env = clean_env(
        GRIDGATE_MQTT_HOST=HOST,
        GRIDGATE_MQTT_PORT=str(MQTT_PORT),
        GRIDGATE_MQTT_CLIENT_ID=f"gw-{code}",  # the alert publisher is gw-{code}-alerts
        GRIDGATE_COMMUNITY=code,
        GRIDGATE_INFLUX_URL=INFLUX_URL,
        GRIDGATE_INFLUX_DATABASE=database,
        GRIDGATE_PSEUDONYM_KEY_FILE=str(tmp / "pseudonym.key"),
        GRIDGATE_REGISTRY_URL=registry_url,
        GRIDGATE_REQUIRE_REGISTRATION="true",
        GRIDGATE_ALERTS="true",
        GRIDGATE_AUDIT_PATH=str(tmp / "audit.sqlite3"),
        GRIDGATE_DEADLETTER_PATH=str(tmp / "deadletter.sqlite3"),
        GRIDGATE_SPOOL_DIR=str(tmp / "spool"),
        GRIDGATE_LOG_LEVEL="INFO",
    )
    gateway = Gateway(env)
    simulator: Simulator | None = None
    members: MemberApps | None = None
    wearable: Wearable | None = None
    try:
        members = MemberApps(code, triggers, f"bench-members-{code}")
        wearable = Wearable(f"bench-wearable-{code}")
        gateway.start()
        gateway.wait_ready()
        say("gateway running (alerts on); starting the simulator")
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
        if t1 - t0 < 0.1 * len(triggers):
            raise SystemExit(
                f"alert-latency: --duration {args.duration:g} leaves {max(t1 - t0, 0):.0f} s for "
                f"{len(triggers)} samples; allow at least 0.1 s each plus {WARMUP_S + TAIL_S:g} s"
            )
        interval = (t1 - t0) / len(triggers)
        jitter = random.Random(args.seed)
        due = [t0 + (i + 0.5 + jitter.uniform(-0.3, 0.3)) * interval for i in range(len(triggers))]
        say(f"publishing {len(triggers)} level-I triggers ({dict(kinds)}), one every "
            f"{interval * 1000:.0f} ms on average, over {t1 - t0:.0f} s of load")  # fmt: skip
        wait_until(t0, alive)
        assert gateway.proc is not None
        pids = {
            "gateway": gateway.proc.pid,
            "simulator": sim.proc.pid,
            "this benchmark": os.getpid(),
        }
        cpu_start = cpu_snapshot(pids)
        last_note = time.perf_counter()
        for i, (trigger, when) in enumerate(zip(triggers, due, strict=True)):
            wait_until(when, alive)
            latest = sim.latest()
            assert latest is not None
            topic, payload = trigger_message(trigger, latest.sim_s * 1000)
            members.mark_published(trigger)
            wearable.publish(topic, payload)
            if (now := time.perf_counter()) - last_note >= 10:
                last_note = now
                with members.lock:
                    got = sum(t.first is not None for t in triggers)
                say(f"{i + 1}/{len(triggers)} triggers sent, {got} notified; simulator "
                    f"{latest.acked:,} msgs acked")  # fmt: skip
        window = (t0, time.perf_counter())
        cpu = cpu_usage(cpu_start, cpu_snapshot(pids))
        deadline = time.perf_counter() + DELIVERY_TIMEOUT_S
        while not members.all_complete() and time.perf_counter() < deadline:
            time.sleep(0.05)
        say("triggers done; waiting for the simulator to finish its run")
        sim.proc.wait(args.duration + 60)
        sim_report = sim.report()
        expected_points = sum(sim_report.get("expected_points", {}).values()) + wearable.acked
        deadline = time.perf_counter() + 30
        while (points := influx_count(database)) < expected_points:
            if time.perf_counter() > deadline:
                break
            time.sleep(0.5)
        peak_rss = peak_rss_mb(gateway.proc.pid)
        gateway.stop()
        points = influx_count(database)
        read_raised(registry_url, code, triggers)
    finally:
        if simulator is not None:
            stop_process(simulator.proc)
        gateway.stop()
        for client in (members, wearable):
            if client is not None:
                client.close()

    # -- results --------------------------------------------------------------------------------
    sent = [t for t in triggers if t.published is not None]
    firsts = sorted(
        (t.first - t.published) * 1000 for t in sent if t.first is not None and t.published
    )
    alls = sorted(
        (t.last - t.published) * 1000
        for t in sent
        if t.complete and t.last is not None and t.published
    )
    missing = [t for t in sent if t.first is None]
    partial = [t for t in sent if t.first is not None and not t.complete]
    sim_window = sim.between(*window)
    gw_window = gateway.between(window[0], window[1] + 10)  # its line covers the 10 s before
    load = rate(sim_window[0], sim_window[-1]) if len(sim_window) >= 2 else 0.0
    gw_rates = [s.received_rate for s in gw_window]
    publisher = sim_report.get("publisher", {})

    def line(label: str, text: str) -> None:
        print(f"{label:<26}: {text}")

    def summary(values: Sequence[float]) -> str:
        if not values:
            return "no samples"
        return (
            f"p50 {percentile(values, 50):7.1f} ms   p90 {percentile(values, 90):7.1f} ms   "
            f"p99 {percentile(values, 99):7.1f} ms   max {values[-1]:7.1f} ms   "
            f"(min {values[0]:.1f}, mean {statistics.fmean(values):.1f})"
        )

    print(
        f"level-I alert latency under load: {args.households} households at {args.speed:g}× "
        f"real time, gridgate run with default pipeline settings (batch 5000, linger 200 ms)"
    )
    line("load while sampling", f"{load:,.0f} msg/s published and acked by the broker "
         f"(simulator; {len(sim_window)} progress lines over {window[1] - window[0]:.0f} s)")  # fmt: skip
    line("CPU while sampling", cpu)
    line("gateway peak RSS", f"{peak_rss:,.0f} MB (VmHWM of `gridgate run`, whole run)")
    if gw_rates:
        line("gateway while sampling", f"received {statistics.median(gw_rates):,.0f} msg/s "
             f"(median of its 10 s lines, {min(gw_rates):,.0f}–{max(gw_rates):,.0f}), "
             f"backlog at most {max(s.backlog for s in gw_window):,} messages")  # fmt: skip
    line("whole simulator run", f"{publisher.get('published_ok', 0):,} messages in "
         f"{publisher.get('elapsed_s', 0):.1f} s = {publisher.get('rate_msgs_per_s', 0):,.0f} msg/s"
         f" (exact: {sim_report.get('exact')})")  # fmt: skip
    line("samples", f"{len(sent)} level-I alerts ({', '.join(f'{n} {k}' for k, n in kinds.items())})"
         f", each at another unit; {len(sent) - len(missing)} notified, {len(missing)} missing, "
         f"{len(partial)} reached only some of their members")  # fmt: skip
    line("first member notified", summary(firsts))
    mean_members = statistics.fmean(t.expected for t in sent) if sent else 0.0
    line(f"all ~{mean_members:.0f} members notified", summary(alls))
    timed = [t for t in sent if t.raised_ns and t.first_ns]
    ingest = sorted((t.raised_ns - t.published_ns) / 1e6 for t in timed)
    deliver = sorted((t.first_ns - t.raised_ns) / 1e6 for t in timed)
    line("  publish → alert raised", summary(ingest))
    line("  raised → first member", summary(deliver))
    for t in missing[:10]:
        line("  missing", f"{t.critical.kind} at {t.place} (device {t.device_id})")
    for t in partial[:10]:
        line("  partial", f"{t.critical.kind} at {t.place}: {t.notified} of {t.expected} members")
    wrong = sum(t.wrong_device for t in sent)
    if wrong or members.unmatched:
        line("  mismatches", f"{wrong} notifications named another device, {members.unmatched} "
             "raised before their trigger")  # fmt: skip
    final = gateway.final
    line("gateway processed", f"received {final.get('received', 0):,} messages, "
         f"{final.get('readings', 0):,} readings, {final.get('written', 0):,} written, "
         f"{final.get('conditions', 0):,} rule conditions, dead-lettered "
         f"{final.get('dead_lettered', 0):,}, rejected {final.get('rejected', {})}")  # fmt: skip
    line("InfluxDB points", f"{points:,} (simulator's expected points {expected_points - wearable.acked:,}"
         f" + {wearable.acked} triggers = {expected_points:,})")  # fmt: skip
    background = sum(members.background.values())
    line("other notifications", f"{background:,} member notifications of other alerts during the "
         f"run: {dict(members.background.most_common(6))}; duplicates {members.duplicates}")  # fmt: skip
    if gateway.problems:
        worst = gateway.problems.most_common(6)
        line("gateway warnings", ", ".join(f"{n} × {w}" for w, n in worst))
    return 0 if not missing and not partial else 1


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--households", type=int, default=3000)
    parser.add_argument(
        "--speed", type=float, default=300.0, help="simulated seconds per real second"
    )
    parser.add_argument("--samples", type=int, default=100, help="level-I triggers to time")
    parser.add_argument(
        "--duration", type=float, default=90.0, help="real seconds the simulator runs"
    )
    parser.add_argument("--seed", type=int, default=7, help="community, traffic and jitter seed")
    args = parser.parse_args()
    if args.households < 1 or args.samples < 1 or args.duration <= WARMUP_S + TAIL_S:
        parser.error(f"need --households >= 1, --samples >= 1, --duration > {WARMUP_S + TAIL_S:g}")
    code = f"al{uuid.uuid4().hex[:6]}"
    tmp = Path(tempfile.mkdtemp(prefix="gridgate-alert-bench-"))
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
