"""A one-line live summary of the gateway's counters, for `gridgate run` and `gridgate demo`."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from typing import TextIO

from gateway.pipeline.metrics import GatewayMetrics


def summary_line(m: GatewayMetrics, prev: tuple[int, int], elapsed_s: float) -> str:
    received_rate = (m.received - prev[0]) / elapsed_s if elapsed_s > 0 else 0.0
    written_rate = (m.written - prev[1]) / elapsed_s if elapsed_s > 0 else 0.0
    return (
        f"received {m.received:>10,} ({received_rate:>8,.0f}/s)  "
        f"written {m.written:>10,} ({written_rate:>8,.0f}/s)  "
        f"dead-lettered {m.dead_lettered:>7,}  backlog {m.backlog:>6,}"
        + (f"  rejected by reason: {_top(m)}" if m.rejected else "")
    )


def _top(m: GatewayMetrics, n: int = 3) -> str:
    return ", ".join(f"{reason} {count:,}" for reason, count in m.rejected.most_common(n))


async def report_progress(
    metrics: GatewayMetrics,
    stop: asyncio.Event,
    *,
    interval_s: float = 1.0,
    out: TextIO = sys.stderr,
    live: bool = True,
) -> None:
    """Rewrite one line in place on a terminal (`live`), or print a line per interval."""
    prev = (metrics.received, metrics.written)
    last = time.monotonic()
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
        now = time.monotonic()
        line = summary_line(metrics, prev, now - last)
        prev, last = (metrics.received, metrics.written), now
        out.write(("\r" + line) if live else line + "\n")
        out.flush()
    if live:
        out.write("\n")
