"""Devices: the registry list with liveness, one device with its online/offline history from
InfluxDB, and the status summary a screen shows (online rate by family and building, the
offline devices that matter first)."""

from __future__ import annotations

from collections import defaultdict
from typing import Annotated

from fastapi import APIRouter, Path, Query

from devices.families import Family
from devices.places import KEY_SEP, location_key
from gateway.api.deps import Caller, Context, Paging, scoped_place
from gateway.api.problems import not_found
from gateway.api.schemas import (
    DeviceDetailPublic,
    DevicePublic,
    DevicesPublic,
    Instant,
    LivenessPoint,
    OnlineCount,
    StatusPublic,
    at,
    ns_of,
)
from gateway.registry import DeviceFilter, DeviceState
from gateway.storage.influx_v1 import quote_literal
from gateway.storage.points import LIVENESS_MEASUREMENT
from gateway.storage.retention import qualified

router = APIRouter(prefix="/devices", tags=["devices"])

DEVICE_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
# what an operator must see first when devices are offline: people's safety, then elders
FAMILY_PRIORITY = {Family.SAFETY.value: 0, Family.ELDER.value: 1, Family.ACCESS.value: 2,
                   Family.METER.value: 3}  # fmt: skip
OFFLINE_SHOWN = 50


def _public(state: DeviceState) -> DevicePublic:
    info, live = state.info, state.liveness
    return DevicePublic(
        id=info.device_id,
        family=info.family.value,
        vendor=info.vendor,
        adapter=info.adapter,
        place=location_key(info.location) or "",
        power=info.power,
        online=live.online,
        last_seen=at(live.last_seen_ns),
    )


@router.get("", response_model=DevicesPublic)
def list_devices(
    context: Context,
    caller: Caller,
    paging: Paging,
    family: Family | None = None,
    vendor: Annotated[str | None, Query(max_length=64)] = None,
    place: Annotated[str | None, Query(max_length=324)] = None,
    online: bool | None = None,
    seen_before: Instant | None = None,
    seen_after: Instant | None = None,
) -> DevicesPublic:
    """Devices in the caller's places, by id. `online=false` includes never-heard-of devices."""
    where = DeviceFilter(
        places=scoped_place(caller, place),
        family=family.value if family else None,
        vendor=vendor,
        online=online,
        seen_before_ns=ns_of(seen_before) if seen_before else None,
        seen_after_ns=ns_of(seen_after) if seen_after else None,
    )
    found, total = context.registry.find_devices(where, offset=paging.offset, limit=paging.limit)
    return DevicesPublic(data=[_public(d) for d in found], count=total)


@router.get("/status", response_model=StatusPublic)
def status(
    context: Context,
    caller: Caller,
    place: Annotated[str | None, Query(max_length=324)] = None,
) -> StatusPublic:
    """Online rate overall, by family and by building; offline devices, safety and elder
    first, longest silent first."""
    rows = context.registry.device_states(scoped_place(caller, place))
    return summarise(context, rows)


def summarise(
    context: Context, rows: list[tuple[str, str, str, bool | None, int | None]]
) -> StatusPublic:
    by_family: dict[str, list[bool | None]] = defaultdict(list)
    by_building: dict[str, list[bool | None]] = defaultdict(list)
    offline: list[tuple[str, str, str, bool | None, int | None]] = []
    for row in rows:
        _, family, place, online, _ = row
        by_family[family].append(online)
        parts = place.split(KEY_SEP)
        if len(parts) >= 3:
            by_building[KEY_SEP.join(parts[:3])].append(online)
        if online is False:
            offline.append(row)
    offline.sort(key=lambda r: (FAMILY_PRIORITY.get(r[1], 9), r[4] or 0, r[0]))
    first = [r[0] for r in offline[:OFFLINE_SHOWN]]
    places = tuple({r[2] for r in offline[:OFFLINE_SHOWN]})
    found = context.registry.find_devices(
        DeviceFilter(places=places, ids=tuple(first)), limit=OFFLINE_SHOWN
    )[0]
    by_id = {d.info.device_id: d for d in found}
    shown = [by_id[i] for i in first if i in by_id]
    total = _count("", [r[3] for r in rows])
    names = {k: (context.registry.place_names(k) or ("",))[-1] for k in by_building}
    return StatusPublic(
        total=total.total,
        online=total.online,
        offline=total.offline,
        never_seen=total.never_seen,
        online_rate=total.online_rate,
        by_family=[_count(f, v) for f, v in sorted(by_family.items())],
        by_building=[_count(b, v, names.get(b, "")) for b, v in sorted(by_building.items())],
        offline_that_matter=[_public(d) for d in shown],
    )


def _count(key: str, states: list[bool | None], name: str = "") -> OnlineCount:
    online = sum(1 for s in states if s is True)
    offline = sum(1 for s in states if s is False)
    heard = online + offline
    return OnlineCount(
        key=key,
        name=name,
        total=len(states),
        online=online,
        offline=offline,
        never_seen=len(states) - heard,
        online_rate=round(online / heard, 4) if heard else None,
    )


@router.get("/{device_id}", response_model=DeviceDetailPublic)
async def one_device(
    context: Context,
    caller: Caller,
    device_id: Annotated[str, Path(pattern=DEVICE_ID)],
    history: Annotated[int, Query(ge=0, le=500)] = 50,
) -> DeviceDetailPublic:
    """One device, its place's names and its latest online/offline changes (newest first)."""
    detail = context.registry.device_detail(device_id)
    if detail is None:
        raise not_found("no such device")
    place = location_key(detail.info.location) or ""
    if not caller.sees(place):
        raise not_found("no such device")
    points: list[LivenessPoint] = []
    if history:
        measurement = (
            qualified(LIVENESS_MEASUREMENT)
            if context.settings.influx_retention
            else f'"{LIVENESS_MEASUREMENT}"'
        )
        rows = await context.influx.query(
            f"SELECT online, reason FROM {measurement} WHERE device = {quote_literal(device_id)}"
            f" ORDER BY time DESC LIMIT {history}"
        )
        for r in rows:
            when = at(int(r["time"]))
            assert when is not None
            points.append(
                LivenessPoint(at=when, online=bool(r.get("online")), reason=str(r.get("reason")))
            )
    base = _public(DeviceState(detail.info, detail.liveness))
    return DeviceDetailPublic(
        **base.model_dump(),
        place_names=list(detail.place_names),
        gate_approved=detail.gate_approved,
        history=points,
    )
