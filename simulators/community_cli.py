"""``gridgate simulate --households N``: a whole simulated community through a real broker.

Writes the community's fleet file first (for ``gridgate registry import``), then publishes
every device's traffic on its simulated schedule, accelerated by ``--speed``, with scenarios
injected by name at a place. Progress goes to stderr about once a second; the final report
is one JSON object on stdout: messages, expected InfluxDB points and expected rejections,
per family and per format, and the scenario log — what integration tests compare against.

Exit status: 0 every message acknowledged, 1 some were not, 2 bad arguments or no broker.
"""

from __future__ import annotations

import argparse
import difflib
import re
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import FrameType
from typing import Any

import orjson

from devices.topics import is_valid_id
from simulators import formats
from simulators.community import Community, build_community
from simulators.publisher import (
    DEFAULT_MAX_INFLIGHT,
    Progress,
    Publisher,
    PublishError,
    add_broker_arguments,
)
from simulators.scenarios import SCENARIOS, Injection, ScenarioError, inject
from simulators.schedule import DEFAULT_DURATION_S, NS, Schedule, Scheduled, SimClock
from simulators.traffic import SimMessage

DEFAULT_FLEET_DIR = Path(".run/gridgate")
CST = timezone(timedelta(hours=8))
_SLEEP_MIN_S = 0.001
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400}


def add_community_arguments(parser: argparse.ArgumentParser) -> None:
    """The options the ``--devices`` path lacks; shared ones (--duration, --seed, --community,
    --host, --port, --max-inflight, --quiet) come from `simulators.cli.add_arguments`."""
    parser.add_argument(
        "--households",
        type=int,
        default=None,
        help="simulate a whole community of this many households (e.g. 3000) instead of --devices",
    )
    parser.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="simulated seconds per real second (60: one simulated hour a minute)",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        default=[],
        metavar="NAME@PLACE[@SIM_OFFSET][@key=value…]",
        help=f"inject a scenario ({', '.join(SCENARIOS)}) at a place (b03, b03/u2, b03/u2/1201"
        " or a device id), SIM_OFFSET after the simulated start (30m, 2h; default 10%% of the"
        " run, at most 1h); repeatable",
    )
    parser.add_argument(
        "--fleet-out",
        default=None,
        help="where to write the fleet file (default .run/gridgate/fleet-<community>.yaml)",
    )
    parser.add_argument(
        "--fleet-only", action="store_true", help="write the fleet file and exit (no broker)"
    )
    parser.add_argument(
        "--history",
        default=None,
        metavar="DURATION",
        help="with --duration 0: start the simulated clock this far back (6h, 2d; default 29d)"
        " and stop when it reaches the present",
    )
    parser.add_argument(
        "--nbiot-share",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="share of smoke detectors (OneNET) and water meters (CTWing) that are NB-IoT"
        " devices pushed over HTTP to --push-url (default 0)",
    )
    parser.add_argument(
        "--push-url",
        default="",
        help="the gateway's push listener, e.g. http://127.0.0.1:18090 (GRIDGATE_PUSH_PORT)",
    )
    parser.add_argument(
        "--isapi-share",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="share of gates and barriers that are Hikvision terminals and plate cameras pushing"
        " ISAPI events (face events with a picture) to --push-url (default 0)",
    )
    parser.add_argument(
        "--hikvision-secret", default="", help="the gateway's GRIDGATE_HIKVISION_SECRET"
    )
    parser.add_argument("--onenet-token", default="", help="the gateway's GRIDGATE_ONENET_TOKEN")
    parser.add_argument("--ctwing-token", default="", help="the gateway's GRIDGATE_CTWING_TOKEN")
    parser.add_argument(
        "--progress-json",
        action="store_true",
        help="progress as one JSON object per line on stderr (for `gridgate demo`)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Every option, for a parser of its own (``python -m simulators.community_cli``)."""
    add_community_arguments(parser)
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help=f"real seconds to run, 0 = until Ctrl-C (default {DEFAULT_DURATION_S:g})",
    )
    parser.add_argument("--community", default="xf", help="community code (topic-safe)")
    parser.add_argument("--seed", type=int, default=0, help="community and traffic seed")
    add_broker_arguments(parser)
    parser.add_argument("--max-inflight", type=int, default=DEFAULT_MAX_INFLIGHT)
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


