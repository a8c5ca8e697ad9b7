"""``gridgate query counts|latest|place``: the common questions about what is in InfluxDB,
answered without Python and without knowing the schema — and showing the InfluxQL it ran, so
an operator learns the qualified names (points live in ``"rp_safety"."safety"``, one retention
policy per measurement, not in the database's default policy).

* ``counts`` — points per measurement and community in a recent window (``count("schema")``:
  every point has it).
* ``latest DEVICE`` — a device's newest readings, from its family's measurement (the registry
  knows the family), in China time.
* ``place PLACE`` — ``fn(field)`` per window over a place (``b03``, ``b03/u2``, ``g01``, a key,
  or a device id), built and run by the same code as the API's readings history
  (`gateway.api.history`).

Readings about people follow the API's k-anonymity rule (``GRIDGATE_API_K_ANONYMITY``, R3.4):
access and elder cells describing fewer than k persons are suppressed, in ``counts`` (per
community) and in ``place``; ``latest`` refuses an access or elder device, whose readings
describe one person (or one door's trail of people), and offers ``--status``, the device's
own status messages, instead.

Exit status: 0 answered; 1 InfluxDB unreachable or refused the query; 2 bad input (an unknown
device, place or field, a bad duration) or no registry.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from devices.errors import StorageError
from devices.places import KEY_SEP, PlaceLevel, location_parts
from gateway.api.history import (
    FUNCTIONS,
    MEASUREMENTS,
    PERSON_RELATED,
    WHOLE_RANGE,
    WINDOWS,
    HistoryCell,
    HistoryError,
    HistoryQuery,
    check,
    source,
    statements,
)
from gateway.api.history import run as run_history
from gateway.cli.lookup import (
    NS,
    PLACE_HINT,
    PlaceNames,
    UsageError,
    cell,
    local_time,
    parse_duration,
    registry_ready,
    resolve_places,
)
from gateway.cli.terminal import MAX_WIDTH, wrap
from gateway.registry import Registry
from gateway.settings import Settings
from gateway.storage.influx_v1 import InfluxV1Client, quote_ident, quote_literal
from gateway.storage.points import STATUS_MEASUREMENT
from privacy.policy import MEASUREMENTS as STORED_MEASUREMENTS
from privacy.policy import Policy, load_policy

WIDTH = MAX_WIDTH - 1
TAGS = ("community", "grid", "building", "unit", "kind", "device")
# what `place` shows when --field/--fn are not given
DEFAULTS: dict[str, tuple[str, str]] = {
    "meter": ("energy_kwh", "mean"),
    "safety": ("gas_lel_pct", "max"),
    "access": ("schema", "count"),  # events: entries and exits
    "elder": ("heart_rate_bpm", "mean"),
    "device_status": ("rssi_dbm", "mean"),
}
FAMILY_ALIASES = {"status": "device_status"}


def add_arguments(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``query`` to the ``gridgate`` subcommands (`sub` from add_subparsers)."""
    query = sub.add_parser(
        "query", help="what is in InfluxDB: counts, a device's latest readings, a place's history"
    )
    verbs = query.add_subparsers(dest="verb", required=True)
    show = argparse.ArgumentParser(add_help=False)
    show.add_argument(
        "--show-query",
        action="store_true",
        help="print the InfluxQL it runs (to copy into the influx shell or Grafana)",
    )

    counts = verbs.add_parser("counts", parents=[show], help="points per measurement")
    counts.add_argument("--community", help="one community (default: every one in InfluxDB)")
    counts.add_argument("--since", default="1h", help="window up to now: 30m, 1h, 7d (1h)")

    latest = verbs.add_parser("latest", parents=[show], help="a device's newest readings")
    latest.add_argument("device", metavar="DEVICE_ID")
    latest.add_argument("--limit", type=int, default=10, help="how many (10)")
    latest.add_argument(
        "--status",
        action="store_true",
        help="the device's own status messages (device_status) instead",
    )

    place = verbs.add_parser("place", parents=[show], help="fn(field) per window over a place")
    place.add_argument("place", metavar="PLACE", help="b03, b03/u2, g01, a key, or a device id")
    place.add_argument(
        "--family",
        choices=[*MEASUREMENTS, *FAMILY_ALIASES],
        help="the measurement (default: meter, or a device's own family)",
    )
    place.add_argument("--field", help="default per family, e.g. energy_kwh for meter")
    place.add_argument("--fn", choices=FUNCTIONS, help="mean, max, min, sum, count or last")
    place.add_argument("--since", default="6h", help="window up to now (6h)")
    place.add_argument("--every", default="1h", choices=list(WINDOWS), help="cell width (1h)")
    place.add_argument(
        "--by", choices=["grid", "building", "unit"], help="one row per grid, building or unit"
    )
    place.add_argument("--community", help="only places of this community")


