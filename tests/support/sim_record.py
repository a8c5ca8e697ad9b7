"""What the community simulator sent, recorded from the readings it generated — an oracle for
the points InfluxDB must hold that owes nothing to the adapters.

The simulator's own report predicts points by decoding each message with the product's
adapters (`simulators.formats`): an adapter that silently dropped a reading would shrink the
prediction and the stored points alike, and a comparison of the two would still pass. Here
every message is recorded from the `Reading`s the schedule generated, before they were encoded:
one point per (measurement, device, kind, time), except in formats that carry no clock, where
the gateway stamps the message's readings with one receive time, so each message is one point
per (device, kind) at a time not known here. There is none left: simulated DL/T 645 meters
send their clock (04000101/04000102) along with the data, like concentrators that read it.

Run as ``python -m tests.support.sim_record --record-out FILE <gridgate simulate args>``:
`gridgate simulate` itself (`gateway.cli`), with the schedule's source swapped for one that
records; the record goes to FILE as JSON, the simulator's report to stdout as usual.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devices.families import Channel
from devices.reading import Reading
from simulators import community_cli
from simulators.formats import Encoded, EncodedDevice, Formats
from simulators.schedule import Schedule
from simulators.traffic import SimMessage

# Formats whose messages carry no timestamp (stamped on receipt). DL/T 645 left this set when
# its encoder began sending the meter clock with the data (issue 13).
NO_CLOCK_FORMATS: frozenset[str] = frozenset()
STATUS_MEASUREMENT = "device_status"


class RecordingFormats(Formats):
    """Encodes as usual, and keeps the readings (and format) of the last message encoded."""

    def __init__(self) -> None:
        super().__init__()
        self.taken: list[tuple[str, list[Reading]]] = []

    def encode(self, device: EncodedDevice, reading: Reading, *, adapter: str = "") -> Encoded:
        self.taken.append((adapter or self.format_for(device, reading), [reading]))
        return super().encode(device, reading, adapter=adapter)

    def encode_batch(self, device: EncodedDevice, samples: Sequence[Reading]) -> Encoded:
        if len(samples) > 1:  # one sample goes through `encode`, recorded there
            self.taken.append((device.adapter, list(samples)))
        return super().encode_batch(device, samples)


@dataclass
class SentRecord:
    messages: int = 0  # good messages handed to the publisher
    # (measurement, device) → its points: (kind, time_ns), or (kind, -n) for the n-th message
    # of a format without a clock (one point per message, at its receive time)
    points: dict[tuple[str, str], set[tuple[str, int]]] = field(default_factory=dict)

    def add(self, fmt: str, readings: list[Reading]) -> None:
        self.messages += 1
        for r in readings:
            measurement = STATUS_MEASUREMENT if r.channel is Channel.STATUS else r.family.value
            when = -self.messages if fmt in NO_CLOCK_FORMATS else r.time_ns
            self.points.setdefault((measurement, r.device_id), set()).add((r.kind, when))

    def to_json(self) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "points": [
                [measurement, device, sorted(points)]
                for (measurement, device), points in sorted(self.points.items())
            ],
        }


class RecordingSource(community_cli.ScheduledSource):
    """The simulator's source, recording each message it hands to the publisher."""

    record = SentRecord()  # one simulator run per process

    def __init__(self, schedule: Schedule, tally: community_cli.Tally | None = None) -> None:
        self.formats = RecordingFormats()
        schedule.formats = self.formats  # before iteration starts: every message goes through
        super().__init__(schedule, tally)

    def next_message(self, now_ns: int) -> SimMessage | None:
        self.formats.taken.clear()
        msg = super().next_message(now_ns)
        if msg is not None and msg.family is not None:
            (fmt, readings), *more = self.formats.taken  # one encode per good message
            assert not more, f"{len(more) + 1} encodes for one message"
            self.record.add(fmt, readings)
        return msg


@dataclass(frozen=True)
class Expected:
    """The record as a test reads it."""

    messages: int
    counts: dict[tuple[str, str], int]  # (measurement, device) → points
    timed: dict[str, set[tuple[str, str, int]]]  # measurement → {(device, kind, time_ns)}
    untimed: set[tuple[str, str]]  # (measurement, device) with points of unknown time

    @classmethod
    def load(cls, path: Path) -> Expected:
        data = json.loads(path.read_text())
        counts: dict[tuple[str, str], int] = {}
        timed: dict[str, set[tuple[str, str, int]]] = {}
        untimed: set[tuple[str, str]] = set()
        for measurement, device, points in data["points"]:
            counts[(measurement, device)] = len(points)
            for kind, when in points:
                if when < 0:
                    untimed.add((measurement, device))
                else:
                    timed.setdefault(measurement, set()).add((device, kind, when))
        return cls(data["messages"], counts, timed, untimed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--record-out", type=Path, required=True)
    ours, rest = parser.parse_known_args(argv)
    from gateway import cli

    community_cli.ScheduledSource = RecordingSource  # type: ignore[misc]
    status = cli.main(["simulate", *rest])
    if RecordingSource.record.messages == 0:
        print("sim_record: nothing recorded (did the simulator change?)", file=sys.stderr)
        return 3
    ours.record_out.write_text(json.dumps(RecordingSource.record.to_json()))
    return status


if __name__ == "__main__":
    raise SystemExit(main())
