"""A device's readings in its vendor's wire format, and what InfluxDB will hold for them.

The report must predict InfluxDB, not count MQTT messages: one message can hold several
readings (a DL/T 645 concentrator forwards one frame per data item, a gas detector's alarm
also carries its measurements, a wristband uploads a batch of samples) and InfluxDB keeps one
point per (series, timestamp), so readings of one message that share their series and time
merge into one point. A DL/T 645 meter reply is one frame per field, and all of a meter's
frames in a message share one time (the meter clock sent along with them, or the receive
time without it), so a four-frame meter reply is four lines but ONE point.

Counting therefore decodes with the adapter's own `decode` (exactly what the gateway does),
once per message *shape* (format, channel, kind, field names, batch size): the count depends
only on the shape, and decoding every message would double the simulator's CPU cost.
`Formats(verify=True)` decodes every message and checks that claim (tests use it).

Adapter modules are imported lazily: one that is not installed yet is reported missing and
the community falls back to ``gridgate_json`` for its devices.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import cache
from types import ModuleType
from typing import Any, Protocol

import orjson

from adapters.base import RECEIVE_TIME
from devices.families import Channel
from devices.reading import Reading

ADAPTER_NAMES = (
    "gridgate_json",
    "dlt645",
    "cjt188",
    "vendor_meter",
    "vendor_gas",
    "vendor_wearable",
    "vendor_access",
    "onenet",
    "ctwing",
    "hikvision_isapi",
)
# Only the gateway's own format has a status channel; devices in other formats send their
# liveness heartbeats and last-will there (as a vendor platform's bridge does).
STATUS_FORMAT = "gridgate_json"
STATUS_MEASUREMENT = "device_status"  # gateway.storage.points: status readings' measurement
# Canonical fields each binary protocol can carry; its encoder refuses any other.
_CJT188 = frozenset({"meter_type", "water_m3", "settlement_m3", "valve", "battery_low"})
_CARRIES: dict[str, frozenset[str]] = {
    "hikvision_isapi": frozenset(
        {"method", "direction", "granted", "door", "person_name", "employee_no", "card_no", "plate"}
    ),  # what a terminal's event says; no ID number, phone or face feature
    "dlt645": frozenset({"meter_type", "energy_kwh", "voltage_v", "current_a", "power_kw"}),
    "cjt188": _CJT188,
    "ctwing": _CJT188,  # its water meters send CJ/T 188 replies as APPdata
    "onenet": frozenset(
        [
            "detector",
            "smoke_alarm",
            "smoke_density_db_m",
            "temperature_c",
            "battery_pct",
            "tamper",
            "self_test_ok",
            "fault_code",
        ]
    ),
}
_RECEIVED = -1  # stands for "the message's receive time" when grouping points


class EncodedDevice(Protocol):
    """What encoding needs from a device (`community.CommunityDevice` has it)."""

    @property
    def device_id(self) -> str: ...
    @property
    def adapter(self) -> str: ...
    @property
    def concentrator(self) -> str: ...
    @property
    def di_order(self) -> str: ...


@cache
def load(name: str) -> ModuleType | None:
    """The adapter module `adapters.<name>` if it is installed and can encode."""
    if name not in ADAPTER_NAMES:
        return None
    try:
        module = importlib.import_module(f"adapters.{name}")
    except ImportError:
        return None
    if not callable(getattr(module, "encode", None)) or not callable(
        getattr(module, "decode", None)
    ):
        return None
    return module


def available_adapters() -> frozenset[str]:
    return frozenset(n for n in ADAPTER_NAMES if load(n) is not None)


def missing_adapters() -> list[str]:
    return [n for n in ADAPTER_NAMES if load(n) is None]


def decode(adapter: str, topic: str, payload: bytes) -> list[Reading]:
    """Decode with the named adapter's default configuration (what the gateway routes to)."""
    module = load(adapter)
    if module is None:
        raise LookupError(f"adapter {adapter} is not installed")
    readings: list[Reading] = module.decode(topic, payload)
    return readings


