"""The disk spool: records survive a reopen in order, a torn or corrupt tail is cut (counted,
never blocking), a full spool refuses; and the pipeline with it: spooled batches are acked
before InfluxDB returns, replayed in order once it answers, refused lines dead-lettered."""

from __future__ import annotations

import asyncio
import shutil
import struct
from pathlib import Path

from adapters.registry import default_registry
from gateway.pipeline.core import Pipeline, PipelineConfig
from gateway.pipeline.deadletter import DeadLetterStore
from gateway.storage.spool import LineSource, Spool, SpoolRecord
from tests.support.pipeline_doubles import (
    NOW_MS,
    PRIVACY,
    FlakyWriter,
    ListSource,
    device_of_line,
    msg,
)


def record(i: int, rp: str | None = "rp_meter") -> SpoolRecord:
    lines = (f"meter,device=m-{i} energy_kwh={i} {i}", f"liveness,device=m-{i} online=true {i}")
    return SpoolRecord(rp, lines, (LineSource(f"t/{i}", i), None))


def replayed(spool: Spool) -> list[SpoolRecord]:
    out = []
    while (segment := spool.oldest()) is not None:
        out.extend(segment.records)
        spool.discard(segment)
    return out


def test_records_survive_a_reopen_in_order_across_segments(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 10**9, segment_bytes=300)
    spool.open()
    for i in range(20):
        assert spool.append([record(i, rp=None if i % 3 == 0 else "rp_meter")])
    assert spool.stats.records == 20 and spool.stats.segments > 3
    spool.close()
    again = Spool(tmp_path, 10**9, segment_bytes=300)
    assert again.open().records == 20
    assert replayed(again) == [record(i, rp=None if i % 3 == 0 else "rp_meter") for i in range(20)]
    assert again.empty and again.stats.bytes == 0 and list(tmp_path.iterdir()) == []


def test_a_segment_handed_out_is_sealed_and_new_appends_go_to_a_new_one(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 10**9)
    spool.open()
    spool.append([record(1)])
    first = spool.oldest()
    assert first is not None and first.records == (record(1),)
    spool.append([record(2)])  # while the first is being replayed
    spool.discard(first)
    assert replayed(spool) == [record(2)]


def _segment(tmp_path: Path) -> Path:
    (path,) = tmp_path.glob("*.spool")
    return path


def test_a_torn_tail_is_cut_counted_and_start_goes_on(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 10**9)
    spool.open()
    spool.append([record(1), record(2)])
    spool.close()
    path = _segment(tmp_path)
    whole = path.read_bytes()
    path.write_bytes(whole + whole[:25])  # a crash in the middle of the third append
    again = Spool(tmp_path, 10**9)
    stats = again.open()
    assert stats.records == 2 and stats.corrupt_bytes == 25 and stats.corrupt_segments == 1
    assert path.stat().st_size == len(whole)  # cut, so appends after it are readable
    again.append([record(3)])
    assert replayed(again) == [record(1), record(2), record(3)]


def test_a_corrupt_record_ends_its_segment_and_later_segments_are_kept(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 10**9, segment_bytes=1)  # one record per segment
    spool.open()
    for i in range(3):
        spool.append([record(i), record(i + 10)])
    spool.close()
    first = sorted(tmp_path.glob("*.spool"))[0]
    data = bytearray(first.read_bytes())
    length = struct.unpack_from("<I", data, 0)[0]
    data[8 + length + 12] ^= 0xFF  # a flipped byte in the second record's payload
    first.write_bytes(bytes(data))
    again = Spool(tmp_path, 10**9)
    stats = again.open()
    assert stats.records == 5 and stats.corrupt_segments == 1
    assert stats.corrupt_bytes == len(data) - 8 - length
    assert replayed(again) == [record(0), record(1), record(11), record(2), record(12)]


def test_garbage_and_empty_files_never_block_the_start(tmp_path: Path) -> None:
    (tmp_path / "000000000001.spool").write_bytes(b"\xff" * 100)
    (tmp_path / "000000000002.spool").write_bytes(b"")
    (tmp_path / "notes.spool").write_bytes(b"not ours")
    spool = Spool(tmp_path, 10**9)
    stats = spool.open()
    assert stats.records == 0 and stats.corrupt_bytes == 100
    assert spool.empty and spool.oldest() is None
    spool.append([record(7)])
    assert replayed(spool) == [record(7)]


def test_a_full_spool_refuses_and_writes_nothing(tmp_path: Path) -> None:
    one = len(record(1).encode()) + 8
    spool = Spool(tmp_path, 2 * one)
    spool.open()
    assert spool.append([record(1)]) and spool.append([record(2)])
    size = _segment(tmp_path).stat().st_size
    assert not spool.append([record(3)])
    assert _segment(tmp_path).stat().st_size == size and spool.stats.records == 2
    segment = spool.oldest()
    assert segment is not None
    spool.discard(segment)
    assert spool.append([record(3)])  # room again after the replay


# -- the pipeline with a spool ------------------------------------------------------------


class Influx(FlakyWriter):
    """Down (every write fails, ping says no) until `up` is called."""

    def __init__(self, refuse: str | None = None) -> None:
        super().__init__(failures=10**9, refuse=refuse)
        self.pings = 0

    def up(self) -> None:
        self.failures = 0

    async def ping(self) -> bool:
        self.pings += 1
        return self.failures == 0


