"""The gateway's own JSON format, one message per reading, for all four families.

Topic:   gridgate/v1/{community}/{family}/{device_id}/{telemetry|event|status}
Payload: {"v": 1, "device_id": "…", "ts": <epoch ms> | "<ISO 8601>", "kind": "…",
          "loc": {"grid": "…", "building": "…", "unit": "…", "room": "…"},   (optional)
          "data": {<the family's canonical fields, see devices.models>}}

`kind` is "telemetry" on the telemetry channel (may be omitted), an event kind of the family
on the event channel, and online/offline/heartbeat on the status channel. An ISO time without
an offset is China Standard Time (UTC+8), as Chinese devices send it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Annotated, Any, Generic, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from adapters.base import check_size, rejection_from
from devices.errors import RejectedInput
from devices.families import EVENT_KINDS, TELEMETRY_KIND, Channel, Family, StatusKind
from devices.location import Location
from devices.models import FAMILY_DATA, FamilyData, StatusData
from devices.reading import SCHEMA_VERSION, Reading
from devices.topics import ID_PATTERN, TopicParts, build_topic, parse_topic

name = "gridgate_json"

CHINA_STANDARD_TIME = timezone(timedelta(hours=8))
# Sanity bounds only; the pipeline applies the tighter clock-relative window.
_MIN_MS = 946_684_800_000  # 2000-01-01
_MAX_MS = 4_102_444_800_000  # 2100-01-01
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

PlaceName = Annotated[
    str, StringConstraints(max_length=32, strip_whitespace=True, pattern=r"^[^\x00-\x1f\x7f]*$")
]
D = TypeVar("D", bound=BaseModel)


class LocationIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    grid: PlaceName = ""
    building: PlaceName = ""
    unit: PlaceName = ""
    room: PlaceName = ""


class Envelope(BaseModel, Generic[D]):
    model_config = ConfigDict(extra="ignore", frozen=True)
    v: int = Field(default=SCHEMA_VERSION, ge=1, le=SCHEMA_VERSION)
    device_id: Annotated[str, StringConstraints(pattern=ID_PATTERN.pattern)]
    ts: int | datetime
    kind: str = TELEMETRY_KIND
    loc: LocationIn | None = None
    data: D


_ENVELOPES: dict[Family, type[Envelope[Any]]] = {
    family: Envelope[model]  # type: ignore[valid-type]
    for family, model in FAMILY_DATA.items()
}
_STATUS_ENVELOPE: type[Envelope[Any]] = Envelope[StatusData]
_EVENT_KINDS = {family: {k.value for k in kinds} for family, kinds in EVENT_KINDS.items()}
_STATUS_KINDS = {k.value for k in StatusKind}
_NO_LOCATION = LocationIn()


_CACHE_LIMIT = 100_000  # topics and places repeat per device: parse each once
_topics: dict[str, TopicParts] = {}
_places: dict[tuple[str, str, str, str, str], Location] = {}


def _parts(topic: str) -> TopicParts:
    parts = _topics.get(topic)
    if parts is None:
        parts = parse_topic(topic)  # raises on a bad topic: bad topics are never cached
        if len(_topics) >= _CACHE_LIMIT:
            _topics.clear()
        _topics[topic] = parts
    return parts


def _location(key: tuple[str, str, str, str, str]) -> Location:
    location = _places.get(key)
    if location is None:
        location = Location(*key)
        if len(_places) >= _CACHE_LIMIT:
            _places.clear()
        _places[key] = location
    return location


def decode(topic: str, payload: bytes) -> list[Reading]:
    check_size(payload)
    parts = _parts(topic)
    model = _STATUS_ENVELOPE if parts.channel is Channel.STATUS else _ENVELOPES[parts.family]
    try:
        env = model.model_validate_json(payload)
    except ValidationError as exc:
        raise rejection_from(exc, model) from None
    if env.device_id != parts.device_id:
        raise RejectedInput("device_id_mismatch", "payload device_id differs from the topic's")
    _check_kind(parts.family, parts.channel, env.kind)
    loc = env.loc or _NO_LOCATION
    location = _location((parts.community, loc.grid, loc.building, loc.unit, loc.room))
    data: FamilyData = env.data
    return [
        Reading(
            device_id=parts.device_id,
            family=parts.family,
            channel=parts.channel,
            kind=env.kind,
            time_ns=_to_ns(env.ts),
            location=location,
            values=data.model_dump(exclude_none=True),
            schema_version=env.v,
        )
    ]


def encode(reading: Reading) -> tuple[str, bytes]:
    """The topic and payload a device of this format would publish for `reading`."""
    loc = reading.location
    body: dict[str, Any] = {
        "v": reading.schema_version,
        "device_id": reading.device_id,
        "ts": reading.time_ns // 1_000_000,
        "kind": reading.kind,
        "loc": {"grid": loc.grid, "building": loc.building, "unit": loc.unit, "room": loc.room},
        "data": dict(reading.values),
    }
    topic = build_topic(loc.community, reading.family, reading.device_id, reading.channel)
    return topic, orjson.dumps(body)


def _check_kind(family: Family, channel: Channel, kind: str) -> None:
    if channel is Channel.TELEMETRY:
        ok = kind == TELEMETRY_KIND
    elif channel is Channel.EVENT:
        ok = kind in _EVENT_KINDS[family]
    else:
        ok = kind in _STATUS_KINDS
    if not ok:
        raise RejectedInput("bad_kind", f"kind is not valid for {family.value}/{channel.value}")


def _to_ns(ts: int | datetime) -> int:
    if isinstance(ts, datetime):
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=CHINA_STANDARD_TIME)
        ns = (ts - _EPOCH) // timedelta(microseconds=1) * 1000  # exact, no float rounding
        ms = ns // 1_000_000
    else:
        ms = ts
        ns = ts * 1_000_000
    if not _MIN_MS <= ms < _MAX_MS:
        raise RejectedInput("bad_timestamp", "ts must be epoch milliseconds between 2000 and 2100")
    return ns
