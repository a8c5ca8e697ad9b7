"""The `gridgate` command: run | demo | simulate | decode | registry | audit."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters.registry import ADAPTERS
from devices.errors import ConfigError, RejectedInput
from devices.validation import stamp_and_check
from gateway.metrics import GatewayMetrics
from gateway.progress import report_progress
from gateway.settings import Settings, unknown_variables

log = logging.getLogger("gridgate")


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # httpx logs every request at INFO: one line per written batch is noise, not news.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLevelName(level)))


def _tune_gc() -> None:
    """Fewer cyclic-GC passes: every message allocates several tracked objects, and with the
    default gen-0 threshold (700) the collector ran every ~100 messages (≈1 µs per message).
    Start-up objects are frozen so that the rarer full passes do not rescan them."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):  # Debian only: the loop supports signals
        loop.add_signal_handler(sig, stop.set)


# -- run ----------------------------------------------------------------------------------


async def _run(settings: Settings, progress: bool) -> int:
    from gateway.runtime import run_gateway

    stop = asyncio.Event()
    _stop_on_signals(stop)
    metrics = GatewayMetrics()
    reporter = None
    if progress:
        reporter = asyncio.create_task(
            report_progress(metrics, stop, interval_s=10.0, live=False), name="progress"
        )
    await run_gateway(settings, stop, metrics)
    stop.set()
    if reporter:
        await reporter
    log.info("stopped: %s", json.dumps(metrics.snapshot(), ensure_ascii=False))
    return 0


# -- demo ---------------------------------------------------------------------------------


async def _demo(settings: Settings, args: argparse.Namespace) -> int:
    """The simulated community through the real services: fleet → registry → gateway."""
    from gateway.audit.store import AuditStore
    from gateway.registry import Registry
    from gateway.registry.importer import import_file
    from gateway.runtime import load_keyring, run_gateway
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

    stop = asyncio.Event()
    _stop_on_signals(stop)
    if not args.verbose:  # the live line already counts rejections by reason
        logging.getLogger("gateway.pipeline").setLevel(logging.ERROR)
    metrics = GatewayMetrics()
    ready = asyncio.Event()
    gateway = asyncio.create_task(run_gateway(settings, stop, metrics, ready=ready), name="gateway")
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


# -- decode -------------------------------------------------------------------------------


if TYPE_CHECKING:
    from devices.reading import Reading
    from privacy.policy import Policy


def _decoded(reading: Reading, kept: Reading, policy: Policy) -> dict[str, Any]:
    """What `decode` prints for one reading: positions, counts and canonical names, never text
    the device chose. Its id and place codes are printed only when they are ids the registry
    would take (`gateway.registry.identifiers.shown_id`: topic-safe, no phone or ID number),
    else ``<redacted>``; dropped fields are named only when the privacy policy names them (the
    rest, keys the payload made up, are counted)."""
    from devices.families import Channel
    from gateway.registry.identifiers import shown_id
    from privacy.policy import STATUS

    table = STATUS if reading.channel is Channel.STATUS else reading.family.value
    canonical = policy.families[table].fields
    dropped = set(reading.values) - set(kept.values)
    named = sorted(k for k in dropped if isinstance(k, str) and k in canonical)
    loc = kept.location
    return {
        "device_id": shown_id(kept.device_id),
        "family": kept.family.value,
        "channel": kept.channel.value,
        "kind": kept.kind,
        "time_ns": kept.time_ns,
        "location": {
            level: shown_id(code) if code else ""
            for level, code in (
                ("community", loc.community),
                ("grid", loc.grid),
                ("building", loc.building),
                ("unit", loc.unit),
                ("room", loc.room),
            )
        },
        "values": dict(kept.values),
        "dropped_fields": named,
        "dropped_unknown_fields": len(dropped) - len(named),
    }


def _rejection_text(reason: str, detail: str) -> str:
    """``rejected: reason: detail``. The detail names fields, and a field may be a key the
    payload made up (``loc.<name>``): a detail that may hold an identifier is withheld."""
    from privacy.identifiers import looks_personal

    if detail and (looks_personal(detail) or looks_personal(detail, loose=True)):
        detail = "(detail withheld: it may quote the payload's own text)"
    return f"rejected: {reason}: {detail}"


