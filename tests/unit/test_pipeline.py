"""Pipeline logic with an in-memory source and writer: ack only after the hand-off,
dead letters for bad input, retries while storage is down, bisection of refused points."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from adapters.registry import default_registry
from devices.errors import StorageError
from devices.families import Family
from devices.info import DeviceInfo
from devices.location import Location
from devices.places import PlaceLevel
from devices.reading import Reading
from gateway.alerts.model import Condition, Refusal, Severity
from gateway.mqtt.source import Message
from gateway.pipeline.core import AlertSink, Pipeline, PipelineConfig
from gateway.pipeline.deadletter import DeadLetterStore
from gateway.pipeline.liveness import LivenessTracker
from tests.support.pipeline_doubles import (
    NOW_MS,
    PRIVACY,
    FlakyWriter,
    ListSource,
    msg,
)


async def run_pipeline(
    messages: list[Message], writer: FlakyWriter, tmp_path: Path, **cfg: float
) -> tuple[Pipeline, ListSource, DeadLetterStore]:
    source = ListSource(messages, writer.events)  # one event list: writes and acks in order
    store = DeadLetterStore(tmp_path / "dl.sqlite3")
    config = PipelineConfig(
        batch_size=int(cfg.get("batch_size", 10)), linger_s=0.01, retry_max_s=0.01
    )
    pipeline = Pipeline(
        source,
        writer,
        store,
        adapters=default_registry(),
        privacy=PRIVACY,
        config=config,
        clock_ns=lambda: NOW_MS * 1_000_000,
    )
    stop = asyncio.Event()

    async def stop_when_drained() -> None:
        while len(source.acked) < len(messages):
            await asyncio.sleep(0.005)
        stop.set()

    await asyncio.wait_for(asyncio.gather(pipeline.run(stop), stop_when_drained()), 10)
    return pipeline, source, store


async def test_every_message_written_then_acked(tmp_path: Path) -> None:
    writer = FlakyWriter()
    pipeline, source, _ = await run_pipeline([msg(i) for i in range(35)], writer, tmp_path)
    assert len(writer.lines) == 35
    assert sorted(m.token for m in source.acked) == list(range(35))
    assert pipeline.metrics.written == 35 and pipeline.metrics.backlog == 0


async def test_bad_input_is_dead_lettered_and_acked_without_raw_payload(tmp_path: Path) -> None:
    secret = b'{"person_name": "\xe5\xbc\xa0\xe4\xb8\x89", "id_number": "11010519491231002X"'
    messages = [msg(1), msg(2, raw=secret), msg(3, data={"energy_kwh": -1.0})]
    writer = FlakyWriter()
    pipeline, source, store = await run_pipeline(messages, writer, tmp_path)
    assert len(writer.lines) == 1 and len(source.acked) == 3
    assert pipeline.metrics.rejected == {"not_json": 1, "out_of_range": 1}
    assert store.count() == 2 and store.count("not_json") == 1
    # What is on disk, read through SQLite by a second connection: the store is open in WAL
    # mode, so its new rows are still in dl.sqlite3-wal and a raw read of dl.sqlite3 sees none.
    with closing(sqlite3.connect(tmp_path / "dl.sqlite3")) as db:
        rows = db.execute("SELECT * FROM dead_letters").fetchall()
    assert sorted(row[3] for row in rows) == ["not_json", "out_of_range"]  # the rows are there
    stored = "\n".join(str(value) for row in rows for value in row)
    assert "11010519491231002X" not in stored and "张三" not in stored
    assert secret[:20].decode(errors="replace") not in stored
    # And the bytes of every file of the database once closed (WAL checkpointed into the main
    # file), so nothing hides in a column the query above did not think of.
    store.close()
    dumped = b"".join(p.read_bytes() for p in sorted(tmp_path.glob("dl.sqlite3*")))
    assert b"out_of_range" in dumped  # the rows made it into the bytes read here
    assert b"11010519491231002X" not in dumped and "张三".encode() not in dumped
    assert secret[:20] not in dumped


async def test_a_rejected_payload_is_not_kept_until_its_batch_is_acked(tmp_path: Path) -> None:
    """Junk is dead-lettered (a digest) as it is read: only its ack token waits for the batch,
    so 1 MB payloads during an outage do not pile up in memory (issue 14)."""
    junk = b"\x00junk" * 200_000
    messages = [msg(1), msg(2, raw=junk), msg(3)]
    writer = FlakyWriter(failures=2)  # the batch waits for InfluxDB, holding its messages
    _, source, store = await run_pipeline(messages, writer, tmp_path)
    acked = {m.token: m for m in source.acked}
    assert sorted(acked) == [1, 2, 3] and store.count("oversize") == 1
    assert acked[2].payload == b""  # dropped once dead-lettered
    assert acked[1].payload == messages[0].payload  # kept: a refused line needs its digest


async def test_storage_outage_is_retried_and_nothing_acked_before_the_write(
    tmp_path: Path,
) -> None:
    writer = FlakyWriter(failures=3)
    pipeline, source, _ = await run_pipeline([msg(i) for i in range(5)], writer, tmp_path)
    assert pipeline.metrics.write_retries == 3
    assert len(writer.lines) == 5 and len(source.acked) == 5
    # In the order things happened: every ack comes after the successful write of each of
    # its messages' readings (three failed writes first, so an early ack would show).
    assert [what for what, _ in writer.events][:3] == ["failed"] * 3
    written: set[str] = set()
    for what, devices in writer.events:
        if what == "written":
            written.update(devices)
        elif what == "acked":
            assert set(devices) <= written, f"acked before written: {set(devices) - written}"
    assert written == {f"m-{i}" for i in range(5)}


async def test_refused_point_is_isolated_and_the_rest_written(tmp_path: Path) -> None:
    writer = FlakyWriter(refuse="m-6")
    messages = [msg(i) for i in range(10)]
    _, source, store = await run_pipeline(messages, writer, tmp_path)
    assert len(writer.lines) == 9
    assert store.count("storage_rejected") == 1
    assert len(source.acked) == 10


@pytest.mark.parametrize("n", [1, 10, 25])
async def test_batches_respect_batch_size(tmp_path: Path, n: int) -> None:
    writer = FlakyWriter()
    pipeline, source, _ = await run_pipeline(
        [msg(i) for i in range(n)], writer, tmp_path, batch_size=4
    )
    # every message ready at once: the only thing that bounds a batch is batch_size
    assert max(source.ack_calls) <= 4 and max(writer.readings_per_write) <= 4
    assert sum(source.ack_calls) == n and pipeline.metrics.batches == len(source.ack_calls)
    assert len(writer.lines) == n


async def test_stop_during_an_outage_gives_up_unacked_instead_of_hanging(tmp_path: Path) -> None:
    source = ListSource([msg(i) for i in range(5)])
    writer = FlakyWriter(failures=10**9)  # InfluxDB never comes back
    config = PipelineConfig(batch_size=5, linger_s=0.01, retry_max_s=0.01, shutdown_grace_s=0.3)
    pipeline = Pipeline(
        source,
        writer,
        DeadLetterStore(tmp_path / "dl.sqlite3"),
        adapters=default_registry(),
        privacy=PRIVACY,
        config=config,
        clock_ns=lambda: NOW_MS * 1_000_000,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(pipeline.run(stop))
    while writer.calls < 3:
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert source.acked == []  # nothing acknowledged: the broker will redeliver all five
    assert pipeline.metrics.backlog == 5


class DictDirectory:
    def __init__(self, infos: list[DeviceInfo]) -> None:
        self.infos = {i.device_id: i for i in infos}

    def lookup(self, device_id: str) -> DeviceInfo | None:
        return self.infos.get(device_id)


REGISTERED = Location("c1", "g02", "b07", "u1", "0302")


def registered(device_id: str, family: Family = Family.METER) -> DeviceInfo:
    return DeviceInfo(device_id, family, "gridgate_json", "acme", REGISTERED, "", "mains", None)


async def run_with_directory(
    messages: list[Message], directory: DictDirectory, tmp_path: Path
) -> tuple[Pipeline, FlakyWriter, DeadLetterStore]:
    source, writer = ListSource(messages), FlakyWriter()
    store = DeadLetterStore(tmp_path / "dl.sqlite3")
    pipeline = Pipeline(
        source,
        writer,
        store,
        adapters=default_registry(),
        privacy=PRIVACY,
        config=PipelineConfig(batch_size=10, linger_s=0.01),
        directory=directory,
        clock_ns=lambda: NOW_MS * 1_000_000,
    )
    stop = asyncio.Event()

    async def stop_when_drained() -> None:
        while len(source.acked) < len(messages):
            await asyncio.sleep(0.005)
        stop.set()

    await asyncio.wait_for(asyncio.gather(pipeline.run(stop), stop_when_drained()), 10)
    return pipeline, writer, store


async def test_registry_rules_unregistered_spoofed_family_and_location(tmp_path: Path) -> None:
    directory = DictDirectory([registered("m-1"), registered("m-2", Family.SAFETY)])
    pipeline, writer, store = await run_with_directory(
        [msg(1), msg(2), msg(3)], directory, tmp_path
    )
    assert pipeline.metrics.rejected == {"family_mismatch": 1, "unregistered": 1}
    assert store.count("unregistered") == 1 and store.count("family_mismatch") == 1
    [line] = writer.lines
    # the registry's place, not the payload's (which had none)
    assert "building=b07" in line and "grid=g02" in line and "unit=u1" in line
    assert 'room="0302"' in line


async def test_first_sight_and_silence_are_written_as_liveness_points(tmp_path: Path) -> None:
    now = [NOW_MS * 1_000_000]
    tracker = LivenessTracker(now[0], {"mains": 0.05})
    source, writer = ListSource([msg(1)]), FlakyWriter()
    pipeline = Pipeline(
        source,
        writer,
        DeadLetterStore(tmp_path / "dl.sqlite3"),
        adapters=default_registry(),
        privacy=PRIVACY,
        config=PipelineConfig(batch_size=10, linger_s=0.01, liveness_sweep_s=0.02),
        liveness=tracker,
        clock_ns=lambda: now[0],
    )
    seen: list[bool] = []
    pipeline.liveness_listeners.append(lambda event: seen.append(event.online))
    stop = asyncio.Event()
    task = asyncio.create_task(pipeline.run(stop))
    while not writer.liveness:
        await asyncio.sleep(0.01)
    now[0] += 10**9  # one second later: past the 50 ms timeout
    while len(writer.liveness) < 2:
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert seen == [True, False]
    assert "online=true" in writer.liveness[0] and 'reason="traffic"' in writer.liveness[0]
    assert "online=false" in writer.liveness[1] and 'reason="silent"' in writer.liveness[1]
    assert pipeline.metrics.written == 1  # readings only


def test_dead_letter_store_is_bounded(tmp_path: Path) -> None:

    store = DeadLetterStore(tmp_path / "dl.sqlite3", max_rows=5)
    for i in range(12):
        store.add_many([store.letter("t", str(i).encode(), "not_json", "", i)])
    assert store.count() <= 5 + 5  # pruned back to max_rows at every max_rows inserts
    assert store.recent(1)[0].received_ns == 11  # the newest are kept


class HighEnergyRule:
    """A stand-in rule: one condition per meter reading above 5 kWh."""

    def on_reading(
        self, reading: Reading, device: DeviceInfo | None, *, device_clock: bool = True
    ) -> list[Condition]:
        if reading.values.get("energy_kwh", 0) <= 5:
            return []
        return [
            Condition("r", "high", "high", Severity.III, reading.location, PlaceLevel.COMMUNITY,
                      reading.time_ns, device_id=reading.device_id)
        ]  # fmt: skip

    def on_liveness(self, event: object, device: DeviceInfo | None) -> list[Condition]:
        return []


def alerting_pipeline(
    source: ListSource,
    writer: FlakyWriter,
    tmp_path: Path,
    rules: HighEnergyRule,
    sink: AlertSink | None,
    config: PipelineConfig,
) -> Pipeline:
    return Pipeline(
        source,
        writer,
        DeadLetterStore(tmp_path / "dl.sqlite3"),
        adapters=default_registry(),
        privacy=PRIVACY,
        config=config,
        rules=rules,
        alert_sink=sink,
        clock_ns=lambda: NOW_MS * 1_000_000,
    )


async def test_alerts_are_accepted_before_the_batch_is_acked(tmp_path: Path) -> None:
    source, writer = ListSource([msg(i) for i in range(10)]), FlakyWriter()
    accepted: list[Condition] = []
    failures = [2]

    async def sink(conditions: list[Condition]) -> list[Refusal]:
        assert source.acked == []  # nothing acked while the alert is not yet accepted
        if failures[0]:
            failures[0] -= 1
            raise StorageError("registry busy", retryable=True)
        accepted.extend(conditions)
        return []

    pipeline = alerting_pipeline(
        source, writer, tmp_path, HighEnergyRule(), sink,
        PipelineConfig(batch_size=10, linger_s=0.01, retry_max_s=0.01),
    )  # fmt: skip
    stop = asyncio.Event()
    task = asyncio.create_task(pipeline.run(stop))
    while len(source.acked) < 10:
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert sorted(c.device_id for c in accepted) == [f"m-{i}" for i in range(6, 10)]
    assert pipeline.metrics.conditions == 4


class BrokenRule(HighEnergyRule):
    def on_reading(
        self, reading: Reading, device: DeviceInfo | None, *, device_clock: bool = True
    ) -> list[Condition]:
        raise KeyError("a bug in a rule")


async def test_a_failing_rule_does_not_stop_ingestion(tmp_path: Path) -> None:
    source, writer = ListSource([msg(i) for i in range(5)]), FlakyWriter()
    pipeline = alerting_pipeline(
        source, writer, tmp_path, BrokenRule(), None, PipelineConfig(batch_size=10, linger_s=0.01)
    )
    stop = asyncio.Event()
    task = asyncio.create_task(pipeline.run(stop))
    await asyncio.wait_for(_until(lambda: len(source.acked) == 5), 5)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert len(writer.lines) == 5 and pipeline.metrics.rule_errors == 5


async def _until(condition: object) -> None:
    while not condition():  # type: ignore[operator]
        await asyncio.sleep(0.01)


class SevereEnergyRule(HighEnergyRule):
    """Level I above 5 kWh (a gas leak, say), else nothing."""

    def on_reading(
        self, reading: Reading, device: DeviceInfo | None, *, device_clock: bool = True
    ) -> list[Condition]:
        return [
            Condition(c.rule_id, c.key, c.kind, Severity.I, c.location, c.level, c.at_ns,
                      device_id=c.device_id)
            for c in super().on_reading(reading, device)
        ]  # fmt: skip


@pytest.mark.parametrize(
    ("rule", "urgent"), [(SevereEnergyRule(), True), (HighEnergyRule(), False)]
)
async def test_a_level_i_condition_does_not_wait_for_the_linger(
    tmp_path: Path, rule: HighEnergyRule, urgent: bool
) -> None:
    """A batch holding a level-I/II condition goes at once; other batches linger (60 s here)."""
    source, writer = ListSource([msg(9)]), FlakyWriter()
    accepted: list[Condition] = []

    async def sink(conditions: list[Condition]) -> list[Refusal]:
        accepted.extend(conditions)
        return []

    pipeline = alerting_pipeline(
        source, writer, tmp_path, rule, sink, PipelineConfig(batch_size=100, linger_s=60)
    )
    stop = asyncio.Event()
    task = asyncio.create_task(pipeline.run(stop))
    for _ in range(50):  # half a second: far inside the linger
        await asyncio.sleep(0.01)
    assert (len(accepted), len(source.acked), len(writer.lines)) == (
        (1, 1, 1) if urgent else (0, 0, 0)
    )
    stop.set()
    await asyncio.wait_for(task, 5)
    assert len(accepted) == len(source.acked) == 1  # the lingering batch is flushed on stop


async def test_alerts_are_accepted_in_batch_order_whichever_writer_takes_them(
    tmp_path: Path,
) -> None:
    """Two writers, one batch each at a time: the first batch's engine call is slow, yet the
    second batch's conditions (an ending, say) never reach the engine before it."""
    source, writer = ListSource([msg(i) for i in range(6, 10)]), FlakyWriter()
    order: list[str] = []

    async def sink(conditions: list[Condition]) -> list[Refusal]:
        if conditions[0].device_id == "m-6":
            await asyncio.sleep(0.3)
        order.extend(c.device_id for c in conditions)
        return []

    pipeline = alerting_pipeline(
        source, writer, tmp_path, HighEnergyRule(), sink,
        PipelineConfig(batch_size=1, linger_s=0.0, writers=2),
    )  # fmt: skip
    stop = asyncio.Event()
    task = asyncio.create_task(pipeline.run(stop))
    await asyncio.wait_for(_until(lambda: len(source.acked) == 4), 5)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert order == ["m-6", "m-7", "m-8", "m-9"]
