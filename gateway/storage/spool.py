"""The disk spool: batches InfluxDB could not take, kept on disk until it can (R8).

While InfluxDB is down the broker's queue is the only buffer, and it is bounded
(`max_queued_messages`) and lost with the broker. The spool makes a batch durable on the
gateway's own disk, so it can be acknowledged to the broker and replayed later.

Layout: numbered segment files (``000000000001.spool`` …) in one directory, appended to in
order. A record is ``<length u32 LE><crc32 u32 LE><payload>``; the payload is JSON (orjson)
holding the retention policy, the line-protocol lines and, per line, where it came from
(topic and receive time; null for the gateway's own lines) so that a line InfluxDB refuses on
replay can still be dead-lettered. An append is written and fsync'ed before it returns: the
caller acks only after that. Lines carry explicit timestamps, so a replay that is repeated
(the gateway killed after writing a segment, before deleting it) writes the same points again,
never different ones.

Opening the spool checks every record. A torn or corrupt record (a crash mid-append, a bad
disk) ends its segment: the file is cut there, the bytes are counted and logged, and start-up
goes on — a corrupt tail never blocks the gateway (Telegraf's "log corrupt" panic, Vector's
buffers that refuse to start).

Synchronous file I/O throughout: the pipeline calls it through ``asyncio.to_thread``. A lock
makes appends from several writer tasks safe.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<II")  # payload length, crc32 of the payload
_SUFFIX = ".spool"
_MAX_RECORD = 1 << 30  # a length beyond this is a corrupt header, not a record


@dataclass(frozen=True, slots=True)
class LineSource:
    """Where a spooled line came from: enough to dead-letter it if InfluxDB refuses it."""

    topic: str
    received_ns: int


@dataclass(frozen=True, slots=True)
class SpoolRecord:
    """One spooled write: lines bound for one retention policy (None: the default one)."""

    rp: str | None
    lines: tuple[str, ...]
    sources: tuple[LineSource | None, ...]  # one per line

    def encode(self) -> bytes:
        src = [None if s is None else [s.topic, s.received_ns] for s in self.sources]
        return orjson.dumps({"rp": self.rp, "lines": self.lines, "src": src})

    @classmethod
    def decode(cls, payload: bytes) -> SpoolRecord:
        body: dict[str, Any] = orjson.loads(payload)
        sources = tuple(
            None if s is None else LineSource(str(s[0]), int(s[1])) for s in body["src"]
        )
        lines = tuple(str(line) for line in body["lines"])
        if len(sources) != len(lines):
            raise ValueError("spool record: lines and sources differ in length")
        rp = body["rp"]
        return cls(None if rp is None else str(rp), lines, sources)


@dataclass(frozen=True, slots=True)
class Segment:
    """A sealed segment handed out for replay: delete it with `Spool.discard` once written."""

    number: int
    records: tuple[SpoolRecord, ...]
    size: int


@dataclass
class SpoolStats:
    """What the spool holds and what it found wrong, for metrics and the log."""

    bytes: int = 0
    records: int = 0
    segments: int = 0
    appended_records: int = 0
    replayed_records: int = 0
    corrupt_bytes: int = 0  # cut off torn or corrupt tails (start-up) and unreadable records
    corrupt_segments: int = 0


def read_segment(data: bytes) -> list[SpoolRecord]:
    """The records of a segment's bytes up to the first torn or corrupt one; changes nothing
    (a reader beside a running gateway, e.g. a test counting what is spooled)."""
    records, offset = [], 0
    while (end := Spool._record_end(data, offset)) is not None:
        length, _ = _HEADER.unpack_from(data, offset)
        start = offset + _HEADER.size
        records.append(SpoolRecord.decode(data[start : start + length]))
        offset = end
    return records


class Spool:
    """Segment files in `directory`, at most `max_bytes` in all (an append that would pass it
    is refused: the caller then leaves the batch unacked and the broker keeps it)."""

    def __init__(
        self, directory: Path, max_bytes: int, *, segment_bytes: int = 16 * 1024 * 1024
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.stats = SpoolStats()
        self._lock = threading.Lock()
        self._sizes: dict[int, int] = {}  # segment number → valid bytes
        self._counts: dict[int, int] = {}  # segment number → records
        self._active: int | None = None  # the segment appended to (never handed out)
        self._file: Any = None

    # -- opening ----------------------------------------------------------------------------

    def open(self) -> SpoolStats:
        """Check every segment, cut corrupt tails, and count what is waiting."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for path in sorted(self.directory.glob(f"*{_SUFFIX}")):
            try:
                number = int(path.stem)
            except ValueError:
                log.warning("spool: ignoring %s (not a segment name)", path.name)
                continue
            valid, records = self._check(path)
            if records == 0:
                path.unlink()
                continue
            self._sizes[number], self._counts[number] = valid, records
        self._refresh_stats()
        if self.stats.records:
            log.warning(
                "spool: %d batches (%d bytes) in %d segments wait for InfluxDB",
                self.stats.records, self.stats.bytes, self.stats.segments,
            )  # fmt: skip
        return self.stats

    def _check(self, path: Path) -> tuple[int, int]:
        """(valid bytes, records) of a segment; a corrupt tail is cut off and counted."""
        data = path.read_bytes()
        offset = records = 0
        while offset < len(data):
            end = self._record_end(data, offset)
            if end is None:
                break
            offset, records = end, records + 1
        if offset < len(data):
            cut = len(data) - offset
            self.stats.corrupt_bytes += cut
            self.stats.corrupt_segments += 1
            log.error(
                "spool: %s has a torn or corrupt record at byte %d; cut %d bytes, kept %d"
                " batches before it", path.name, offset, cut, records,
            )  # fmt: skip
            with path.open("r+b") as f:
                f.truncate(offset)
                os.fsync(f.fileno())
        return offset, records

    @staticmethod
    def _record_end(data: bytes, offset: int) -> int | None:
        """Where the record at `offset` ends, or None if it is torn or corrupt."""
        if offset + _HEADER.size > len(data):
            return None
        length, crc = _HEADER.unpack_from(data, offset)
        start = offset + _HEADER.size
        if length > _MAX_RECORD or start + length > len(data):
            return None
        payload = data[start : start + length]
        if zlib.crc32(payload) != crc:
            return None
        try:
            SpoolRecord.decode(payload)
        except (ValueError, KeyError, TypeError, IndexError):
            return None
        return start + int(length)

    # -- appending --------------------------------------------------------------------------

    def append(self, records: Sequence[SpoolRecord]) -> bool:
        """Write `records` and fsync; False (nothing written) if they would pass `max_bytes`."""
        blob = b"".join(self._frame(r.encode()) for r in records)
        with self._lock:
            if self.stats.bytes + len(blob) > self.max_bytes:
                return False
            if self._active is None or self._sizes[self._active] >= self.segment_bytes:
                self._start_segment()
            assert self._active is not None
            self._file.write(blob)
            self._file.flush()
            os.fsync(self._file.fileno())
            self._sizes[self._active] += len(blob)
            self._counts[self._active] += len(records)
            self.stats.appended_records += len(records)
            self._refresh_stats()
        return True

    @staticmethod
    def _frame(payload: bytes) -> bytes:
        return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload

    def _start_segment(self) -> None:
        self._close_active()
        number = max(self._sizes, default=0) + 1
        path = self._path(number)
        self._file = path.open("ab")
        self._active = number
        self._sizes[number], self._counts[number] = 0, 0
        fd = os.open(self.directory, os.O_RDONLY)
        try:  # the new file's name must survive a crash too
            os.fsync(fd)
        finally:
            os.close(fd)

    def _close_active(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file, self._active = None, None

    # -- replaying --------------------------------------------------------------------------

    def oldest(self) -> Segment | None:
        """The oldest segment with its records (the active one is sealed first), or None."""
        with self._lock:
            if not self._sizes:
                return None
            number = min(self._sizes)
            if number == self._active:
                self._close_active()
            size = self._sizes[number]
        records = read_segment(self._path(number).read_bytes()[:size])
        return Segment(number, tuple(records), size)

    def discard(self, segment: Segment) -> None:
        """Delete a replayed segment: its lines are in InfluxDB (or dead-lettered)."""
        with self._lock:
            self._path(segment.number).unlink(missing_ok=True)
            self._sizes.pop(segment.number, None)
            self._counts.pop(segment.number, None)
            self.stats.replayed_records += len(segment.records)
            self._refresh_stats()

    def close(self) -> None:
        with self._lock:
            self._close_active()

    @property
    def empty(self) -> bool:
        return not self._sizes

    def _refresh_stats(self) -> None:
        self.stats.bytes = sum(self._sizes.values())
        self.stats.records = sum(self._counts.values())
        self.stats.segments = len(self._sizes)

    def _path(self, number: int) -> Path:
        return self.directory / f"{number:012d}{_SUFFIX}"


__all__ = ["LineSource", "Segment", "Spool", "SpoolRecord", "SpoolStats", "read_segment"]
