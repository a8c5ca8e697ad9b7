"""Readings of every family for integration tests, and the points InfluxDB must hold for them."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from devices.families import Channel, Family
from devices.location import Location
from devices.reading import Reading
from gateway.storage.influx_v1 import InfluxV1Client
from gateway.storage.retention import qualified
from simulators import formats
from simulators.community import Community
from tests.support.leak_search import IDS, NAMES, PHONES, PLATES

FAMILY_SAMPLES: dict[Family, tuple[Channel, str, dict[str, Any]]] = {
    Family.METER: (Channel.TELEMETRY, "telemetry", {"meter_type": "electricity", "energy_kwh": 0.0, "voltage_v": 220.1, "power_kw": -1.2345}),
    Family.SAFETY: (Channel.TELEMETRY, "telemetry", {"detector": "gas", "gas_lel_pct": 0.0, "co_ppm": 1.5, "battery_pct": 90.0, "tamper": False}),
    Family.ELDER: (Channel.TELEMETRY, "telemetry", {"heart_rate_bpm": 0.0, "spo2_pct": 97.0, "steps": 10, "worn": True}),
    Family.ACCESS: (Channel.EVENT, "entry_granted", {"method": "card", "direction": "in", "granted": True, "door": "东门, 1=\"A\""}),
}  # fmt: skip
VARYING = {Family.METER: "energy_kwh", Family.SAFETY: "gas_lel_pct", Family.ELDER: "heart_rate_bpm", Family.ACCESS: "held_open_s"}  # fmt: skip


def family_readings(community: str, n: int, base_ms: int) -> list[Reading]:
    out = []
    for family, (channel, kind, values) in FAMILY_SAMPLES.items():
        for i in range(n):
            vals = dict(values)
            vals[VARYING[family]] = float(i % 97) + 0.25
            out.append(
                Reading(
                    device_id=f"{family.value[0]}-{i % 25:03d}",
                    family=family,
                    channel=channel,
                    kind=kind,
                    time_ns=(base_ms + i) * 1_000_000,
                    location=Location(
                        community, "g01", f"{i % 5 + 1}号楼", f"{i % 3 + 1}单元", f"{i:04d}"
                    ),
                    values=vals,
                )
            )
    return out


Point = tuple[str, str, int, float]  # family, device, time (ns), the value that varies


def expected_points(readings: list[Reading]) -> set[Point]:
    return {(r.family.value, r.device_id, r.time_ns, r.values[VARYING[r.family]]) for r in readings}


async def stored_points(influx: InfluxV1Client) -> set[Point]:
    """Every stored point of every family as (family, device, time, varying value); a failed
    query raises (it must not read as "nothing stored yet")."""
    out: set[Point] = set()
    for family in Family:
        field = VARYING[family]
        rows = await influx.query(
            f'SELECT "{field}" FROM {qualified(family.value)} GROUP BY "device"'
        )
        out.update((family.value, row["device"], row["time"], row[field]) for row in rows)
    return out


def _encoder(adapter: str) -> Callable[[Reading], tuple[str, bytes]]:
    module = formats.load(adapter)
    assert module is not None, f"adapter {adapter} is not installed"
    encode: Callable[[Reading], tuple[str, bytes]] = module.encode
    return encode


def personal_entries(community: Community) -> list[tuple[str, bytes]]:
    """Entries at the community's first gates, each in its own format (the formats are drawn
    per device id, so a small community may have no gate of a given format), carrying the leak
    tests' planted name, ID number, phone, card and plate: the screen may show entry counts,
    never these."""
    gates = [d for d in community.devices if d.family is Family.ACCESS][:3]
    assert gates, "the community has no access gate"
    now = time.time_ns()
    out = []
    for i, gate in enumerate(gates):
        for j in range(4):
            out.append(_encoder(gate.adapter)(Reading(
                device_id=gate.device_id, family=Family.ACCESS, channel=Channel.EVENT,
                kind="entry_granted", time_ns=now - (i * 4 + j) * 1_000_000_000,
                location=gate.location,
                values={"method": "card", "direction": "in", "granted": True,
                        "person_name": NAMES[j % len(NAMES)], "id_number": IDS[j % len(IDS)],
                        "phone": PHONES[j % len(PHONES)], "card_no": PHONES[(j + 1) % len(PHONES)],
                        "plate": PLATES[j % len(PLATES)]},
            )))  # fmt: skip
    return out
