"""`gridgate demo`: a simulated community through the real services, telling its story.

Everything a newcomer gets wrong is checked before anything starts (a misspelt scenario, a
place that does not exist, an offset after the end of the run). On start it says what runs
where; while it runs, one live line that fits 80 columns (simulated time, messages, what the
broker still queues, points written, dead letters) and one line per alert step; at the end the
counts of *this* run that add up — messages published and received, the readings they carried,
the points written — and the alerts.

The simulated clock ends at the present: with ``--duration 0`` it starts ``--history`` (6 h)
back and runs at ``--speed`` until it catches up, then the gateway, the API and the screen
stay up until Ctrl-C; with ``--duration S`` it runs S seconds and stops. The first Ctrl-C
stops the simulator and lets the gateway drain what the broker holds; a second one stops at
once (what is still queued is noted, and the next run says it drains it first).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import secrets
import signal
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from devices.topics import is_valid_id
from gateway.cli.alert_log import AlertLog
from gateway.cli.dispatch_standin import EMERGENCY_URL_ENV, DispatchStandIn
from gateway.cli.lookup import local_time
from gateway.cli.run import run_with_api
from gateway.cli.terminal import Console, ConsoleLogHandler
from gateway.pipeline.metrics import GatewayMetrics
from gateway.settings import Settings, environment

log = logging.getLogger("gridgate")

RUN_DIR = Path(".run/gridgate")
DEFAULT_HISTORY = "6h"
DEMO_PUSH_PORT = 18090  # the NB-IoT devices' carrier push, when GRIDGATE_PUSH_PORT is unset
MEASUREMENTS = ("access", "safety", "meter", "elder", "device_status", "liveness")


def add_arguments(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = sub.add_parser(
        "demo", help="the simulated community through the gateway, with a live summary"
    )
    demo.add_argument("--households", type=int, default=3000)
    demo.add_argument("--speed", type=float, default=60, help="simulated seconds per second")
    demo.add_argument(
        "--duration",
        type=float,
        default=0,
        help="real seconds to simulate, ending at the present; 0 = simulate --history up to "
        "the present, then keep serving until Ctrl-C",
    )
    demo.add_argument(
        "--history",
        default=DEFAULT_HISTORY,
        help=f"with --duration 0: how far back the simulated clock starts (default "
        f"{DEFAULT_HISTORY}; 30m, 2h, 1d)",
    )
    demo.add_argument("--seed", type=int, default=1)
    demo.add_argument("--community", default="demo")
    demo.add_argument(
        "--scenario",
        action="append",
        default=[],
        metavar="NAME@PLACE[@SIM_OFFSET]",
        help="a scenario at a place, SIM_OFFSET after the simulated start; repeatable",
    )
    demo.add_argument(
        "--nbiot-share",
        type=float,
        default=0.1,
        help="share of smoke detectors (OneNET) and water meters (CTWing) that are NB-IoT "
        "devices pushing over HTTP (default 0.1; 0: none)",
    )
    demo.add_argument(
        "--isapi-share",
        type=float,
        default=0.2,
        help="share of gates and barriers that are Hikvision terminals and plate cameras "
        "pushing ISAPI events with face pictures (default 0.2; 0: none)",
    )
    demo.add_argument("--verbose", action="store_true", help="log each rejection (rate-limited)")
    demo.add_argument("--no-api", dest="api", action="store_false", help="without the HTTP API")


# -- the plan, checked before anything starts ------------------------------------------------


@dataclass
class DemoPlan:
    community: Any  # simulators.community.Community
    sim_start_s: int
    sim_end_s: int | None
    scenarios: list[str]  # "gas_leak at 3号楼 2单元 1201, 14:52" lines


def plan_demo(args: argparse.Namespace) -> DemoPlan:
    """The community, the simulated time range and the scenarios on it; ValueError naming
    the mistake (the simulator re-plans the same when it starts)."""
    from simulators.community import build_community
    from simulators.community_cli import late_injections, plan_run
    from simulators.scenarios import ScenarioError

    if args.households < 1:
        raise ValueError("--households must be at least 1")
    if not args.speed > 0:
        raise ValueError("--speed must be more than 0 (simulated seconds per real second)")
    if args.duration < 0:
        raise ValueError("--duration must be 0 (until the present) or a number of seconds")
    if not is_valid_id(args.community):
        raise ValueError("--community may only use letters, digits and _.:- (a topic level)")
    if not (0 <= args.nbiot_share <= 1 and 0 <= args.isapi_share <= 1):
        raise ValueError("--nbiot-share and --isapi-share must be shares within 0..1")
    sim = argparse.Namespace(
        scenario=args.scenario,
        history=args.history if args.duration == 0 else None,
        duration=args.duration,
        speed=args.speed,
        seed=args.seed,
    )
    community = build_community(
        args.households, args.seed, args.community, nbiot=args.nbiot_share, isapi=args.isapi_share
    )
    try:
        clock, injections = plan_run(sim, community)
    except ScenarioError as exc:
        raise ValueError(str(exc)) from exc
    if late := late_injections(clock, injections):
        raise ValueError(f"{late[0]}: use a smaller offset, or a longer --history/--duration")
    lines = [f"{inj.scenario} at {inj.place}, {_hm(inj.at_s)}" for inj in injections]
    return DemoPlan(community, clock.sim_start_s, clock.sim_end_s, lines)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def _hm(sim_s: float) -> str:
    return local_time(int(sim_s * 1e9), "%m-%d %H:%M")


# -- counts of this run ----------------------------------------------------------------------


@dataclass
class SimProgress:
    """What the simulator says it has done (its --progress-json lines and final report)."""

    sent: int = 0
    acked: int = 0  # accepted by the broker: the gateway will receive them
    sim_s: int | None = None
    done: bool = False
    report: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunCounts:
    """This run's messages: published, left over from the last run, received."""

    metrics: GatewayMetrics
    sim: SimProgress
    left_over: int  # queued at the broker by an earlier run, drained first

    @property
    def expected(self) -> int:
        return self.left_over + self.sim.acked

    @property
    def queued(self) -> int:
        """Messages the broker still holds for the gateway (not yet delivered)."""
        return max(0, self.expected - self.metrics.received)

    @property
    def drained(self) -> bool:
        m = self.metrics
        return m.received >= self.expected and m.backlog == 0


