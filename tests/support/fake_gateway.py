"""The gateway's decisions on simulated traffic without I/O, for the simulator's unit tests:
route → decode → time window → registry → privacy → line protocol, at a fixed clock."""

from __future__ import annotations

import hashlib
import itertools
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from types import ModuleType

from adapters import gridgate_json
from adapters.nbiot import PLATFORMS, push_filter
from adapters.registry import topic_matches
from devices.errors import RejectedInput
from devices.info import DeviceInfo
from devices.reading import Reading
from devices.validation import stamp_and_check
from gateway.storage.points import PointEncoder, measurement_of
from privacy.deidentify import Deidentifier
from privacy.keys import KeyRing
from privacy.policy import load_policy
from simulators import formats
from simulators.community import Community
from simulators.schedule import DAY_S, NS

REAL_START_NS = 1_750_000_000 * NS  # a fixed clock keeps every run identical
MAX_PAST_S = 30 * DAY_S
MAX_FUTURE_S = 300


def _routes() -> list[tuple[str, ModuleType]]:
    routes: list[tuple[str, ModuleType]] = []
    for name in formats.ADAPTER_NAMES:
        module = formats.load(name)
        if module is not None and name in PLATFORMS:  # pushed over HTTP, not published
            routes.append((push_filter(name), module))
        elif module is not None and name != "gridgate_json":
            routes.append((module.SUBSCRIPTION, module))
    return [*routes, ("gridgate/v1/+/+/+/+", gridgate_json)]


@dataclass
class FakeGateway:
    """The pipeline's decisions without I/O: route → decode → time window → registry →
    privacy → line protocol. Points are identified as InfluxDB does: series key + time."""

    devices: dict[str, DeviceInfo]
    points: dict[str, set[tuple[str, int]]] = field(default_factory=lambda: defaultdict(set))
    rejected: Counter[str] = field(default_factory=Counter)
    accepted: list[Reading] = field(default_factory=list)
    routes: list[tuple[str, ModuleType]] = field(default_factory=_routes)
    privacy: Deidentifier = field(
        default_factory=lambda: Deidentifier(
            load_policy(), KeyRing([("k1", hashlib.sha256(b"schedule").digest())])
        )
    )
    encoder: PointEncoder = field(default_factory=PointEncoder)
    _tick: itertools.count[int] = field(default_factory=itertools.count)

    @classmethod
    def of(cls, community: Community) -> FakeGateway:
        return cls({d.device_id: d.info() for d in community.devices})

    def receive(self, topic: str, payload: bytes, now_ns: int) -> list[Reading]:
        received_ns = now_ns + next(self._tick)  # every message its own receive time
        module = next((m for f, m in self.routes if topic_matches(f, topic)), None)
        try:
            if module is None:
                raise RejectedInput("no_adapter")
            readings = [self._admit(r, received_ns) for r in module.decode(topic, payload)]
            stored = [self.privacy.apply(r, self.devices.get(r.device_id)) for r in readings]
            for r in stored:
                self.encoder.encode(r)  # raises ValueError for what line protocol cannot hold
        except RejectedInput as exc:
            self.rejected[exc.reason] += 1
            return []
        except ValueError:
            self.rejected["unstorable_value"] += 1
            return []
        for r in stored:
            self.points[measurement_of(r)].add((self.encoder.series_key(r), r.time_ns))
        self.accepted.extend(readings)
        return readings

    def _admit(self, reading: Reading, received_ns: int) -> Reading:
        reading = stamp_and_check(reading, received_ns, received_ns, MAX_PAST_S, MAX_FUTURE_S)
        info = self.devices.get(reading.device_id)
        if info is None:
            raise RejectedInput("unregistered")
        if info.family is not reading.family:
            raise RejectedInput("family_mismatch")
        return reading.with_location(info.location)

    def count(self, measurement: str) -> int:
        return len(self.points.get(measurement, ()))
