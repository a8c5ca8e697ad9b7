"""InfluxDB or the disk spool, per write; and the replay of the spool once InfluxDB answers.

While InfluxDB is down a batch goes to the spool (fsync'ed) and is then acked, so the broker's
bounded queue is not what holds an outage. A drain task probes InfluxDB every `probe_s` (not
the writers' doubling backoff: data should flow again within a second of InfluxDB's return),
creates the schema again if InfluxDB came back empty, and replays segments oldest first while
new batches go straight to InfluxDB. A full spool refuses the append: the writer keeps the
batch unacked and retries, the consumer stops reading, and the broker holds the rest
(backpressure, never a drop); the pipeline raises an alert for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from devices.errors import StorageError
from gateway.pipeline.metrics import GatewayMetrics
from gateway.storage.spool import LineSource, Spool, SpoolRecord

log = logging.getLogger(__name__)


class LineWriter(Protocol):
    async def write(self, lines: Sequence[str], *, rp: str | None = None) -> None: ...


# Lines InfluxDB refused on replay with where they came from; the pipeline dead-letters them.
RefusedLines = Callable[[list[tuple[LineSource, str]], str], Awaitable[None]]


class Spooler:
    def __init__(
        self,
        spool: Spool,
        writer: LineWriter,
        *,
        probe: Callable[[], Awaitable[bool]],
        prepare: Callable[[], Awaitable[None]],
        refused: RefusedLines,
        metrics: GatewayMetrics,
        on_full: Callable[[bool], None] | None = None,
        probe_s: float = 1.0,
    ) -> None:
        self.spool = spool
        self.writer = writer
        self.probe = probe
        self.prepare = prepare
        self.refused = refused
        self.metrics = metrics
        self.on_full = on_full
        self.probe_s = probe_s
        self.up = asyncio.Event()  # set while InfluxDB is believed to answer
        self.up.set()
        self.full = False
        self._work = asyncio.Event()  # something was spooled: the drain has work
        self._publish_stats()

    @property
    def down(self) -> bool:
        return not self.up.is_set()

    def mark_down(self) -> None:
        """A write failed as retryable: spool from now on until the probe says otherwise."""
        if self.up.is_set():
            log.warning("InfluxDB is not answering: batches go to the spool until it does")
        self.up.clear()
        self._work.set()

    async def take(
        self, rp: str | None, lines: list[str], sources: Sequence[LineSource | None]
    ) -> bool:
        """Spool one write durably; False when the spool is full (the caller keeps it)."""
        record = SpoolRecord(rp, tuple(lines), tuple(sources))
        taken = await asyncio.to_thread(self.spool.append, [record])
        if not taken:  # full until the replay has emptied half of it (no flapping alert)
            self._set_full(True)
        else:
            self.metrics.spooled += len(lines) - list(sources).count(None)  # readings
            self._work.set()
        self._publish_stats()
        return taken

    def _set_full(self, full: bool) -> None:
        if full == self.full:
            return
        self.full = full
        if full:
            log.error(
                "spool full (%d bytes, limit %d): batches stay unacked at the broker until"
                " InfluxDB is back", self.spool.stats.bytes, self.spool.max_bytes,
            )  # fmt: skip
        else:
            log.warning("spool has room again (%d bytes)", self.spool.stats.bytes)
        if self.on_full is not None:
            self.on_full(full)

    def _publish_stats(self) -> None:
        stats = self.spool.stats
        self.metrics.spool_bytes = stats.bytes
        self.metrics.spool_batches = stats.records
        self.metrics.spool_corrupt_bytes = stats.corrupt_bytes
        self.metrics.spool_full = int(self.full)

    # -- the drain --------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop`: probe while InfluxDB is down, replay while the spool holds data."""
        if not self.spool.empty:
            self._work.set()
        while not stop.is_set():
            if self.spool.empty and not self.down:
                self._work.clear()
                await _either(self._work, stop, None)
                continue
            if self.down and not await self._answers():
                await _either(stop, None, self.probe_s)
                continue
            try:
                segment = await asyncio.to_thread(self.spool.oldest)
            except OSError as exc:  # the disk: try again, the segment stays where it is
                log.error("spool: cannot read the oldest segment, retrying: %s", exc)
                await _either(stop, None, self.probe_s)
                continue
            if segment is None:
                continue
            if await self._replay(segment.records, stop):
                await asyncio.to_thread(self.spool.discard, segment)
                if self.full and self.spool.stats.bytes < self.spool.max_bytes // 2:
                    self._set_full(False)
                self._publish_stats()

    async def _answers(self) -> bool:
        """InfluxDB answers its ping and has its schema (it may have come back empty)."""
        if not await self.probe():
            return False
        try:
            await self.prepare()
        except StorageError as exc:
            log.error("InfluxDB answers but its schema could not be made: %s", exc)
            return False
        log.warning(
            "InfluxDB answers again: replaying %d spooled batches", self.spool.stats.records
        )
        self.up.set()
        return True

    async def _replay(self, records: Sequence[SpoolRecord], stop: asyncio.Event) -> bool:
        """Write a segment's records in order; False if InfluxDB went away or `stop` came
        (the segment stays and is replayed from its start: the same points again)."""
        for record in records:
            if stop.is_set():
                return False
            try:
                await self._write(record.rp, list(record.lines), list(record.sources))
            except StorageError as exc:
                log.warning("replay paused, InfluxDB went away again: %s", exc)
                self.mark_down()
                return False
        return True

    async def _write(
        self, rp: str | None, lines: list[str], sources: list[LineSource | None]
    ) -> None:
        """Write, bisecting a refusal down to the lines InfluxDB will never take; a retryable
        failure is raised to the caller."""
        try:
            await self.writer.write(lines, rp=rp)
        except StorageError as exc:
            if exc.retryable:
                raise
            if len(lines) == 1:
                source = sources[0]
                if source is None:
                    log.error("InfluxDB refused a spooled gateway-made point: %s", exc)
                else:
                    await self.refused([(source, lines[0])], "InfluxDB refused the spooled point")
                return
            mid = len(lines) // 2
            await self._write(rp, lines[:mid], sources[:mid])
            await self._write(rp, lines[mid:], sources[mid:])
            return
        readings = len(lines) - sources.count(None)  # not the gateway's own liveness lines
        self.metrics.replayed += readings
        self.metrics.written += readings


async def _either(a: asyncio.Event, b: asyncio.Event | None, timeout_s: float | None) -> None:
    """Wait until `a` or `b` is set, or `timeout_s` passes."""
    waits = [asyncio.ensure_future(a.wait())]
    if b is not None:
        waits.append(asyncio.ensure_future(b.wait()))
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


__all__ = ["LineWriter", "Spooler"]