def live_line(counts: RunCounts, prev: tuple[int, float], now: float) -> str:
    m, sim = counts.metrics, counts.sim
    elapsed = now - prev[1]
    rate = (m.received - prev[0]) / elapsed if elapsed > 0 else 0.0
    clock = "sim done   " if sim.done else _hm(sim.sim_s) if sim.sim_s else "starting   "
    return (
        f"{clock} │ {m.received:,} msgs {rate:,.0f}/s │ {counts.queued:,} queued │ "
        f"{m.written:,} stored │ {m.dead_lettered:,} dead"
    )


def _state_path(community: str) -> Path:
    return RUN_DIR / f"demo-{community}.json"


def _left_over(community: str) -> int:
    try:
        data = json.loads(_state_path(community).read_text(encoding="utf-8"))
        return max(0, int(data.get("queued_at_broker", 0)))
    except (OSError, ValueError, AttributeError):
        return 0


def _save_left_over(community: str, queued: int) -> None:
    path = _state_path(community)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"queued_at_broker": queued}) + "\n", encoding="utf-8")


# -- the command -----------------------------------------------------------------------------


class Signals:
    """First Ctrl-C/SIGTERM: stop the simulator and drain; the second: stop now."""

    def __init__(self) -> None:
        self.drain = asyncio.Event()
        self.stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._signal)

    def _signal(self) -> None:
        if self.drain.is_set():
            self.stop.set()
        self.drain.set()