@dataclass(slots=True, frozen=True)
class Encoded:
    topic: str
    payload: bytes
    adapter: str  # the format actually used (a heartbeat may go out in gridgate_json)
    points: int  # distinct InfluxDB points in the family's measurement
    status_points: int  # distinct points in `device_status`
    lines: int  # readings the gateway decodes (= lines it writes)


def count_points(readings: Sequence[Reading]) -> tuple[int, int, int]:
    """(family points, status points, lines) of one message's readings, after InfluxDB has
    merged readings of the same series and timestamp."""
    family: set[tuple[str, str, int]] = set()
    status: set[tuple[str, str, int]] = set()
    for r in readings:
        when = _RECEIVED if r.time_ns == RECEIVE_TIME else r.time_ns
        (status if r.channel is Channel.STATUS else family).add((r.device_id, r.kind, when))
    return len(family), len(status), len(readings)


Shape = tuple[Any, ...]


class Formats:
    """Encodes readings per device format and predicts the points each message becomes."""

    def __init__(self, *, verify: bool = False) -> None:
        self.verify = verify
        self._counts: dict[Shape, tuple[int, int, int]] = {}
        self._encoders: dict[str, Callable[..., tuple[str, bytes]]] = {}

    def _encoder(self, adapter: str) -> Callable[..., tuple[str, bytes]]:
        fn = self._encoders.get(adapter)
        if fn is None:
            module = load(adapter)
            if module is None:
                raise LookupError(f"adapter {adapter} is not installed")
            fn = module.encode
            self._encoders[adapter] = fn
        return fn

    def format_for(self, device: EncodedDevice, reading: Reading) -> str:
        if reading.channel is Channel.STATUS and device.adapter != STATUS_FORMAT:
            return STATUS_FORMAT
        return device.adapter

    def encode(self, device: EncodedDevice, reading: Reading, *, adapter: str = "") -> Encoded:
        """One reading as the device sends it (`adapter` forces another format)."""
        adapter = adapter or self.format_for(device, reading)
        carries = _CARRIES.get(adapter)
        if carries is not None and not carries.issuperset(reading.values):
            reading = replace(
                reading, values={k: v for k, v in reading.values.items() if k in carries}
            )
        encode = self._encoder(adapter)
        if adapter == "dlt645":
            topic, payload = encode(reading, concentrator=device.concentrator or "conc01")
        elif adapter == "cjt188":
            topic, payload = encode(
                reading,
                concentrator=device.concentrator or "conc01",
                di_order=device.di_order or "2004",
            )
        else:
            topic, payload = encode(reading)
        shape = (adapter, reading.channel, reading.kind, tuple(reading.values))
        return self._finish(adapter, topic, payload, shape)

    def encode_batch(self, device: EncodedDevice, samples: Sequence[Reading]) -> Encoded:
        """Telemetry samples in one upload: a batching wristband's `samples` list; formats
        without batches must send them one by one (ValueError)."""
        if len(samples) == 1:
            return self.encode(device, samples[0])
        if device.adapter != "vendor_wearable":
            raise ValueError(f"{device.adapter} sends one reading per message")
        encode = self._encoder("vendor_wearable")
        merged: list[Any] = []
        body: dict[str, Any] = {}
        topic = ""
        for sample in samples:  # the band's own encoder per sample, then one upload
            topic, payload = encode(sample)
            body = orjson.loads(payload)
            merged.extend(body["samples"])
        body["samples"] = merged  # position and battery ride on the latest sample
        shape = ("vendor_wearable", tuple(tuple(s.values) for s in samples))
        return self._finish("vendor_wearable", topic, orjson.dumps(body), shape)

    def _finish(self, adapter: str, topic: str, payload: bytes, shape: Shape) -> Encoded:
        counts = self._counts.get(shape)
        if counts is None or self.verify:
            actual = count_points(decode(adapter, topic, payload))
            if counts is not None and counts != actual:
                raise AssertionError(f"{adapter}: point count depends on more than the shape")
            counts = actual
            self._counts[shape] = counts
        points, status_points, lines = counts
        return Encoded(topic, payload, adapter, points, status_points, lines)
