"""decode → validate → privacy → encode, then the durable hand-off, then the ack (R8).

The consumer task turns messages into line-protocol lines and gathers them into batches, by
size and by linger time. Writer tasks take a batch from a bounded queue, put its rejected
messages in the dead-letter store, write its lines to InfluxDB — retrying as long as the error
is retryable, so nothing is lost while InfluxDB is down — and only then acknowledge the batch's
messages to the broker. Memory is bounded twice over: the broker's in-flight window limits
unacknowledged messages, and the queue limits finished batches waiting for a writer.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from adapters.registry import AdapterRegistry
from devices.errors import RejectedInput, StorageError
from devices.families import Channel
from devices.info import DeviceInfo
from devices.liveness import LivenessEvent
from devices.location import Location
from devices.places import LEVELS, location_parts
from devices.reading import RECEIVE_TIME, Reading
from devices.validation import stamp_and_check
from gateway.alerts.model import Condition, Refusal, Severity
from gateway.mqtt.source import Message, MessageSource
from gateway.pipeline.backoff import Backoff
from gateway.pipeline.deadletter import DeadLetter, DeadLetterStore
from gateway.pipeline.liveness import LivenessTracker
from gateway.pipeline.metrics import GatewayMetrics
from gateway.pipeline.spooling import LineWriter, Spooler
from gateway.registry.identifiers import place_name_problem
from gateway.storage.points import LIVENESS_MEASUREMENT, PointEncoder, measurement_of
from gateway.storage.spool import LineSource, Spool
from privacy.identifiers import IdentifierShape, find_identifier
from privacy.redact import redact_topic

log = logging.getLogger(__name__)
_MAX_VERDICTS = 200_000  # cached id checks: far above a community's devices and places


class DeviceDirectory(Protocol):
    """The registry as the hot path sees it: one dictionary lookup per reading."""

    def lookup(self, device_id: str) -> DeviceInfo | None: ...


class Deidentify(Protocol):
    """The privacy step (privacy.deidentify.Deidentifier): the device tells it whether a
    face gate's installation was approved (consent rule, R3.3)."""

    def apply(self, reading: Reading, device: DeviceInfo | None = None) -> Reading: ...


class RuleEvaluator(Protocol):
    """The alert rules as the pipeline sees them (gateway.alerts.service.TimedRules, which
    wraps gateway.alerts.rules.RuleEngine with the device-clock timeline)."""

    def on_reading(
        self, reading: Reading, device: DeviceInfo | None, *, device_clock: bool = True
    ) -> list[Condition]:
        """`device_clock` is False for a reading stamped with its receive time (no clock)."""
        ...

    def on_liveness(self, event: LivenessEvent, device: DeviceInfo | None) -> list[Condition]: ...


# Persists conditions (alerts accepted) — awaited before the batch that produced them is acked.
# Returns the conditions it refused (not retryable); raises StorageError(retryable=True) while
# its database is down.
AlertSink = Callable[[list[Condition]], Awaitable[Sequence[Refusal]]]
URGENT = Severity.II  # conditions this severe or worse close their batch at once
LivenessListener = Callable[[LivenessEvent], None]


@dataclass(frozen=True)
class PipelineConfig:
    batch_size: int = 5000
    linger_s: float = 0.2
    write_queue: int = 2
    writers: int = 2
    retry_max_s: float = 30.0
    shutdown_grace_s: float = 15.0
    max_past_s: float = 30 * 86400
    max_future_s: float = 300.0
    require_registration: bool = True  # with a directory: unknown devices are dead-lettered
    liveness_sweep_s: float = 5.0
    spool_probe_s: float = 1.0  # while InfluxDB is down: how often the spool's drain asks


@dataclass
class _Lines:
    """Lines bound for one retention policy, each with the message it came from (None for
    lines the gateway made itself, such as liveness changes)."""

    lines: list[str] = field(default_factory=list)
    messages: list[Message | None] = field(default_factory=list)


