"""The `gridgate` command: run | api | demo | simulate | decode | registry | audit | users |
apikey | alerts | query."""

# One command tree; each command lives in its own module: gateway.cli.run (run), gateway.cli.demo,
# gateway.cli.decode, gateway.registry.cli, gateway.audit.cli, simulators.cli, gateway.cli.alerts,
# gateway.cli.query.

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import logging
import sys
from collections.abc import Sequence

from devices.errors import ConfigError
from gateway.cli.decode import decode_command
from gateway.cli.run import api_only_command, run_command
from gateway.settings import Settings, environment, process_environment, unknown_variables

log = logging.getLogger("gridgate")
M_ARENA_MAX = -8  # glibc's mallopt parameter (malloc.h)


def _setup_logging(level: str, tag: str = "") -> None:
    """`tag` names the worker of `gridgate run --workers N` whose lines these are."""
    logging.basicConfig(
        level=level,
        format=f"%(asctime)s %(levelname)-7s {tag + ' ' if tag else ''}%(name)s: %(message)s",
        stream=sys.stderr,
    )
    # httpx logs every request at INFO: one line per written batch is noise, not news.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLevelName(level)))


def _cap_malloc_arenas() -> None:
    """Two glibc malloc arenas instead of up to eight per core. Each thread that allocates
    (paho's network thread, the to_thread pool) gets an arena of its own, and their
    fragmentation stayed resident: bench-alerts' peak RSS went from 227 to 208 MB with two
    (issue 15). An operator's MALLOC_ARENA_MAX wins; without glibc there is nothing to do."""
    if "MALLOC_ARENA_MAX" in process_environment():
        return
    with contextlib.suppress(OSError, AttributeError):  # no libc.so.6, or no mallopt
        ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, 2)


def _tune_gc() -> None:
    """Fewer cyclic-GC passes: every message allocates several tracked objects, and with the
    default gen-0 threshold (700) the collector ran every ~100 messages (≈1 µs per message).
    Start-up objects are frozen so that the rarer full passes do not rescan them."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: at least 1")
    return value


# -- main ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from gateway.audit import cli as audit_cli
    from gateway.cli import alerts as alerts_cli
    from gateway.cli import api as api_cli
    from gateway.cli import broker as broker_cli
    from gateway.cli import demo as demo_cli
    from gateway.cli import push_url as push_url_cli
    from gateway.cli import query as query_cli
    from gateway.registry import cli as registry_cli
    from simulators import cli as sim_cli

    parser = argparse.ArgumentParser(prog="gridgate", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the gateway against the configured broker/InfluxDB")
    run.add_argument("--no-progress", action="store_true", help="no periodic counter lines")
    run.add_argument("--api", action="store_true", help="serve the HTTP API in this process too")
    run.add_argument(
        "--workers",
        type=_positive,
        metavar="N",
        help="ingest processes sharing the broker's traffic through $share (default: cores - 1,"
        " at least 1)",
    )
    run.add_argument("--worker-tag", default="", help=argparse.SUPPRESS)  # set by the supervisor

    demo_cli.add_arguments(sub)
    broker_cli.add_arguments(sub)

    simulate = sub.add_parser("simulate", help="publish a simulated fleet through the broker")
    sim_cli.add_arguments(simulate)

    registry_cli.add_arguments(sub)
    audit_cli.add_arguments(sub)
    api_cli.add_arguments(sub)
    alerts_cli.add_arguments(sub)
    query_cli.add_arguments(sub)
    push_url_cli.add_arguments(sub)

    decode = sub.add_parser("decode", help="decode one message and print canonical readings")
    decode.add_argument("--adapter", default="gridgate_json")
    decode.add_argument("--topic", default="")
    decode.add_argument("--payload", help="payload text (else --hex, else stdin)")
    decode.add_argument("--hex", help="payload as hex text, spaces allowed")
    decode.add_argument(
        "--received-at",
        metavar="TIME",
        help="decode as if received then (a captured payload): ISO 8601 (no offset = UTC+8) "
        "or epoch ms; the time checks (GRIDGATE_MAX_PAST_S/MAX_FUTURE_S) are relative to it",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "simulate":
        from simulators import cli as sim_cli

        return sim_cli.run(args)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:  # SettingsError: a line per bad variable, what it expects
        for line in str(exc).splitlines():
            print(f"gridgate: {line}", file=sys.stderr)
        return 2
    _setup_logging(settings.log_level, getattr(args, "worker_tag", ""))
    for name in unknown_variables(environment()):
        log.warning("%s is not a gridgate setting (a typo?); it is ignored", name)
    try:
        if args.command == "decode":
            return decode_command(args, settings)
        if args.command == "registry":
            from gateway.registry import cli as registry_cli
            from gateway.runtime import load_keyring

            return registry_cli.run(
                args,
                settings.registry_url,
                keyring=lambda: load_keyring(settings),  # only files with residents need it
                audit_path=settings.audit_path,
                routing_policy=settings.routing_policy,
            )
        if args.command == "audit":
            from gateway.audit import cli as audit_cli

            return audit_cli.run(args, settings.audit_path, settings.registry_url)
        if args.command == "broker-config":
            from gateway.cli import broker as broker_cli

            return broker_cli.run(args, settings)
        if args.command in ("users", "apikey"):
            from gateway.cli.api import accounts_command

            return accounts_command(args, settings)
        if args.command == "alerts":
            from gateway.cli import alerts as alerts_cli

            return alerts_cli.run(args, settings)
        if args.command == "push-url":
            from gateway.cli import push_url as push_url_cli

            return push_url_cli.run(args, settings)
        if args.command == "query":
            from gateway.cli import query as query_cli

            return query_cli.run(args, settings)
        _tune_gc()
        _cap_malloc_arenas()
        if args.command == "run":
            from gateway.cli.workers import default_workers, run_workers

            workers = args.workers if args.workers is not None else default_workers()
            if workers > 1:
                if args.api:
                    parser.error("--api serves one process; run `gridgate api` beside the workers")
                return asyncio.run(run_workers(settings, workers, progress=not args.no_progress))
            return asyncio.run(run_command(settings, progress=not args.no_progress, api=args.api))
        if args.command == "api":
            return asyncio.run(api_only_command(settings))
        if args.command == "demo":
            from gateway.cli.demo import demo_command

            return asyncio.run(demo_command(settings, args))
    except ConfigError as exc:
        print(f"gridgate: {exc}", file=sys.stderr)
        return 2
    parser.error(f"unknown command {args.command}")
    return 2