# -- scenario arguments -----------------------------------------------------------------------


def parse_seconds(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``2h``, ``1.5d`` → seconds."""
    m = _DURATION.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"bad duration {text!r}: use 90, 90s, 30m, 2h or 1d")
    return float(m[1]) * _UNITS[m[2]]


@dataclass(slots=True, frozen=True)
class ScenarioArg:
    name: str
    place: str
    offset_s: float | None
    options: dict[str, Any] = field(default_factory=dict)


def parse_scenario(text: str) -> ScenarioArg:
    parts = text.split("@")
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise ValueError(f"--scenario {text!r}: expected NAME@PLACE[@SIM_OFFSET]")
    name, place = parts[0].strip(), parts[1].strip()
    if name not in SCENARIOS:
        close = difflib.get_close_matches(name, SCENARIOS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ValueError(f"unknown scenario {name!r}: {hint}known: {', '.join(SCENARIOS)}")
    offset: float | None = None
    options: dict[str, Any] = {}
    for part in parts[2:]:
        key, eq, value = part.partition("=")
        if not eq:
            offset = parse_seconds(part)
            continue
        key = key.strip()
        if key == "span":
            options[key] = parse_seconds(value)
        elif key == "hours":  # a bare number is hours here; 90m works too
            value = value.strip()
            options[key] = (
                float(value)
                if value.replace(".", "", 1).isdigit()
                else (parse_seconds(value) / 3600)
            )
        elif key == "announce":
            options[key] = value.strip().lower() in ("1", "true", "yes")
        elif key in ("units", "per_unit", "seed"):
            options[key] = int(value)
        else:
            raise ValueError(f"--scenario {text!r}: unknown option {key!r}")
    return ScenarioArg(name, place, offset, options)


def plan_injections(
    community: Community, clock: SimClock, args: list[ScenarioArg], seed: int
) -> list[Injection]:
    span = clock.span_s
    default_offset = min(span / 10, 3600.0) if span else 300.0  # early enough to be seen
    out = []
    for a in args:
        offset = default_offset if a.offset_s is None else a.offset_s
        at = clock.sim_start_s + int(offset)
        options = {"speed": clock.speed, **a.options}
        if a.name == "hostile":
            options.setdefault("seed", seed)
        out.append(inject(community, a.name, a.place, at, **options))
    return out


def sim_duration(args: argparse.Namespace) -> float | None:
    """Real seconds to run (None: until stopped or caught up with the present)."""
    return DEFAULT_DURATION_S if args.duration is None else (args.duration or None)


def plan_run(args: argparse.Namespace, community: Community) -> tuple[SimClock, list[Injection]]:
    """The simulated clock and the scenarios placed on it; ValueError or ScenarioError
    naming what is wrong — the checks `gridgate demo` runs before it starts anything."""
    scenario_args = [parse_scenario(s) for s in args.scenario]
    history = getattr(args, "history", None)
    history_s = None if history is None else parse_seconds(history)
    duration = sim_duration(args)
    if history_s is not None and duration is not None:
        raise ValueError("--history goes with --duration 0 (run until the present)")
    clock = SimClock.plan(args.speed, duration, history_s=history_s)
    injections = plan_injections(community, clock, scenario_args, args.seed)
    return clock, injections


def late_injections(clock: SimClock, injections: list[Injection]) -> list[str]:
    """Scenarios placed after the simulated end of the run: they would never happen."""
    if clock.sim_end_s is None:
        return []
    return [
        f"{inj.scenario} at {_iso(inj.at_s)} is after the end of the run ({_iso(clock.sim_end_s)})"
        for inj in injections
        if inj.at_s >= clock.sim_end_s
    ]


# -- accounting and the publisher's message source ----------------------------------------------


@dataclass(slots=True)
class Tally:
    """What was handed to the publisher, as the report and the integration tests need it."""

    messages: Counter[str] = field(default_factory=Counter)  # by family (or "hostile")
    by_format: Counter[str] = field(default_factory=Counter)
    by_label: Counter[str] = field(default_factory=Counter)
    points: Counter[str] = field(default_factory=Counter)  # family measurement
    status_points: Counter[str] = field(default_factory=Counter)  # device_status, by family
    lines: Counter[str] = field(default_factory=Counter)
    points_by_format: Counter[str] = field(default_factory=Counter)
    rejections: Counter[str] = field(default_factory=Counter)
    by_scenario: Counter[str] = field(default_factory=Counter)
    max_reading_lead_ms: int | None = None  # newest reading time minus the clock at sending

    def add(self, m: Scheduled) -> None:
        if m.scenario:
            self.by_scenario[m.scenario] += 1
        self.by_label[m.label] += 1
        if m.family is None:
            self.messages["hostile"] += 1
            self.rejections[m.reason or "unlabelled"] += 1
            return
        fam = m.family.value
        self.messages[fam] += 1
        self.by_format[m.adapter] += 1
        self.points[fam] += m.points
        self.status_points[fam] += m.status_points
        self.lines[fam] += m.lines
        self.points_by_format[m.adapter] += m.points + m.status_points

    @property
    def total(self) -> int:
        return sum(self.messages.values())

    def to_dict(self) -> dict[str, Any]:
        def d(c: Counter[str]) -> dict[str, int]:
            return dict(sorted(c.items()))

        return {
            "messages": {
                "total": self.total,
                "by_family": d(self.messages),
                "by_format": d(self.by_format),
                "by_kind": d(self.by_label),
            },
            "expected_points": d(self.points),
            "expected_status_points": d(self.status_points),
            "expected_points_total": sum(self.points.values()) + sum(self.status_points.values()),
            "expected_lines": d(self.lines),
            "expected_points_by_format": d(self.points_by_format),
            "expected_rejections": d(self.rejections),
            "scenario_messages": d(self.by_scenario),
            "max_reading_lead_ms": self.max_reading_lead_ms,
        }


class ScheduledSource:
    """Feeds `Publisher.run` from a schedule: waits until each message is due, and ends the
    run (None) when the schedule is done or `stop` is set."""

    def __init__(self, schedule: Schedule, tally: Tally | None = None) -> None:
        self.schedule = schedule
        self.tally = tally or Tally()
        self.stop = threading.Event()
        self._it = iter(schedule)
        self.last_sim_s = schedule.clock.sim_start_s

    def next_message(self, now_ns: int) -> SimMessage | None:
        m = next(self._it, None)
        if m is None or self.stop.is_set():
            return None
        wait_s = (m.due_real_ns - time.time_ns()) / NS
        if wait_s >= _SLEEP_MIN_S and self.stop.wait(wait_s):
            return None
        self.last_sim_s = m.time_s
        lead_ms = (m.time_s * NS - time.time_ns()) // 1_000_000
        tally = self.tally
        if tally.max_reading_lead_ms is None or lead_ms > tally.max_reading_lead_ms:
            tally.max_reading_lead_ms = lead_ms
        tally.add(m)
        return SimMessage(m.topic, m.payload, m.family, m.reason, m.time_s * NS)


# -- the command ------------------------------------------------------------------------------


def _iso(sim_s: int | None) -> str | None:
    if sim_s is None:
        return None
    return datetime.fromtimestamp(sim_s, UTC).astimezone(CST).isoformat()


def _check(args: argparse.Namespace) -> str:
    if args.households is None or args.households < 1:
        return "--households must be >= 1"
    if not args.speed > 0:
        return "--speed must be > 0"
    if args.duration is not None and args.duration < 0:
        return "--duration must be >= 0"
    if not is_valid_id(args.community):
        return "--community may only use [A-Za-z0-9_.:-] (it is a topic level)"
    if not 1 <= getattr(args, "max_inflight", DEFAULT_MAX_INFLIGHT) < 65_535:
        return "--max-inflight must be within 1..65534"
    share = getattr(args, "nbiot_share", 0.0)
    isapi = getattr(args, "isapi_share", 0.0)
    if not (0.0 <= share <= 1.0 and 0.0 <= isapi <= 1.0):
        return "--nbiot-share and --isapi-share must be within 0..1"
    if (share > 0 or isapi > 0) and not args.fleet_only:
        if not args.push_url.startswith(("http://", "https://")):
            return "--nbiot-share and --isapi-share need --push-url (the gateway's push listener)"
        if share > 0 and not (args.onenet_token and args.ctwing_token):
            return "--nbiot-share needs --onenet-token and --ctwing-token"
        if isapi > 0 and not args.hikvision_secret:
            return "--isapi-share needs --hikvision-secret"
    return ""


def fleet_path(args: argparse.Namespace) -> Path:
    if args.fleet_out:
        return Path(args.fleet_out)
    return DEFAULT_FLEET_DIR / f"fleet-{args.community}.yaml"


def _say(args: argparse.Namespace, text: str) -> None:
    if not args.quiet:
        print(f"simulate: {text}", file=sys.stderr, flush=True)


@contextmanager
def _stop_on_signals(publisher: Publisher, source: ScheduledSource) -> Iterator[None]:
    """Ctrl-C / SIGTERM stop sending but still wait for acks and print the report."""

    def handler(signum: int, frame: FrameType | None) -> None:
        source.stop.set()
        publisher.request_stop()

    try:
        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread
        previous = {}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run(args: argparse.Namespace) -> int:
    problem = _check(args)
    if problem:
        print(f"simulate: {problem}", file=sys.stderr)
        return 2
    try:
        for text in args.scenario:
            parse_scenario(text)
        if getattr(args, "history", None) is not None:
            parse_seconds(args.history)
    except ValueError as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return 2
    started = time.monotonic()
    community = build_community(
        args.households,
        args.seed,
        args.community,
        nbiot=getattr(args, "nbiot_share", 0.0),
        isapi=getattr(args, "isapi_share", 0.0),
    )
    path = community.write_fleet(fleet_path(args))
    counts = community.counts()
    _say(
        args,
        f"fleet file {path} ({counts['devices']} devices, {counts['households']} households,"
        f" {counts['members']} members) in {time.monotonic() - started:.1f}s",
    )
    missing = formats.missing_adapters()
    if missing:
        _say(args, f"adapters not installed, their devices publish gridgate_json: {missing}")
    head: dict[str, Any] = {
        "community": community.code,
        "seed": args.seed,
        "fleet_file": str(path),
        "community_size": counts,
        "adapters_missing": missing,
        "adapter_fallbacks": dict(community.fallbacks),
    }
    if args.fleet_only:
        sys.stdout.write(orjson.dumps(head).decode() + "\n")
        return 0
    try:
        clock, injections = plan_run(args, community)
    except (ValueError, ScenarioError) as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return 2
    for late in late_injections(clock, injections):
        _say(args, f"warning: {late}")
    schedule = Schedule(community, clock, seed=args.seed, injections=injections)
    source = ScheduledSource(schedule)
    publisher = Publisher(args.host, args.port, max_inflight=args.max_inflight)
    if getattr(args, "push_url", ""):
        publisher.push_to(
            args.push_url,
            onenet_token=args.onenet_token,
            ctwing_token=args.ctwing_token,
            hikvision_secret=args.hikvision_secret,
        )
    try:
        publisher.connect()
    except PublishError as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return 2

    def progress(p: Progress) -> None:
        if getattr(args, "progress_json", False):
            line = {"sent": p.sent, "acked": p.acked, "sim_s": source.last_sim_s}
            print(orjson.dumps(line).decode(), file=sys.stderr, flush=True)
        elif not args.quiet:
            print(
                f"simulate: {p.elapsed_s:6.1f}s sim {_iso(source.last_sim_s)} sent {p.sent}"
                f" acked {p.acked} rate {p.rate:.0f}/s",
                file=sys.stderr,
                flush=True,
            )

    try:
        with _stop_on_signals(publisher, source):
            report = publisher.run(source, progress=progress)
    finally:
        publisher.close()
    report.community = community.code
    out = head | {
        "speed": clock.speed,
        "sim_start": _iso(clock.sim_start_s),
        "sim_end": _iso(clock.sim_end_s),
        "sim_reached": _iso(source.last_sim_s),
        **source.tally.to_dict(),
        "scenarios": [
            inj.log() | {"at_sim": _iso(inj.at_s), "offset_s": inj.at_s - clock.sim_start_s}
            for inj in injections
        ],
        "publisher": report.to_dict(),
        "exact": report.failed == 0 and report.unacked == 0 and report.refused == 0,
    }
    sys.stdout.write(orjson.dumps(out).decode() + "\n")
    sys.stdout.flush()
    return 0 if out["exact"] else 1


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry: ``python -m simulators.community_cli --households 3000 --speed 60``."""
    parser = argparse.ArgumentParser(prog="gridgate simulate", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.households is None:
        args.households = 3000
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