async def demo_command(settings: Settings, args: argparse.Namespace) -> int:
    console = Console()
    root = logging.getLogger()  # log lines above the live line, not through it
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(ConsoleLogHandler(console, logging.INFO if args.verbose else logging.WARNING))
    signals = Signals()  # a Ctrl-C while it prepares ends it there, without a traceback
    try:
        plan = await asyncio.to_thread(plan_demo, args)
    except ValueError as exc:
        print(f"gridgate demo: {exc}", file=sys.stderr)
        return 2
    # Its own session and topics: a demo must not inherit another gateway's backlog.
    settings = settings.model_copy(
        update={"community": args.community, "mqtt_client_id": f"gridgate-demo-{args.community}"}
    )
    if args.nbiot_share > 0 or args.isapi_share > 0:
        settings = with_push(settings)
    fleet = await asyncio.to_thread(_import_fleet, settings, plan, console)
    if fleet is None:
        return 2
    if signals.drain.is_set():
        console.say("demo: stopped before it started")
        return 130
    standin = DispatchStandIn()
    async with contextlib.AsyncExitStack() as stack:
        if not environment().get(EMERGENCY_URL_ENV):
            await stack.enter_async_context(standin.serving())
        return await _run(settings, args, plan, fleet, console, signals, standin)
    return 1  # pragma: no cover - the block returns


def with_push(settings: Settings) -> Settings:
    """The push listener on, for the demo's NB-IoT devices: the configured port and tokens,
    or DEMO_PUSH_PORT and tokens made up for this run (on loopback: the simulator only)."""
    return settings.model_copy(
        update={
            "push_port": settings.push_port or DEMO_PUSH_PORT,
            "onenet_token": settings.onenet_token or SecretStr(secrets.token_urlsafe(16)),
            "ctwing_token": settings.ctwing_token or SecretStr(secrets.token_urlsafe(16)),
            "hikvision_secret": settings.hikvision_secret or SecretStr(secrets.token_urlsafe(16)),
        }
    )


def _import_fleet(settings: Settings, plan: DemoPlan, console: Console) -> Path | None:
    from devices.errors import ConfigError
    from gateway.audit.store import AuditStore
    from gateway.registry import Registry
    from gateway.registry.importer import import_file
    from gateway.runtime import load_keyring

    community = plan.community
    fleet: Path = community.write_fleet(RUN_DIR / f"fleet-{community.code}.yaml")
    with (
        AuditStore(settings.audit_path) as audit,
        Registry.open(settings.registry_url, audit=audit) as registry,
    ):
        try:
            report = import_file(registry, fleet, keyring=load_keyring(settings))
        except ConfigError as exc:
            print(f"gridgate demo: {exc}", file=sys.stderr)
            return None
    counts = community.counts()
    console.say(
        f"demo: {counts['devices']:,} devices, {counts['households']:,} households, "
        f"{counts['members']} members imported from {fleet} in {report.seconds:.1f} s"
    )
    return fleet


async def _run(
    settings: Settings,
    args: argparse.Namespace,
    plan: DemoPlan,
    fleet: Path,
    console: Console,
    signals: Signals,
    standin: DispatchStandIn,
) -> int:
    from gateway.runtime import Gateway

    if not args.verbose:  # the live line already counts rejections by reason
        logging.getLogger("gateway.pipeline").setLevel(logging.ERROR)
    metrics = GatewayMetrics()
    ready = asyncio.Event()
    started: list[Gateway] = []
    stop = signals.stop
    gateway_task = asyncio.create_task(
        run_with_api(
            settings, stop, metrics, api=args.api, ready=ready, on_start=started.append,
            announce_api=False, environ=standin.environ,
        ),
        name="gateway",
    )  # fmt: skip
    await asyncio.wait(
        [asyncio.create_task(ready.wait()), gateway_task], return_when=asyncio.FIRST_COMPLETED
    )
    if gateway_task.done():
        await gateway_task  # it failed to start: raise its error
        return 1
    gateway = started[0]
    started_ns = time.time_ns()
    alert_log = AlertLog(
        gateway.registry,
        args.community,
        started_ns,
        reopen_window_s=gateway.alerts.router.policy.reopen_within_s if gateway.alerts else 1800,
    )
    already_open = await asyncio.to_thread(alert_log.open_alerts)
    left_over = _left_over(args.community)
    _announce(settings, args, plan, fleet, console, standin, already_open, left_over)
    if args.api:
        await asyncio.to_thread(_demo_accounts, settings, args.community, console)

    sim = SimProgress()
    counts = RunCounts(metrics, sim, left_over)
    simulator = await _start_simulator(settings, args, fleet)
    reader = asyncio.create_task(_read_simulator(simulator, sim, console), name="sim-reader")
    watcher = asyncio.create_task(_watch(counts, alert_log, console, stop), name="demo-watch")
    console.say("demo: Ctrl-C stops the simulator and drains the broker; twice stops at once")
    sim_done = asyncio.create_task(simulator.wait())
    drain_wait = asyncio.create_task(signals.drain.wait())
    await asyncio.wait([sim_done, drain_wait, gateway_task], return_when=asyncio.FIRST_COMPLETED)
    if simulator.returncode is None:
        simulator.terminate()
    await sim_done
    await reader
    await _drain(counts, stop, gateway_task, console)
    for line in await asyncio.to_thread(alert_log.poll):  # the last steps, before counting
        console.say(line)
    summary = await _summary(settings, args, counts, alert_log, standin, started_ns)
    console.end_status()
    for line in summary:
        console.say(line)
    if args.duration == 0 and not stop.is_set() and not gateway_task.done():
        serving = "gateway, API and screen stay" if args.api else "the gateway stays"
        console.say(
            f"demo: the simulated community reached the present; {serving} up (alerts still "
            "escalate). Ctrl-C to stop."
        )
        await asyncio.wait(
            [asyncio.create_task(stop.wait()), drain_wait, gateway_task],
            return_when=asyncio.FIRST_COMPLETED,
        )
    stop.set()
    await gateway_task
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher
    console.end_status()
    queued = counts.expected - metrics.acked
    _save_left_over(args.community, max(0, queued))
    if queued > 0:
        console.say(
            f"demo: {queued:,} messages stay queued at the broker for session "
            f"{settings.mqtt_client_id}; the next demo run drains them first"
        )
    return 0


