"""``gridgate simulate``: publish a simulated fleet's traffic to a broker and report counts.

Progress goes to stderr about once a second; the final report is one JSON object on stdout, so
scripts and benchmarks can parse it. Exit status: 0 every message acknowledged, 1 some were
not (or could not be queued), 2 the broker was unreachable or the arguments were wrong.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

import orjson

from devices.topics import is_valid_id
from simulators import community_cli
from simulators.fleet import make_fleet
from simulators.publisher import (
    DEFAULT_MAX_INFLIGHT,
    Progress,
    Publisher,
    PublishError,
    add_broker_arguments,
)
from simulators.traffic import Traffic

DEFAULT_DURATION_S = 10.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", type=int, default=100, help="fleet size (default 100)")
    parser.add_argument(
        "--rate", type=float, default=100.0, help="messages/s, 0 = as fast as possible"
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help=f"seconds to publish, 0 = until Ctrl-C/SIGTERM (default {DEFAULT_DURATION_S:g}"
        " unless --count is given)",
    )
    parser.add_argument("--count", type=int, default=None, help="stop after this many messages")
    parser.add_argument(
        "--bad-ratio", type=float, default=0.0, help="share of malformed/hostile messages, 0..1"
    )
    parser.add_argument("--community", default="demo", help="community id (topic-safe)")
    parser.add_argument("--seed", type=int, default=0, help="fleet and traffic seed")
    add_broker_arguments(parser)
    parser.add_argument(
        "--max-inflight",
        type=int,
        default=DEFAULT_MAX_INFLIGHT,
        help="unacknowledged QoS 1 messages allowed at once",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    community_cli.add_community_arguments(parser)  # --households N: a whole community


def _check(args: argparse.Namespace) -> str:
    """An error message for arguments that cannot work, or ''."""
    if args.devices < 1:
        return "--devices must be >= 1"
    if args.rate < 0:
        return "--rate must be >= 0"
    if args.count is not None and args.count < 0:
        return "--count must be >= 0"
    if args.duration is not None and args.duration < 0:
        return "--duration must be >= 0"
    if not 0.0 <= args.bad_ratio <= 1.0:
        return "--bad-ratio must be within 0..1"
    if not is_valid_id(args.community):
        return "--community may only use [A-Za-z0-9_.:-] (it is a topic level)"
    if not 1 <= args.max_inflight < 65_535:
        return "--max-inflight must be within 1..65534"
    return ""


def _print_progress(p: Progress) -> None:
    print(
        f"simulate: {p.elapsed_s:6.1f}s sent {p.sent} acked {p.acked} rate {p.rate:.0f}/s",
        file=sys.stderr,
        flush=True,
    )


@contextmanager
def _stop_on_signals(publisher: Publisher) -> Iterator[None]:
    """Ctrl-C / SIGTERM stop sending but still wait for acks and print the report."""

    def handler(signum: int, frame: FrameType | None) -> None:
        publisher.request_stop()

    try:
        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: leave signals alone
        previous = {}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "households", None) is not None:
        return community_cli.run(args)
    problem = _check(args)
    if problem:
        print(f"simulate: {problem}", file=sys.stderr)
        return 2
    duration = args.duration
    if duration is None and args.count is None:
        duration = DEFAULT_DURATION_S
    elif duration == 0:
        duration = None  # until --count or a signal (what `gridgate demo` asks for)
    fleet = make_fleet(args.community, args.devices, args.seed)
    traffic = Traffic(fleet, seed=args.seed, bad_ratio=args.bad_ratio, community=args.community)
    publisher = Publisher(args.host, args.port, max_inflight=args.max_inflight)
    try:
        publisher.connect()
    except PublishError as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return 2
    try:
        with _stop_on_signals(publisher):
            report = publisher.run(
                traffic,
                rate=args.rate,
                duration_s=duration,
                count=args.count,
                progress=None if args.quiet else _print_progress,
            )
    finally:
        publisher.close()
    report.community = args.community
    sys.stdout.write(orjson.dumps(report.to_dict()).decode() + "\n")
    sys.stdout.flush()
    if report.max_clock_lead_ms > 1000:  # > 1000 msg/s per device: ms stamps cannot keep up
        print(
            f"simulate: warning: readings ran up to {report.max_clock_lead_ms} ms ahead of the"
            " clock (one device may not report twice per ms); use more --devices",
            file=sys.stderr,
        )
    return 0 if report.unacked == 0 and report.failed == 0 and report.refused == 0 else 1


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m simulators.cli``) until the gateway CLI wires it in."""
    parser = argparse.ArgumentParser(prog="gridgate simulate", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