def _decode(args: argparse.Namespace, settings: Settings) -> int:
    import time

    from gateway.runtime import load_keyring
    from privacy.deidentify import Deidentifier
    from privacy.keys import KeyRing
    from privacy.policy import load_policy

    adapter = ADAPTERS.get(args.adapter)
    if adapter is None:
        print(f"unknown adapter {args.adapter!r}; known: {', '.join(ADAPTERS)}", file=sys.stderr)
        return 2
    payload: bytes
    if args.hex is not None:
        try:
            payload = bytes.fromhex(args.hex)
        except ValueError:
            print("rejected: not_hex: --hex is not hexadecimal text", file=sys.stderr)
            return 1
    elif args.payload is not None:
        payload = args.payload.encode()
    else:
        payload = sys.stdin.buffer.read()
    try:
        now = time.time_ns()
        readings = [
            stamp_and_check(r, now, now, settings.max_past_s, settings.max_future_s)
            for r in adapter.decode(args.topic, payload)
        ]
    except RejectedInput as exc:
        print(_rejection_text(exc.reason, exc.detail), file=sys.stderr)
        return 1
    try:
        keyring = load_keyring(settings)
    except ConfigError:
        keyring = KeyRing([("tmp", os.urandom(32))])
        print("decode: no pseudonymisation key configured; pseudonyms below use a throwaway key",
              file=sys.stderr)  # fmt: skip
    policy = load_policy(settings.privacy_policy)
    privacy = Deidentifier(policy, keyring)
    out = [_decoded(reading, privacy.apply(reading), policy) for reading in readings]
    print(json.dumps(out, ensure_ascii=False, indent=2, default=str))
    return 0


# -- main ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from gateway.audit import cli as audit_cli
    from gateway.registry import cli as registry_cli
    from simulators import cli as sim_cli

    parser = argparse.ArgumentParser(prog="gridgate", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the gateway against the configured broker/InfluxDB")
    run.add_argument("--no-progress", action="store_true", help="no periodic counter lines")

    demo = sub.add_parser(
        "demo", help="the simulated community through the gateway, with a live summary"
    )
    demo.add_argument("--households", type=int, default=3000)
    demo.add_argument("--speed", type=float, default=60, help="simulated seconds per second")
    demo.add_argument("--duration", type=float, default=0, help="seconds; 0 = until Ctrl-C")
    demo.add_argument("--seed", type=int, default=1)
    demo.add_argument("--community", default="demo")
    demo.add_argument(
        "--scenario", action="append", default=[], help="NAME@PLACE[@SIM_OFFSET], repeatable"
    )
    demo.add_argument("--verbose", action="store_true", help="log each rejection (rate-limited)")

    simulate = sub.add_parser("simulate", help="publish a simulated fleet through the broker")
    sim_cli.add_arguments(simulate)

    registry_cli.add_arguments(sub)
    audit_cli.add_arguments(sub)

    decode = sub.add_parser("decode", help="decode one message and print canonical readings")
    decode.add_argument("--adapter", default="gridgate_json")
    decode.add_argument("--topic", default="")
    decode.add_argument("--payload", help="payload text (else --hex, else stdin)")
    decode.add_argument("--hex", help="payload as hex text, spaces allowed")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "simulate":
        from simulators import cli as sim_cli

        return sim_cli.run(args)
    try:
        settings = Settings()
    except Exception as exc:  # pydantic's message names the bad variable
        print(f"gridgate: bad settings: {exc}", file=sys.stderr)
        return 2
    _setup_logging(settings.log_level)
    for name in unknown_variables(os.environ):
        log.warning("%s is not a gridgate setting (a typo?); it is ignored", name)
    try:
        if args.command == "decode":
            return _decode(args, settings)
        if args.command == "registry":
            from gateway.registry import cli as registry_cli
            from gateway.runtime import load_keyring

            return registry_cli.run(
                args,
                settings.registry_url,
                keyring=lambda: load_keyring(settings),  # only files with residents need it
                audit_path=settings.audit_path,
            )
        if args.command == "audit":
            from gateway.audit import cli as audit_cli

            return audit_cli.run(args, settings.audit_path, settings.registry_url)
        _tune_gc()
        if args.command == "run":
            return asyncio.run(_run(settings, progress=not args.no_progress))
        if args.command == "demo":
            return asyncio.run(_demo(settings, args))
    except ConfigError as exc:
        print(f"gridgate: {exc}", file=sys.stderr)
        return 2
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