@dataclass
class _Batch:
    messages: list[Message] = field(default_factory=list)
    by_rp: dict[str | None, _Lines] = field(default_factory=dict)
    dead: list[DeadLetter] = field(default_factory=list)
    conditions: list[Condition] = field(default_factory=list)  # for the alert engine
    # the message each condition came from (None: the gateway's own, such as a liveness sweep)
    condition_sources: list[Message | None] = field(default_factory=list)
    opened: float = field(default_factory=time.monotonic)
    urgent: bool = False  # holds a level I/II condition: written now, not after the linger
    alerts: asyncio.Future[None] | None = None  # its conditions' hand-off, once started

    def add(self, rp: str | None, line: str, msg: Message | None) -> None:
        group = self.by_rp.get(rp)
        if group is None:
            group = self.by_rp[rp] = _Lines()
        group.lines.append(line)
        group.messages.append(msg)

    def add_conditions(self, found: list[Condition], msg: Message | None) -> None:
        self.conditions.extend(found)
        self.condition_sources.extend([msg] * len(found))

    @property
    def empty(self) -> bool:
        return not self.messages and not self.by_rp and not self.conditions


async def _answers() -> bool:
    return True


async def _nothing_to_prepare() -> None:
    return None


class _RateLimitedLog:
    """At most `per_minute` warnings per reason a minute: a flood of bad input must not
    turn into a flood of log lines."""

    def __init__(self, per_minute: int = 10) -> None:
        self.per_minute = per_minute
        self._window = 0
        self._counts: dict[str, int] = {}

    def warn(self, topic: str, reason: str, detail: str) -> None:
        window = int(time.monotonic() // 60)
        if window != self._window:
            self._window, self._counts = window, {}
        n = self._counts.get(reason, 0) + 1
        self._counts[reason] = n
        if n <= self.per_minute:
            log.warning("rejected %s: %s (%s)", redact_topic(topic), reason, detail)
        elif n == self.per_minute + 1:
            log.warning("more %s rejections this minute are counted but not logged", reason)


class Pipeline:
    def __init__(
        self,
        source: MessageSource,
        writer: LineWriter,
        deadletters: DeadLetterStore,
        *,
        adapters: AdapterRegistry,
        privacy: Deidentify,
        config: PipelineConfig | None = None,
        metrics: GatewayMetrics | None = None,
        directory: DeviceDirectory | None = None,
        liveness: LivenessTracker | None = None,
        retention: Mapping[str, str] | None = None,
        rules: RuleEvaluator | None = None,
        alert_sink: AlertSink | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
        spool: Spool | None = None,
        probe: Callable[[], Awaitable[bool]] | None = None,
        prepare: Callable[[], Awaitable[None]] | None = None,
        on_spool_full: Callable[[bool], None] | None = None,
        last_seen_elsewhere: Callable[[list[str]], Mapping[str, int]] | None = None,
    ) -> None:
        """With a `spool`, batches InfluxDB cannot take are spooled and acked; `probe`
        (InfluxDB's ping) and `prepare` (its schema) tell the drain when to replay.
        `last_seen_elsewhere` (blocking; run in a thread) is asked before the sweep takes a
        device offline, when other processes share the traffic."""
        self.source = source
        self.writer = writer
        self.deadletters = deadletters
        self.adapters = adapters
        self.config = config or PipelineConfig()
        self.metrics = metrics or GatewayMetrics()
        self.privacy = privacy
        self.clock_ns = clock_ns
        self.directory = directory
        self.liveness = liveness if liveness is not None else LivenessTracker(clock_ns())
        self.liveness_listeners: list[LivenessListener] = []
        # measurement → retention policy; None: the database's default policy
        self.retention = dict(retention) if retention else None
        self.rules = rules
        self.alert_sink = alert_sink
        self.last_seen_elsewhere = last_seen_elsewhere
        self._liveness_lines: list[str] = []  # changes found by the sweep, for the next batch
        self._sweep_conditions: list[Condition] = []
        self.encoder = PointEncoder()
        self._queue: asyncio.Queue[_Batch | None] = asyncio.Queue(self.config.write_queue)
        self._alerts_tail: asyncio.Future[None] | None = None  # the newest batch's alerts
        self._alert_tasks: set[asyncio.Future[None]] = set()  # started, not yet done
        self._reject_log = _RateLimitedLog()
        # (is a place code, loose check, id or code) → "" (fine) or what it looks like
        self._identifier_verdicts: dict[tuple[bool, bool, str], str] = {}
        self._vetted: dict[str, DeviceInfo] = {}  # registry entries whose ids and codes passed
        self.spooler: Spooler | None = None
        if spool is not None:
            self.spooler = Spooler(
                spool,
                writer,
                probe=probe or _answers,
                prepare=prepare or _nothing_to_prepare,
                refused=self._replay_refused,
                metrics=self.metrics,
                on_full=on_spool_full,
                probe_s=self.config.spool_probe_s,
            )

    # -- per message ----------------------------------------------------------------------

    def process(self, msg: Message, batch: _Batch) -> bool:
        """Turn one message into lines in `batch` (True), or into a dead letter (False).
        Never raises."""
        try:
            decoded = self.adapters.decode(msg.topic, msg.payload)
            device_clock = [r.time_ns != RECEIVE_TIME for r in decoded]
            admitted = [self._admit(r, msg) for r in decoded]
            private = [(self.privacy.apply(r, info), info) for r, info in admitted]
            lines = [(self._rp(r), self.encoder.encode(r)) for r, _ in private]
        except RejectedInput as exc:
            self._reject(msg, batch, exc.reason, exc.detail)
            return False
        except ValueError as exc:  # a value line protocol cannot carry (nan, inf, newline)
            self._reject(msg, batch, "unstorable_value", type(exc).__name__)
            return False
        except Exception as exc:  # an adapter bug must not stop the gateway
            log.error("adapter failed on %s: %s", redact_topic(msg.topic), type(exc).__name__)
            self._reject(msg, batch, "adapter_error", type(exc).__name__)
            return False
        self.metrics.readings += len(lines)
        for rp, line in lines:
            batch.add(rp, line, msg)
        rules = self.rules
        count_community = self.metrics.count_community
        for (reading, info), clocked in zip(private, device_clock, strict=True):
            count_community(reading.location.community)
            if rules is not None:  # rules see de-identified readings only
                try:  # inline, not through _guarded: this runs for every reading
                    found = rules.on_reading(reading, info, device_clock=clocked)
                except Exception as exc:
                    found = self._rule_failed(exc)
                if found:
                    batch.add_conditions(found, msg)
                    batch.urgent = batch.urgent or any(
                        c.active and c.severity <= URGENT for c in found
                    )
            status = reading.kind if reading.channel is Channel.STATUS else None
            event = self.liveness.observe(
                reading.device_id, reading.family, reading.location, msg.received_ns, status
            )
            if event is not None:
                batch.add(self._liveness_rp, self._liveness_changed(event), None)
                if rules is not None:
                    batch.add_conditions(self._guarded(rules.on_liveness, event, info), msg)
        return True

    def _guarded(
        self, rule: Callable[..., list[Condition]], *args: Any, **kw: Any
    ) -> list[Condition]:
        """A bug in a rule must not stop ingestion: the reading is still stored and acked."""
        try:
            return rule(*args, **kw)
        except Exception as exc:
            return self._rule_failed(exc)

    def _rule_failed(self, exc: Exception) -> list[Condition]:
        self.metrics.rule_errors += 1
        if self.metrics.rule_errors <= 10 or self.metrics.rule_errors % 10_000 == 0:
            log.error("alert rule failed (%d so far): %r", self.metrics.rule_errors, exc)
        return []

    def _rp(self, reading: Reading) -> str | None:
        if self.retention is None:
            return None
        return self.retention.get(measurement_of(reading))

    @property
    def _liveness_rp(self) -> str | None:
        return None if self.retention is None else self.retention.get(LIVENESS_MEASUREMENT)

    def _admit(self, reading: Reading, msg: Message) -> tuple[Reading, DeviceInfo | None]:
        """Stamp, check the time, and check the device against the registry, whose location
        replaces whatever the payload claimed — but a device never moves to another
        community by saying so (`community_mismatch`). Ids and place codes the registry did
        not vouch for are checked for identifiers before they can become storage tags."""
        cfg = self.config
        reading = stamp_and_check(
            reading, msg.received_ns, self.clock_ns(), cfg.max_past_s, cfg.max_future_s
        )
        info = None if self.directory is None else self.directory.lookup(reading.device_id)
        if info is None:
            if self.directory is not None and self.config.require_registration:
                raise RejectedInput("unregistered", "device is not in the registry")
            # Nobody vouched for these: an id or code that merely *holds* an identifier-shaped
            # run (a phone behind a stray digit) is refused too — the loose check.
            self._check_identifiers(reading.device_id, "device id", loose=True)
            self._check_location(reading.location, loose=True)
            return reading, None
        if self._vetted.get(reading.device_id) is not info:
            # A registry from before ids and codes were checked: once per registry entry, not
            # per reading (a reload hands out new entries, which are checked again).
            self._check_identifiers(reading.device_id, "device id")
            self._check_location(info.location)
            if len(self._vetted) >= _MAX_VERDICTS:
                self._vetted.clear()
            self._vetted[reading.device_id] = info
        if info.family is not reading.family:
            raise RejectedInput("family_mismatch", f"registered as {info.family.value}")
        if reading.location != info.location:
            claimed = reading.location.community
            if claimed and claimed != info.location.community:
                raise RejectedInput(
                    "community_mismatch", "device is registered in another community"
                )
            reading = reading.with_location(info.location)
        return reading, info

    def _check_identifiers(
        self, text: str, where: str, *, place: bool = False, loose: bool = False
    ) -> None:
        """Refuse an id shaped like an ID number, a phone, a plate or a name, or a place code
        holding one of those or a person's name (R3.2): it would become a tag. `loose` also
        refuses text that merely holds such a run (for what the registry did not vouch for;
        a registered 12-digit meter address may hold one by chance). Verdicts are cached: ids
        repeat, and the check is a regex scan."""
        key = (place, loose, text)
        verdict = self._identifier_verdicts.get(key)
        if verdict is None:
            if len(self._identifier_verdicts) >= _MAX_VERDICTS:
                self._identifier_verdicts.clear()
            shape = find_identifier(text, loose=loose)
            if place:
                personal = place_name_problem(text) or (
                    loose and shape is not None and shape is not IdentifierShape.NAME
                )
                verdict = "personal data" if personal else ""
            else:
                verdict = "" if shape is None else f"a {shape.value}"
            self._identifier_verdicts[key] = verdict
        if verdict:
            raise RejectedInput("identifier_shaped", f"{where} looks like {verdict}")

    def _check_location(self, location: Location, *, loose: bool = False) -> None:
        """Every code of a place: Chinese place codes (3号楼) are places, not names; a
        person's name or a number is not."""
        for level, code in zip(LEVELS, location_parts(location), strict=True):
            if code:
                self._check_identifiers(code, f"loc.{level.value}", place=True, loose=loose)

    def _liveness_changed(self, event: LivenessEvent) -> str:
        for listener in self.liveness_listeners:
            listener(event)
        self.metrics.liveness_changes += 1
        return self.encoder.encode_liveness(event)

    def _reject(self, msg: Message, batch: _Batch, reason: str, detail: str) -> None:
        self._dead_letter(msg, batch.dead, reason, detail)

    def _dead_letter(self, msg: Message, dead: list[DeadLetter], reason: str, detail: str) -> None:
        """Count it, log it (rate-limited, topic redacted), and queue its dead letter, which is
        committed before the batch is acked."""
        self.metrics.rejected[reason] += 1
        self._reject_log.warn(msg.topic, reason, detail)
        letter = self.deadletters.letter(msg.topic, msg.payload, reason, detail, msg.received_ns)
        dead.append(letter)

    # -- tasks ----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set, then flush what was received and return.

        If storage is still down after `shutdown_grace_s`, the remaining batches are given up
        unacknowledged: the broker keeps them in the persistent session and redelivers them on
        the next start, so stopping never loses a reading and never hangs — not even when the
        write queue is full behind an InfluxDB outage (the consumer stops waiting for room
        when `stop` is set).
        """
        async with asyncio.TaskGroup() as tg:
            writers = [
                tg.create_task(self._write_loop(), name=f"writer-{i}")
                for i in range(self.config.writers)
            ]
            sweeper = tg.create_task(self._sweep_loop(stop), name="liveness-sweep")
            drain = None
            if self.spooler is not None:
                drain = tg.create_task(self.spooler.run(stop), name="spool-drain")
            last = await self._consume(stop)
            sweeper.cancel()
            try:
                async with asyncio.timeout(self.config.shutdown_grace_s):
                    if last is not None:
                        await self._queue.put(last)
                    for _ in writers:
                        await self._queue.put(None)
                    await asyncio.wait(writers)
            except TimeoutError:
                log.warning(
                    "stopping with %d messages unwritten; the broker redelivers them on restart",
                    self.metrics.backlog,
                )
                for task in [*writers, *self._alert_tasks]:  # unacked: redelivered, raised once
                    task.cancel()
            if drain is not None:  # a segment cut short is replayed whole on the next start
                drain.cancel()

    async def _sweep_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(self.config.liveness_sweep_s)
            if self.last_seen_elsewhere is not None:
                silent = self.liveness.silent(self.clock_ns())
                if silent:
                    elsewhere = await asyncio.to_thread(self.last_seen_elsewhere, silent)
                    self.liveness.seen_elsewhere(elsewhere)
            for event in self.liveness.sweep(self.clock_ns()):
                self._liveness_lines.append(self._liveness_changed(event))
                if self.rules is not None:
                    info = self.directory.lookup(event.device_id) if self.directory else None
                    self._sweep_conditions.extend(
                        self._guarded(self.rules.on_liveness, event, info)
                    )

    async def _consume(self, stop: asyncio.Event) -> _Batch | None:
        """Fill batches until `stop`; returns the batch still open (or one that found no room
        in the write queue before `stop`), for `run` to flush within the grace time."""
        cfg = self.config
        batch = _Batch()
        while not stop.is_set():
            if batch.messages:
                timeout = max(0.0, batch.opened + cfg.linger_s - time.monotonic())
            else:
                timeout = 0.25  # idle: wake now and then to notice `stop`
            messages = await self.source.next_batch(cfg.batch_size - len(batch.messages), timeout)
            if self._sweep_conditions:
                if batch.empty:
                    batch.opened = time.monotonic()
                batch.add_conditions(self._sweep_conditions, None)
                self._sweep_conditions = []
            if self._liveness_lines:
                if batch.empty:
                    batch.opened = time.monotonic()
                for line in self._liveness_lines:
                    batch.add(self._liveness_rp, line, None)
                self._liveness_lines = []
            if messages:
                if not batch.messages:
                    batch.opened = time.monotonic()
                self.metrics.received += len(messages)
                for msg in messages:
                    # a rejected message's dead letter holds all it needs (a digest): only
                    # its ack token stays, not the payload — junk must not pile up in memory
                    # until its batch is acknowledged
                    kept = self.process(msg, batch)
                    batch.messages.append(msg if kept else replace(msg, payload=b""))
            if not batch.empty and (
                len(batch.messages) >= cfg.batch_size
                or batch.urgent
                or time.monotonic() >= batch.opened + cfg.linger_s
            ):
                self._start_alerts(batch)
                if not await self._put_unless_stopped(batch, stop):
                    return batch
                batch = _Batch()
            elif not messages:
                await asyncio.sleep(0)  # let writers run when the source returns at once
        return None if batch.empty else batch

    async def _put_unless_stopped(self, batch: _Batch, stop: asyncio.Event) -> bool:
        """Queue `batch`, waiting for room while the writers are busy (back-pressure: no more
        is read from the broker meanwhile); False if `stop` came first."""
        if not self._queue.full():
            self._queue.put_nowait(batch)
            return True
        put = asyncio.ensure_future(self._queue.put(batch))
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait((put, stopped), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            if not put.done():
                put.cancel()
        return put.done() and not put.cancelled()

    def _start_alerts(self, batch: _Batch) -> None:
        """Hand the batch's conditions to the alert engine as soon as the batch closes, not
        when a writer takes it: with the write queue full, a level-I alert waited behind
        InfluxDB writes of earlier batches. Alerts are accepted in the order the batches
        were made: an ending must not reach the engine before the raise it ends."""
        if batch.alerts is not None:
            return
        after, done = self._alerts_tail, asyncio.get_running_loop().create_future()
        self._alerts_tail = done
        batch.alerts = asyncio.ensure_future(self._alerts_in_order(batch, after, done))
        self._alert_tasks.add(batch.alerts)
        batch.alerts.add_done_callback(self._alert_tasks.discard)

    async def _write_loop(self) -> None:
        while (batch := await self._queue.get()) is not None:
            await self._hand_off(batch)

    async def _hand_off(self, batch: _Batch) -> None:
        # One write per retention policy and the alerts, all at once: they are independent,
        # and an alert should not wait for InfluxDB. The acks wait for all of them.
        self._start_alerts(batch)
        assert batch.alerts is not None
        steps: list[Awaitable[None]] = [
            self._write_with_retry(rp, group.lines, group.messages, batch.dead)
            for rp, group in batch.by_rp.items()
        ]
        steps.append(batch.alerts)
        await asyncio.gather(*steps)
        if batch.dead:
            await self._store_dead_letters(batch.dead)
        self.source.ack(batch.messages)
        self.metrics.acked += len(batch.messages)
        self.metrics.batches += 1

    async def _alerts_in_order(
        self, batch: _Batch, after: asyncio.Future[None] | None, done: asyncio.Future[None] | None
    ) -> None:
        """The batch's alerts once the previous batch's are accepted; then let the next go
        (also when cancelled at shutdown, so the chain never stalls)."""
        try:
            if after is not None:
                await after
            if batch.conditions and self.alert_sink is not None:
                await self._accept_alerts(batch)
        finally:
            if done is not None and not done.done():
                done.set_result(None)

    async def _accept_alerts(self, batch: _Batch) -> None:
        """Alerts are accepted (persisted) before the readings behind them are acked: a
        crash between the two redelivers the readings, never loses the alert.

        Only the alert store being down is retried. A condition it refuses (a record it will
        not take) is counted and its message dead-lettered with the reason — its reading is
        stored all the same — and the rest of the batch goes on (ARCHITECTURE: retryable or
        not, decided at each hand-off)."""
        assert self.alert_sink is not None
        backoff = self._backoff()
        while True:
            try:
                refused = await self.alert_sink(batch.conditions)
                break
            except StorageError as exc:
                if not exc.retryable:
                    refused = self._refuse_all(batch.conditions, type(exc).__name__)
                    break
                log.error("alert store unavailable, retrying in %.1f s: %s", backoff.delay, exc)
                await backoff.wait()
            except Exception as exc:  # a bug in the sink: the same as a refusal, never a jam
                log.error("alert sink failed: %s", type(exc).__name__)
                refused = self._refuse_all(batch.conditions, type(exc).__name__)
                break
        self.metrics.conditions += len(batch.conditions) - len(refused)
        self.metrics.alerts_refused += len(refused)
        dead_for: set[int] = set()
        for refusal in refused:
            msg = batch.condition_sources[refusal.index]
            if msg is None or id(msg) in dead_for:  # one dead letter per message
                continue
            dead_for.add(id(msg))
            self._dead_letter(msg, batch.dead, "alert_refused", refusal.reason)

    @staticmethod
    def _refuse_all(conditions: list[Condition], reason: str) -> list[Refusal]:
        return [Refusal(i, reason) for i in range(len(conditions))]

    def _backoff(self) -> Backoff:
        return Backoff(max_s=self.config.retry_max_s)

    async def _store_dead_letters(self, dead: list[DeadLetter]) -> None:
        backoff = self._backoff()
        while True:
            try:
                await asyncio.to_thread(self.deadletters.add_many, dead)
                self.metrics.dead_lettered += len(dead)
                return
            except sqlite3.Error as exc:  # disk full, locked: keep the messages unacked
                log.error("dead-letter store failed, retrying in %.1f s: %s", backoff.delay, exc)
                await backoff.wait()

    async def _write_with_retry(
        self,
        rp: str | None,
        lines: list[str],
        line_messages: list[Message | None],
        dead: list[DeadLetter],
    ) -> None:
        """Write until it succeeds or is spooled; lines InfluxDB refuses outright become dead
        letters. While InfluxDB is down a spooled write counts as durable; a full spool
        leaves the batch here, retried (the broker keeps what is behind it)."""
        backoff = self._backoff()
        spooler = self.spooler
        while True:
            if spooler is not None and spooler.down and await self._spool(rp, lines, line_messages):
                return
            try:
                started = time.perf_counter()
                await self.writer.write(lines, rp=rp)
                self.metrics.write_seconds.observe(time.perf_counter() - started)
                # readings only: liveness points (message None) are the gateway's own
                self.metrics.written += len(lines) - line_messages.count(None)
                return
            except StorageError as exc:
                if not exc.retryable:
                    await self._isolate_refused(rp, lines, line_messages, dead, exc)
                    return
                self.metrics.write_retries += 1
                if spooler is not None:
                    spooler.mark_down()
                    if await self._spool(rp, lines, line_messages):
                        return
                log.warning("InfluxDB write failed, retrying in %.1f s: %s", backoff.delay, exc)
                # the drain's probe wakes this as soon as InfluxDB answers again
                await backoff.wait(None if spooler is None else spooler.up)

    async def _spool(
        self, rp: str | None, lines: list[str], line_messages: list[Message | None]
    ) -> bool:
        assert self.spooler is not None
        sources = [None if m is None else LineSource(m.topic, m.received_ns) for m in line_messages]
        return await self.spooler.take(rp, lines, sources)

    async def _replay_refused(self, refused: list[tuple[LineSource, str]], detail: str) -> None:
        """Spooled lines InfluxDB refuses on replay: dead-lettered like any refused point (the
        letter keeps a keyed digest of the line, which is already de-identified)."""
        letters = []
        for source, line in refused:
            self.metrics.rejected["storage_rejected"] += 1
            self._reject_log.warn(source.topic, "storage_rejected", detail)
            letters.append(
                self.deadletters.letter(
                    source.topic, line.encode(), "storage_rejected", detail, source.received_ns
                )
            )
        await self._store_dead_letters(letters)

    async def _isolate_refused(
        self,
        rp: str | None,
        lines: list[str],
        line_messages: list[Message | None],
        dead: list[DeadLetter],
        exc: StorageError,
    ) -> None:
        """Bisect a refused batch: rewriting good points is harmless (same series and time)."""
        if len(lines) == 1:
            msg = line_messages[0]
            if msg is None:  # a line of the gateway's own: a bug to see, not a device's fault
                log.error("InfluxDB refused a gateway-made point: %s", exc)
                return
            # InfluxDB's error text can quote the line, so it is not kept; the log has it.
            log.debug("InfluxDB refused a point from %s: %s", redact_topic(msg.topic), exc)
            self._dead_letter(msg, dead, "storage_rejected", "InfluxDB refused the point")
            return
        mid = len(lines) // 2
        await self._write_with_retry(rp, lines[:mid], line_messages[:mid], dead)
        await self._write_with_retry(rp, lines[mid:], line_messages[mid:], dead)