@dataclass
class _Context:
    settings: Settings
    registry: Registry
    influx: InfluxV1Client
    policy: Policy
    names: PlaceNames
    show_query: bool

    @property
    def retention(self) -> bool:
        return self.settings.influx_retention

    @property
    def k(self) -> int:
        return self.settings.api_k_anonymity

    def note(self, statements_: Sequence[str]) -> None:
        """The InfluxQL about to run, for the operator to copy (with --show-query)."""
        if not self.show_query:
            return
        for text in statements_:
            print(f"influxql ({self.settings.influx_database}): {text}", flush=True)

    async def query(self, text: str) -> list[dict[str, Any]]:
        self.note([text])
        return await self.influx.query(text)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run ``gridgate query VERB``; returns the exit status."""
    if not registry_ready("query", settings.registry_url):
        return 2
    try:
        return asyncio.run(_run(args, settings))
    except UsageError as exc:
        print(f"gridgate query: {exc}", file=sys.stderr)
        return 2
    except StorageError as exc:
        print(f"gridgate query: {_storage_problem(exc, settings)}", file=sys.stderr)
        return 1


def _storage_problem(exc: StorageError, settings: Settings) -> str:
    text = str(exc)
    if exc.retryable:
        return (
            f"{text}. Is it running (scripts/services.sh status)? If it is elsewhere, set"
            f" GRIDGATE_INFLUX_URL (now {settings.influx_url})"
        )
    if "database not found" in text:
        return (
            f"{text}: no gateway has written to {settings.influx_database!r} at"
            f" {settings.influx_url} yet; GRIDGATE_INFLUX_DATABASE names the database"
        )
    if "retention policy not found" in text:
        return (
            f"{text}: the gateway creates one retention policy per measurement when it starts;"
            " a database written with GRIDGATE_INFLUX_RETENTION=false has them in its default"
            " policy (set it here too)"
        )
    return text


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    password = settings.influx_password
    policy = load_policy(settings.privacy_policy)
    with Registry.open(settings.registry_url) as registry:
        async with InfluxV1Client(
            settings.influx_url,
            settings.influx_database,
            username=settings.influx_username,
            password=password.get_secret_value() if password else None,
            timeout_s=settings.influx_timeout_s,
            ca_file=settings.influx_tls_ca_file,
        ) as influx:
            ctx = _Context(
                settings, registry, influx, policy, PlaceNames(registry), show_query=args.show_query
            )
            if args.verb == "counts":
                return await _counts(ctx, args)
            if args.verb == "latest":
                return await _latest(ctx, args)
            return await _place(ctx, args)


def _window(text: str) -> tuple[int, int]:
    """[now - `text`, now) in nanoseconds."""
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise UsageError(f"--since: {exc}") from exc
    end = time.time_ns()
    return end - seconds * NS, end


# -- counts ---------------------------------------------------------------------------------


async def _counts(ctx: _Context, args: argparse.Namespace) -> int:
    start, end = _window(args.since)
    if args.community:
        found = [args.community]
    else:
        rows = await ctx.query('SHOW TAG VALUES WITH KEY = "community"')
        found = sorted({str(r["value"]) for r in rows if r.get("value")})
    if not found:
        print(f"no points in {ctx.settings.influx_database!r} at {ctx.settings.influx_url}")
        return 0
    places = tuple(found)
    cells: dict[str, dict[str, HistoryCell]] = {}
    for measurement in STORED_MEASUREMENTS:
        query = HistoryQuery(
            measurement, "schema", "count", start, end, WHOLE_RANGE, places, group_by="community"
        )
        ctx.note(statements(query, retention=ctx.retention))
        got, _ = await run_history(ctx.influx, query, k=ctx.k, retention=ctx.retention)
        cells[measurement] = {c.place: c for c in got}
    _say(f"points in the last {args.since} ({_span(start, end)}) in InfluxDB"
         f" {ctx.settings.influx_database!r}")  # fmt: skip
    suppressed = False
    for community in found:
        _say(f"community {community}  {ctx.names.full(community)}")
        for measurement in STORED_MEASUREMENTS:
            c = cells[measurement].get(community)
            if c is None:
                shown = "0"
            elif c.suppressed:
                shown = f"< {ctx.k} persons: suppressed"
                suppressed = True
            else:
                shown = f"{int(c.value or 0):,}"
            name = source(measurement, retention=ctx.retention)
            print(f"  {measurement:<14} {name:<34} {shown:>24}")
    if suppressed:
        _say(f"access and elder counts describing fewer than {ctx.k} persons are withheld"
             " (GRIDGATE_API_K_ANONYMITY), as in the HTTP API")  # fmt: skip
    return 0


# -- latest ---------------------------------------------------------------------------------


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


async def _latest(ctx: _Context, args: argparse.Namespace) -> int:
    device = ctx.registry.device(args.device)
    if device is None:
        raise UsageError(
            f"no device {args.device!r} in the registry (gridgate registry show lists counts;"
            " gridgate registry show DEVICE_ID one device)"
        )
    if not 1 <= args.limit <= 1000:
        raise UsageError("--limit is 1 to 1000")
    family = device.family.value
    measurement = STATUS_MEASUREMENT if args.status else family
    if measurement in PERSON_RELATED:
        raise UsageError(
            f"{device.device_id} is an {family} device: its readings describe single persons,"
            f" shown only as aggregates over at least {ctx.k} (k-anonymity, as in the HTTP"
            f" API): gridgate query place {device.device_id} --family {family}. Its own status"
            f" messages: gridgate query latest {device.device_id} --status"
        )
    key = KEY_SEP.join(p for p in location_parts(device.location) if p)
    liveness = ctx.registry.liveness(device.device_id)
    seen = "never heard of"
    if liveness is not None and liveness.last_seen_ns is not None:
        state = {True: "online", False: "offline", None: "unknown"}[liveness.online]
        seen = f"{state}, last seen {local_time(liveness.last_seen_ns)} UTC+8"
    _say(f"device {device.device_id}  {family}  {device.vendor}  {ctx.names.label(key)} ({key})")
    _say(f"  registry: {seen}")
    src = source(measurement, retention=ctx.retention)
    rows = await ctx.query(
        f"SELECT * FROM {src} WHERE {quote_ident('device')} = {quote_literal(device.device_id)}"
        f" ORDER BY time DESC LIMIT {args.limit}"
    )
    if not rows:
        print(f"  no points in {src}")
        return 0
    _say(f"{len(rows)} newest in {src}, time UTC+8")
    for r in rows:
        fields = {
            k: v for k, v in r.items() if k not in (*TAGS, "time", "schema") and v is not None
        }
        parts = [local_time(int(r["time"])), str(r.get("kind") or "")]
        parts.append(" ".join(f"{k}={_value(v)}" for k, v in sorted(fields.items())))
        line = "  " + "  ".join(p for p in parts if p)
        for part in wrap(line, WIDTH, indent="                       "):
            print(part)
    return 0


# -- place ----------------------------------------------------------------------------------


def _family(text: str | None) -> str | None:
    return FAMILY_ALIASES.get(text, text) if text else None


def _places(
    ctx: _Context, text: str, family: str | None, community: str | None
) -> tuple[tuple[str, ...], str | None, str]:
    """(place keys, device id or None, measurement) for what the operator typed."""
    keys = resolve_places(ctx.registry, text, community=community)
    if keys:
        return tuple(keys), None, family or "meter"
    device = ctx.registry.device(text)
    if device is None:
        where = f" in community {community}" if community else ""
        raise UsageError(
            f"no place or device {text!r} in the registry{where}: {PLACE_HINT}, or a device id"
        )
    own = device.family.value
    if family not in (None, own, STATUS_MEASUREMENT):
        raise UsageError(
            f"{device.device_id} is a {own} device: use --family {own} or"
            f" --family {STATUS_MEASUREMENT} (or leave --family out)"
        )
    # tags stop at the unit: a device's room is a field, and the device tag is finer anyway
    parts = [p for p in location_parts(device.location)[: PlaceLevel.UNIT.depth] if p]
    return (KEY_SEP.join(parts),), device.device_id, family or own


async def _place(ctx: _Context, args: argparse.Namespace) -> int:
    places, device, measurement = _places(ctx, args.place, _family(args.family), args.community)
    default_field, default_fn = DEFAULTS[measurement]
    field_name, fn = args.field or default_field, args.fn or default_fn
    start, end = _window(args.since)
    query = HistoryQuery(
        measurement, field_name, fn, start, end, args.every, places, group_by=args.by, device=device
    )
    settings = ctx.settings
    try:
        check(
            query,
            ctx.policy,
            max_range_s=settings.api_max_range_s,
            max_points=settings.api_max_points,
        )
    except HistoryError as exc:
        raise UsageError(f"{exc} (--family, --field, --since, --every)") from exc
    ctx.note(statements(query, retention=ctx.retention))
    cells, suppressed = await run_history(ctx.influx, query, k=ctx.k, retention=ctx.retention)
    where = device or ", ".join(places[:3]) + (" …" if len(places) > 3 else "")
    label = ctx.names.full(places[0]) if len(places) == 1 else f"{len(places)} places"
    _say(f"{measurement} {fn}({field_name}) per {args.every} at {label} ({where})")
    _say(f"in the last {args.since} ({_span(start, end)}); times are window starts")
    if not cells:
        print("no points")
        return 0
    for c in cells:
        when = local_time(c.time_ns, "%m-%d %H:%M")
        value = f"< {ctx.k} persons: suppressed" if c.suppressed else _number(c.value)
        at = cell(f"{c.place} {ctx.names.label(c.place)}", 36) + " " if c.place else ""
        print(f"  {when}  {at}{value:>24}")
    if query.measurement in PERSON_RELATED:
        _say(f"{suppressed} of {len(cells)} cells withheld: they describe fewer than {ctx.k}"
             " persons (GRIDGATE_API_K_ANONYMITY), as in the HTTP API")  # fmt: skip
    return 0


def _say(text: str) -> None:
    """A line of prose, wrapped to the terminal's 80 columns."""
    for line in wrap(text, WIDTH):
        print(line)


def _span(start: int, end: int) -> str:
    first = local_time(start, "%m-%d %H:%M")
    last = local_time(end, "%H:%M" if end - start < 86400 * NS else "%m-%d %H:%M")
    return f"{first} to {last} UTC+8"


def _number(value: float | None) -> str:
    if value is None:
        return "—"
    if value == int(value) and abs(value) < 1e15:
        return f"{value:,.0f}"
    return f"{value:,.3f}".rstrip("0")


__all__ = ["add_arguments", "run"]