def _announce(
    settings: Settings,
    args: argparse.Namespace,
    plan: DemoPlan,
    fleet: Path,
    console: Console,
    standin: DispatchStandIn,
    already_open: int,
    left_over: int,
) -> None:
    from gateway.cli.api import api_url

    span = f"{_hm(plan.sim_start_s)} → {_hm(plan.sim_end_s) if plan.sim_end_s else 'on'}"
    real = _duration((plan.sim_end_s - plan.sim_start_s) / args.speed) if plan.sim_end_s else ""
    say = console.say
    say(f"demo: simulated time {span} (UTC+8) at {args.speed:g}×"
        + (f" ({real} real)" if real else ", until Ctrl-C"))  # fmt: skip
    for line in plan.scenarios:
        say(f"demo: scenario {line}")
    say(f"demo: broker   mqtt://{settings.mqtt_host}:{settings.mqtt_port} "
        f"session {settings.mqtt_client_id}")  # fmt: skip
    say(f"demo: InfluxDB {settings.influx_url} db {settings.influx_database} "
        f"(see: gridgate query counts)")  # fmt: skip
    say(f"demo: alerts   gridgate alerts list --community {args.community}")
    if args.nbiot_share > 0 or args.isapi_share > 0:
        say(f"demo: pushed   {args.nbiot_share:.0%} of smoke detectors and water meters (NB-IoT: "
            f"OneNET, CTWing), {args.isapi_share:.0%} of gates (Hikvision ISAPI, face pictures "
            f"dropped on arrival) over HTTP to :{settings.push_port}")  # fmt: skip
    if standin.url:
        say(f"demo: level-I alerts also go to a local stand-in for the emergency webhook, "
            f"{standin.url} ({EMERGENCY_URL_ENV} is unset)")  # fmt: skip
    if args.api:
        say(f"demo: API      {api_url(settings)}/docs")
    if already_open:
        say(f"demo: {already_open} alert(s) of '{args.community}' still open from earlier "
            "runs: a scenario at the same place adds to them, it raises nothing new")  # fmt: skip
    if left_over:
        say(f"demo: {left_over:,} messages an earlier run left queued at the broker are "
            "drained first")  # fmt: skip