def spooling_pipeline(
    messages: list[object], influx: Influx, tmp_path: Path, max_bytes: int = 10**9
) -> tuple[Pipeline, ListSource, DeadLetterStore, Spool, list[bool]]:
    source = ListSource(messages, influx.events)  # type: ignore[arg-type]
    store = DeadLetterStore(tmp_path / "dl.sqlite3")
    spool = Spool(tmp_path / "spool", max_bytes)
    spool.open()
    full: list[bool] = []
    pipeline = Pipeline(
        source,
        influx,
        store,
        adapters=default_registry(),
        privacy=PRIVACY,
        config=PipelineConfig(batch_size=5, linger_s=0.01, retry_max_s=0.01, spool_probe_s=0.01),
        clock_ns=lambda: NOW_MS * 1_000_000,
        spool=spool,
        probe=influx.ping,
        on_spool_full=full.append,
    )
    return pipeline, source, store, spool, full


async def _until(condition: object, timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.005)


async def test_an_outage_is_spooled_acked_and_replayed_in_order(tmp_path: Path) -> None:
    influx = Influx()
    messages = [msg(i) for i in range(23)]
    pipeline, source, _, spool, _ = spooling_pipeline(messages, influx, tmp_path)
    stop = asyncio.Event()
    task = asyncio.create_task(pipeline.run(stop))
    await _until(lambda: len(source.acked) == 23)  # acked while InfluxDB is still down
    assert influx.lines == [] and spool.stats.records >= 5
    assert pipeline.metrics.spooled == 23 and pipeline.metrics.spool_bytes > 0
    # the order on disk: batch by batch, as the two writers appended them
    shutil.copytree(tmp_path / "spool", tmp_path / "copy")
    on_disk = Spool(tmp_path / "copy", 10**9)
    on_disk.open()
    spooled = [
        device_of_line(line)
        for record in replayed(on_disk)
        for line, source in zip(record.lines, record.sources, strict=True)
        if source is not None
    ]
    assert sorted(spooled) == sorted(f"m-{i}" for i in range(23))
    influx.up()
    await _until(lambda: spool.empty)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert [device_of_line(line) for line in influx.lines] == spooled  # replayed in that order
    assert pipeline.metrics.replayed == 23 and pipeline.metrics.written == 23
    assert pipeline.metrics.spool_bytes == 0 and pipeline.metrics.backlog == 0
    # all 23 were acked on the strength of the spool: before InfluxDB took a single write
    kinds = [what for what, _ in influx.events]
    assert max(i for i, k in enumerate(kinds) if k == "acked") < kinds.index("written")


async def test_lines_refused_on_replay_are_dead_lettered(tmp_path: Path) -> None:
    influx = Influx(refuse="m-6")
    pipeline, source, store, spool, _ = spooling_pipeline(
        [msg(i) for i in range(10)], influx, tmp_path
    )
    stop = asyncio.Event()
    task = asyncio.create_task(pipeline.run(stop))
    await _until(lambda: len(source.acked) == 10)
    influx.up()
    await _until(lambda: spool.empty)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert sorted(device_of_line(line) for line in influx.lines) == sorted(
        f"m-{i}" for i in range(10) if i != 6
    )
    assert store.count("storage_rejected") == 1
    assert pipeline.metrics.rejected["storage_rejected"] == 1


async def test_a_full_spool_stops_acking_and_says_so(tmp_path: Path) -> None:
    influx = Influx()
    messages = [msg(i) for i in range(40)]
    # room for about two batches of five
    pipeline, source, _, spool, full = spooling_pipeline(messages, influx, tmp_path, 2_000)
    stop = asyncio.Event()
    task = asyncio.create_task(pipeline.run(stop))
    await _until(lambda: full == [True])
    await asyncio.sleep(0.2)
    held = len(source.acked)
    assert 0 < held < 40 and pipeline.metrics.spool_full == 1
    copy = tmp_path / "copy"
    shutil.copytree(tmp_path / "spool", copy)
    on_disk = Spool(copy, 10**9)
    on_disk.open()
    # acked exactly the messages whose readings are on disk, nothing else
    assert held == sum(1 for r in replayed(on_disk) for s in r.sources if s is not None)
    influx.up()
    await _until(lambda: len(source.acked) == 40 and spool.empty)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert sorted(device_of_line(line) for line in influx.lines) == sorted(
        f"m-{i}" for i in range(40)
    )
    assert full == [True, False] and pipeline.metrics.spool_full == 0


async def test_a_stop_during_an_outage_spools_and_ends_at_once(tmp_path: Path) -> None:
    influx = Influx()
    pipeline, source, _, spool, _ = spooling_pipeline([msg(i) for i in range(12)], influx, tmp_path)
    stop = asyncio.Event()
    task = asyncio.create_task(pipeline.run(stop))
    await _until(lambda: len(source.acked) == 12)
    stop.set()
    await asyncio.wait_for(task, 2)
    spool.close()
    again = Spool(tmp_path / "spool", 10**9)
    assert again.open().records == spool.stats.records and again.stats.records > 0
