"""An in-memory message source and InfluxDB writer for the pipeline's unit tests: what was
written, failed and acked, in the order it happened."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Sequence

from devices.errors import StorageError
from gateway.mqtt.source import Message
from privacy.deidentify import Deidentifier
from privacy.keys import KeyRing
from privacy.policy import load_policy

NOW_MS = 1_732_190_000_000
PRIVACY = Deidentifier(load_policy(), KeyRing([("k1", hashlib.sha256(b"unit tests").digest())]))


# (what, device ids): "written" and "failed" from the writer, "acked" from the source, in the
# order they happened — for checks of order, not only of final totals.
Events = list[tuple[str, list[str]]]


class ListSource:
    def __init__(self, messages: list[Message], events: Events | None = None) -> None:
        self.pending = list(messages)
        self.acked: list[Message] = []
        self.ack_calls: list[int] = []  # messages per ack() call: one call per batch
        self.connected = True
        self.events: Events = [] if events is None else events

    async def next_batch(self, max_messages: int, timeout_s: float) -> list[Message]:
        out, self.pending = self.pending[:max_messages], self.pending[max_messages:]
        if not out:
            await asyncio.sleep(min(timeout_s, 0.01))
        return out

    def ack(self, messages: Sequence[Message]) -> None:
        self.acked.extend(messages)
        self.ack_calls.append(len(messages))
        self.events.append(("acked", [device_of_topic(m.topic) for m in messages]))


def device_of_topic(topic: str) -> str:
    return topic.split("/")[4]  # gridgate/v1/<community>/<family>/<device>/<channel>


def device_of_line(line: str) -> str:
    return line.split(",device=", 1)[1].split(",", 1)[0].split(" ", 1)[0]


class FlakyWriter:
    """Fails `failures` times (retryable), refuses lines containing `refuse`, else stores."""

    def __init__(
        self, failures: int = 0, refuse: str | None = None, events: Events | None = None
    ) -> None:
        self.failures = failures
        self.refuse = refuse
        self.lines: list[str] = []
        self.liveness: list[str] = []
        self.calls = 0
        self.readings_per_write: list[int] = []  # reading lines of each successful write
        self.events: Events = [] if events is None else events

    async def write(self, lines: Sequence[str], *, rp: str | None = None) -> None:
        self.calls += 1
        readings = [line for line in lines if not line.startswith("liveness,")]
        if self.failures:
            self.failures -= 1
            self.events.append(("failed", [device_of_line(line) for line in readings]))
            raise StorageError("connection refused", retryable=True)
        if self.refuse and any(self.refuse in line for line in lines):
            self.events.append(("failed", [device_of_line(line) for line in readings]))
            raise StorageError("partial write: field type conflict", retryable=False)
        self.lines.extend(readings)
        self.liveness.extend(line for line in lines if line.startswith("liveness,"))
        self.readings_per_write.append(len(readings))
        self.events.append(("written", [device_of_line(line) for line in readings]))


def msg(i: int, data: dict[str, object] | None = None, raw: bytes | None = None) -> Message:
    body = (
        raw
        or json.dumps(
            {"device_id": f"m-{i}", "ts": NOW_MS + i, "data": data or {"energy_kwh": float(i)}}
        ).encode()
    )
    return Message(f"gridgate/v1/c1/meter/m-{i}/telemetry", body, 0, token=i)
