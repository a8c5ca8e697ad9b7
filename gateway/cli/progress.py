"""`gridgate run`'s periodic counter line: messages, readings stored, dead letters and what is
in flight, named as such and within 80 columns."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from typing import TextIO

from gateway.cli.terminal import fit
from gateway.pipeline.metrics import GatewayMetrics


def summary_line(m: GatewayMetrics, prev: tuple[int, int], elapsed_s: float) -> str:
    """One line: MQTT messages received (a message may carry several readings), readings
    stored in InfluxDB, messages dead-lettered, messages received but not yet acknowledged."""
    msg_rate = (m.received - prev[0]) / elapsed_s if elapsed_s > 0 else 0.0
    stored_rate = (m.written - prev[1]) / elapsed_s if elapsed_s > 0 else 0.0
    line = (
        f"msgs {m.received:,} ({msg_rate:,.0f}/s) │ stored {m.written:,} ({stored_rate:,.0f}/s)"
        f" │ dead {m.dead_lettered:,} │ in flight {m.backlog:,}"
    )
    if m.rejected:
        line += " │ " + ", ".join(f"{r} {n:,}" for r, n in m.rejected.most_common(2))
    return fit(line)


async def report_progress(
    metrics: GatewayMetrics,
    stop: asyncio.Event,
    *,
    interval_s: float = 10.0,
    out: TextIO = sys.stderr,
) -> None:
    """A line per interval until `stop`."""
    prev = (metrics.received, metrics.written)
    last = time.monotonic()
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
        now = time.monotonic()
        line = summary_line(metrics, prev, now - last)
        prev, last = (metrics.received, metrics.written), now
        out.write(line + "\n")
        out.flush()