def _demo_accounts(settings: Settings, community: str, console: Console) -> None:
    """An operator key for the screen and three members' accounts, with fresh secrets each
    run, printed once: what a visitor needs to try the screen and the phone page."""
    from gateway.api.accounts import Accounts
    from gateway.audit.store import AuditStore
    from gateway.cli.api import api_url
    from gateway.registry import Registry, Role

    with (
        AuditStore(settings.audit_path) as audit,
        Registry.open(settings.registry_url, audit=audit) as registry,
    ):
        accounts = Accounts(registry, audit)
        key, _ = accounts.create_key("operator", community, name="demo-screen", actor="demo")
        members = {m.role: m for m in registry.members() if m.scopes
                   and m.scopes[0].community == community}  # fmt: skip
        lines = []
        for role in (Role.UNIT_HEAD, Role.BUILDING_HEAD, Role.GRID_WORKER):
            member = members.get(role)
            if member is None:
                continue
            password = secrets.token_urlsafe(9)
            if accounts.account(member.id) is None:
                accounts.add_user(member.id, password, actor="demo")
            else:
                accounts.set_password(member.id, password, actor="demo")
            lines.append(f"demo:   {role.label:<4} {member.id:<14} password {password}")
    url = api_url(settings)
    console.say(f"demo: screen   {url}/  operator key (shown once):")
    console.say(f"demo:   {key}")
    console.say(f"demo: members  {url}/m/  accounts (new passwords each run):")
    for line in lines:
        console.say(line)


async def _start_simulator(
    settings: Settings, args: argparse.Namespace, fleet: Path
) -> asyncio.subprocess.Process:
    cmd = [
        sys.executable, "-m", "gateway.cli", "simulate",
        "--households", str(args.households), "--speed", str(args.speed),
        "--duration", f"{args.duration:g}", "--seed", str(args.seed),
        "--community", args.community, "--fleet-out", str(fleet),
        "--host", settings.mqtt_host, "--port", str(settings.mqtt_port), "--progress-json",
    ]  # fmt: skip
    if args.duration == 0:
        cmd += ["--history", args.history]
    onenet, ctwing, hikvision = (settings.onenet_token, settings.ctwing_token,
                                 settings.hikvision_secret)  # fmt: skip
    if (args.nbiot_share > 0 or args.isapi_share > 0) and onenet and ctwing and hikvision:
        host = f"[{settings.push_host}]" if ":" in settings.push_host else settings.push_host
        cmd += [
            "--nbiot-share", f"{args.nbiot_share:g}", "--isapi-share", f"{args.isapi_share:g}",
            "--push-url", f"http://{host}:{settings.push_port}",
            "--onenet-token", onenet.get_secret_value(),
            "--ctwing-token", ctwing.get_secret_value(),
            "--hikvision-secret", hikvision.get_secret_value(),
        ]  # fmt: skip
    for scenario in args.scenario:
        cmd += ["--scenario", scenario]
    return await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )


async def _read_simulator(
    simulator: asyncio.subprocess.Process, sim: SimProgress, console: Console
) -> None:
    """Progress lines update `sim`; anything else the simulator says is shown."""
    assert simulator.stderr is not None and simulator.stdout is not None

    async def progress() -> None:
        assert simulator.stderr is not None
        async for raw in simulator.stderr:
            text = raw.decode(errors="replace").rstrip()
            try:
                line = json.loads(text)
            except ValueError:
                line = None
            if isinstance(line, dict) and "acked" in line:
                sim.sent, sim.acked = int(line["sent"]), int(line["acked"])
                sim.sim_s = line.get("sim_s")
            elif text and not text.startswith("simulate: fleet file"):
                console.say(text)

    async def report() -> bytes:
        assert simulator.stdout is not None
        return await simulator.stdout.read()

    _, out = await asyncio.gather(progress(), report())
    if out.strip():
        with contextlib.suppress(ValueError):
            sim.report = json.loads(out)
            publisher = sim.report.get("publisher", {})
            sim.acked = int(publisher.get("acked", sim.acked))
            sim.sent = int(publisher.get("sent", sim.sent))
    sim.done = True


