"""`gridgate run` and `gridgate demo`: the gateway in this process until a signal."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from functools import partial
from pathlib import Path

from gateway.cli.progress import report_progress
from gateway.pipeline.metrics import GatewayMetrics
from gateway.settings import Settings

log = logging.getLogger("gridgate")


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):  # Debian only: the loop supports signals
        loop.add_signal_handler(sig, stop.set)


# -- run ----------------------------------------------------------------------------------


async def run_command(settings: Settings, progress: bool, api: bool = False) -> int:
    stop = asyncio.Event()
    _stop_on_signals(stop)
    metrics = GatewayMetrics()
    reporter = None
    if progress:
        reporter = asyncio.create_task(
            report_progress(metrics, stop, interval_s=10.0, live=False), name="progress"
        )
    await run_with_api(settings, stop, metrics, api=api)
    stop.set()
    if reporter:
        await reporter
    log.info("stopped: %s", json.dumps(metrics.snapshot(), ensure_ascii=False))
    return 0


async def run_with_api(
    settings: Settings,
    stop: asyncio.Event,
    metrics: GatewayMetrics,
    *,
    api: bool,
    ready: asyncio.Event | None = None,
) -> None:
    """The gateway until `stop`, and with `api` the HTTP API on the same parts."""
    from gateway.cli.api import serve_api
    from gateway.runtime import Gateway

    async with Gateway(settings, metrics=metrics) as gateway, asyncio.TaskGroup() as tg:
        if api:
            tg.create_task(serve_api(settings, stop, gateway), name="api")
        await gateway.run(stop, ready)
        stop.set()


async def api_only_command(settings: Settings) -> int:
    """`gridgate api`: the HTTP API over the shared databases, no ingestion."""
    from gateway.cli.api import api_command

    stop = asyncio.Event()
    _stop_on_signals(stop)
    return await api_command(settings, stop)


# -- demo ---------------------------------------------------------------------------------


def demo_accounts(settings: Settings, community: str) -> None:
    """An operator key for the screen and three members' accounts, with fresh secrets each
    run, printed once: what a visitor needs to try the screen and the phone page."""
    import secrets

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
            lines.append(f"    {role.label:<4} {member.id:<16} password {password}")
    url = api_url(settings)
    print(f"gridgate demo: screen  {url}/   (operator key, shown once: {key})", file=sys.stderr)
    print(f"gridgate demo: members {url}/m/  accounts (new passwords each run):", file=sys.stderr)
    print("\n".join(lines), file=sys.stderr)


async def demo_command(settings: Settings, args: argparse.Namespace) -> int:
    """The simulated community through the real services: fleet → registry → gateway."""
    from gateway.audit.store import AuditStore
    from gateway.registry import Registry
    from gateway.registry.importer import import_file
    from gateway.runtime import load_keyring
    from gateway.storage.influx_v1 import InfluxV1Client, quote_ident, quote_literal
    from gateway.storage.retention import qualified
    from simulators.community import build_community

    # Its own session and topics: a demo must not inherit another gateway's backlog.
    settings = settings.model_copy(
        update={"community": args.community, "mqtt_client_id": f"gridgate-demo-{args.community}"}
    )
    community = build_community(args.households, args.seed, args.community)
    fleet = community.write_fleet(Path(".run/gridgate") / f"fleet-{args.community}.yaml")
    audit = AuditStore(settings.audit_path)
    with Registry.open(settings.registry_url, audit=audit) as registry:
        report = await asyncio.to_thread(
            partial(import_file, registry, fleet, keyring=load_keyring(settings))
        )
    print(f"gridgate demo: {report.summary()}", file=sys.stderr)
    if args.api:
        demo_accounts(settings, args.community)

    stop = asyncio.Event()
    _stop_on_signals(stop)
    if not args.verbose:  # the live line already counts rejections by reason
        logging.getLogger("gateway.pipeline").setLevel(logging.ERROR)
    metrics = GatewayMetrics()
    ready = asyncio.Event()
    gateway = asyncio.create_task(
        run_with_api(settings, stop, metrics, api=args.api, ready=ready), name="gateway"
    )
    await asyncio.wait(
        [asyncio.create_task(ready.wait()), gateway], return_when=asyncio.FIRST_COMPLETED
    )
    if gateway.done():
        await gateway  # it failed to start: raise its error
        return 1
    sim_cmd = [
        sys.executable, "-m", "gateway.cli", "simulate",
        "--households", str(args.households), "--speed", str(args.speed),
        "--duration", f"{args.duration:g}", "--seed", str(args.seed),
        "--community", args.community, "--fleet-out", str(fleet),
        "--host", settings.mqtt_host, "--port", str(settings.mqtt_port), "--quiet",
    ]  # fmt: skip
    for scenario in args.scenario:
        sim_cmd += ["--scenario", scenario]
    simulator = await asyncio.create_subprocess_exec(*sim_cmd, stdout=asyncio.subprocess.PIPE)
    print(
        f"gridgate demo: community {args.community!r} ({args.households} households) publishing "
        f"at {args.speed:g}× real time to {settings.mqtt_host}:{settings.mqtt_port}; gateway "
        f"writing to {settings.influx_url} db={settings.influx_database}. Ctrl-C to stop.",
        file=sys.stderr,
    )
    reporter = asyncio.create_task(
        report_progress(metrics, stop, live=sys.stderr.isatty()), name="progress"
    )
    sim_done = asyncio.create_task(simulator.communicate(), name="simulator")
    stop_wait = asyncio.create_task(stop.wait())
    await asyncio.wait([sim_done, stop_wait, gateway], return_when=asyncio.FIRST_COMPLETED)
    if simulator.returncode is None:
        simulator.terminate()
    sim_out, _ = await sim_done
    await asyncio.sleep(2 * settings.linger_ms / 1000 + 1)  # let the last batch land
    stop.set()
    await gateway
    await reporter
    stop_wait.cancel()
    async with InfluxV1Client(settings.influx_url, settings.influx_database) as influx:
        print(f"points in InfluxDB for community {args.community!r}:", file=sys.stderr)
        for measurement in ("access", "safety", "meter", "elder", "device_status", "liveness"):
            retained = settings.influx_retention
            source = qualified(measurement) if retained else quote_ident(measurement)
            rows = await influx.query(
                f'SELECT count("schema") FROM {source}'
                f" WHERE community = {quote_literal(args.community)}"
            )
            n = int(rows[0]["count"]) if rows else 0
            print(f"  {measurement:<14} {n:>10,}", file=sys.stderr)
    if sim_out:
        sent = json.loads(sim_out)
        print(f"simulator: {json.dumps(sent.get('messages'), ensure_ascii=False)}", file=sys.stderr)
    print(f"gateway: {json.dumps(metrics.snapshot(), ensure_ascii=False)}", file=sys.stderr)
    return 0
