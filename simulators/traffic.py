"""What a fleet puts on the wire, message by message: readings encoded by a vendor format,
mixed with a fixed share of bad messages. Pure (no I/O), so the publisher stays a dumb pipe
and later scenarios and vendor formats plug in here without touching MQTT code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from random import Random
from typing import Protocol

from adapters import gridgate_json
from devices.families import Family
from devices.reading import Reading
from simulators.fleet import NS_PER_MS, SimDevice
from simulators.malformed import bad_message

Encoder = Callable[[Reading], tuple[str, bytes]]


@dataclass(slots=True, frozen=True)
class SimMessage:
    topic: str
    payload: bytes
    family: Family | None  # the device family of a good reading; None for a bad message
    bad_reason: str | None = None  # the rejection a bad message must get (or "valid")
    time_ns: int = 0  # a good reading's timestamp


class MessageSource(Protocol):
    def next_message(self, now_ns: int) -> SimMessage | None:
        """The next message to send; None ends the run."""


class Traffic:
    """Round-robin over the fleet (each device reports every len(fleet)/rate seconds, like a
    real reporting interval), with exactly ⌊n·bad_ratio⌋ bad messages among the first n."""

    def __init__(
        self,
        fleet: Sequence[SimDevice],
        *,
        seed: int = 0,
        bad_ratio: float = 0.0,
        encode: Encoder = gridgate_json.encode,
        community: str | None = None,
    ) -> None:
        if not fleet and bad_ratio < 1:
            raise ValueError("an empty fleet can only send bad messages (bad_ratio=1)")
        if not 0.0 <= bad_ratio <= 1.0:
            raise ValueError("bad_ratio must be within [0, 1]")
        self.fleet = list(fleet)
        self.bad_ratio = bad_ratio
        self.encode = encode
        self.community = community or (fleet[0].location.community if fleet else "sim")
        self._bad_rng = Random(f"gridgate-sim:{seed}:{self.community}:bad")
        self._sent = 0
        self._bad = 0
        self._next_device = 0

    def next_message(self, now_ns: int) -> SimMessage:
        self._sent += 1
        if int(round(self._sent * self.bad_ratio, 9)) > self._bad:  # no float 28.999…
            self._bad += 1
            topic, payload, reason = bad_message(
                self._bad_rng, self.community, now_ms=now_ns // NS_PER_MS
            )
            return SimMessage(topic, payload, None, reason)
        device = self.fleet[self._next_device]
        self._next_device = (self._next_device + 1) % len(self.fleet)
        reading = device.next_reading(now_ns)
        topic, payload = self.encode(reading)
        return SimMessage(topic, payload, reading.family, None, reading.time_ns)