async def _watch(
    counts: RunCounts, alert_log: AlertLog, console: Console, stop: asyncio.Event
) -> None:
    """The live line every second (every 10 s off a terminal) and alert lines as they come."""
    prev = (counts.metrics.received, time.monotonic())
    ticks = 0
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)
        try:
            for line in await asyncio.to_thread(alert_log.poll):
                console.say(line, cut=True)
        except Exception as exc:  # the registry is away: the next poll tries again
            log.warning("alert lines: %s", type(exc).__name__)
        ticks += 1
        if ticks % 2 == 0:
            now = time.monotonic()
            console.status(live_line(counts, prev, now), print_it=ticks % 20 == 0)
            prev = (counts.metrics.received, now)


async def _drain(
    counts: RunCounts, stop: asyncio.Event, gateway: asyncio.Task[None], console: Console
) -> None:
    """Until the gateway has received and acknowledged what the broker holds for it."""
    if not counts.drained and not stop.is_set():
        console.say(f"demo: simulator stopped; draining {counts.queued:,} messages the broker "
                    "still holds (Ctrl-C again to stop now)")  # fmt: skip
    while not counts.drained and not stop.is_set() and not gateway.done():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.2)
    if not stop.is_set():  # the last batch's liveness and alert steps
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


async def _summary(
    settings: Settings,
    args: argparse.Namespace,
    counts: RunCounts,
    alert_log: AlertLog,
    standin: DispatchStandIn,
    started_ns: int,
) -> list[str]:
    m, sim = counts.metrics, counts.sim
    seconds = (time.time_ns() - started_ns) / 1e9
    report = sim.report
    span = ""
    if report.get("sim_start") and report.get("sim_reached"):
        start = datetime.fromisoformat(report["sim_start"]).strftime("%m-%d %H:%M")
        end = datetime.fromisoformat(report["sim_reached"]).strftime("%m-%d %H:%M")
        span = f", simulated {start} → {end}"
    leftover = f" + {counts.left_over:,} left by the last run" if counts.left_over else ""
    steps = alert_log.steps
    open_now = await asyncio.to_thread(alert_log.open_alerts)
    points = await _stored_points(settings, args.community)
    points_made = int(report.get("expected_points_total", 0))
    lines = [
        f"demo: this run, {_duration(seconds)}{span}:",
        f"  messages  {sim.acked:,} published{leftover} · {m.received:,} received · "
        f"{counts.queued:,} still queued at the broker",
        f"  readings  {m.readings:,} decoded (a message may carry several), {m.written:,} stored",
        f"  points    {points_made:,} distinct (a 4-frame meter reply is one point)",
        f"            + {m.liveness_changes:,} liveness points (devices going online/offline)",
        f"  rejected  {m.dead_lettered:,} dead-lettered" + (f" ({_top(m)})" if m.rejected else ""),
        "  alerts    "
        + " · ".join(
            f"{steps[step]} {step}"
            for step in ("raised", "upgraded", "escalated", "cleared", "reopened")
            if steps[step] or step == "raised"
        )
        + f" · {open_now} open now",
    ]
    if standin.url:
        lines.append(f"  webhook   {standin.received} signed deliveries to the emergency stand-in")
    if points is not None:
        lines.append(
            f"  InfluxDB  {points:,} points of '{args.community}', all runs (gridgate query counts)"
        )
    return lines


def _top(m: GatewayMetrics, n: int = 2) -> str:
    return ", ".join(f"{reason} {count:,}" for reason, count in m.rejected.most_common(n))


async def _stored_points(settings: Settings, community: str) -> int | None:
    """Every point of the community in InfluxDB (all runs): None if it cannot be asked."""
    from devices.errors import StorageError
    from gateway.storage.influx_v1 import InfluxV1Client, quote_ident, quote_literal
    from gateway.storage.retention import qualified

    total = 0
    try:
        async with InfluxV1Client(
            settings.influx_url, settings.influx_database, ca_file=settings.influx_tls_ca_file
        ) as influx:
            for measurement in MEASUREMENTS:
                source = (
                    qualified(measurement)
                    if settings.influx_retention
                    else quote_ident(measurement)
                )
                rows = await influx.query(
                    f'SELECT count("schema") FROM {source}'
                    f" WHERE community = {quote_literal(community)}"
                )
                total += int(rows[0]["count"]) if rows else 0
    except StorageError:
        return None
    return total


__all__ = ["add_arguments", "demo_command", "live_line", "plan_demo"]
