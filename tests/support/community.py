"""A registered simulated community in the integration tests (registered by
tests.support.registered): the gateway settings that require registration, the simulator run as a
real process, and what its gas detectors send when they leak."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from adapters import gridgate_json
from devices.families import Channel, Family
from devices.reading import Reading
from gateway.settings import Settings
from simulators.community import Community, CommunityDevice, Equipment
from tests.support.gateway_util import settings_for
from tests.support.services import ROOT, Services
from tests.support.sim_record import Expected

S = 1_000_000_000


async def _simulator(services: Services, command: list[str], args: list[str]) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", *command, *args, "--quiet",
        "--host", services.mqtt_host, "--port", str(services.mqtt_port),
        cwd=ROOT, stdout=subprocess.PIPE,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 300)
    assert proc.returncode == 0, out[-2000:]
    report: dict[str, Any] = json.loads(out)
    return report


async def simulate(services: Services, args: list[str]) -> dict[str, Any]:
    """`gridgate simulate --households …` as a real process: its JSON report."""
    return await _simulator(services, ["gateway.cli", "simulate"], args)


async def simulate_recorded(
    services: Services, args: list[str], record: Path
) -> tuple[dict[str, Any], Expected]:
    """The same, with the record of what it sent, taken from the readings it generated
    (tests.support.sim_record), never from the product's adapters."""
    command = ["tests.support.sim_record", "--record-out", str(record)]
    return await _simulator(services, command, args), Expected.load(record)


def community_settings(
    services: Services, code: str, influx_db: str, tmp: Path, registry_url: str, **extra: Any
) -> Settings:
    return settings_for(services, code, influx_db, tmp).model_copy(
        update={"require_registration": True, "registry_url": registry_url, **extra}
    )


def gas_detectors(community: Community) -> list[CommunityDevice]:
    """Gas detectors speaking gridgate JSON, one per unit."""
    by_unit: dict[tuple[str, str], CommunityDevice] = {}
    for d in community.devices:
        if d.equipment is Equipment.GAS_DETECTOR and d.adapter == "gridgate_json":
            by_unit.setdefault((d.location.building, d.location.unit), d)
    return list(by_unit.values())


def leaking(device: CommunityDevice) -> list[tuple[str, bytes]]:
    """60 %LEL for longer than the rule's 10 s minimum duration (device clock)."""
    now = time.time_ns()
    return [
        gridgate_json.encode(
            Reading(
                device_id=device.device_id,
                family=Family.SAFETY,
                channel=Channel.TELEMETRY,
                kind="telemetry",
                time_ns=now - ago * S,
                location=device.location,
                values={"detector": "gas", "gas_lel_pct": 60.0},
            )
        )
        for ago in (30, 15, 1)
    ]
