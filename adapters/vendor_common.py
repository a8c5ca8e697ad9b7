"""Plumbing shared by the foreign-JSON vendor adapters (`vendor_*`); not an adapter itself.

Vendors differ in field names, nesting and units, but they fail in the same ways: a topic of
the wrong shape, an id the gateway cannot carry, a local time without a zone, a value that is
absurd once converted. Keeping those rules here makes every vendor reject alike, with the
same reason codes as `gridgate_json`, and details that name fields but never values.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, StringConstraints, ValidationError
from pydantic_core import PydanticCustomError

from adapters.base import check_size, rejection_from
from devices.errors import ConfigError, RejectedInput
from devices.families import Family
from devices.location import Location
from devices.models import FAMILY_DATA
from devices.topics import is_valid_id

CHINA_STANDARD_TIME = timezone(timedelta(hours=8))
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MIN_S = 946_684_800  # 2000-01-01: sanity bounds only, the pipeline has the clock window
_MAX_S = 4_102_444_800  # 2100-01-01
NS_PER_S = 1_000_000_000
NS_PER_MS = 1_000_000

# A vendor field that collides with a canonical name is renamed, never trusted: only fields
# an adapter maps on purpose may become canonical (a stray "door" could hold a name).
VENDOR_PREFIX = "vendor:"

_LOCAL_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})(?:\.(\d{3}))?", flags=re.ASCII
)


def _not_bool(value: object) -> object:
    # pydantic's lax mode reads true as 1; a vendor sending a bool for a measurement is broken.
    if isinstance(value, bool):
        raise PydanticCustomError("number_type", "a number is expected, not a boolean")
    return value


Number = Annotated[float, BeforeValidator(_not_bool)]
Integer = Annotated[int, BeforeValidator(_not_bool)]
Text = Annotated[str, StringConstraints(max_length=256)]
DeviceId = Annotated[str, StringConstraints(max_length=64)]
LocalTime = Annotated[str, StringConstraints(max_length=32)]


class VendorModel(BaseModel):
    """Vendor payloads keep unknown keys (`model_extra`): privacy drops and counts them."""

    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)


M = TypeVar("M", bound=BaseModel)


def parse_payload(model: type[M], payload: bytes) -> M:
    check_size(payload)
    try:
        return model.model_validate_json(payload)
    except ValidationError as exc:
        raise rejection_from(exc, model) from None


_CACHE_LIMIT = 100_000  # topics and places repeat per device: parse each once
_places: dict[str, Location] = {}


def location(community: str) -> Location:
    """Vendors know nothing of grids or buildings; the device registry fills those in."""
    place = _places.get(community)
    if place is None:
        place = Location(community)
        if len(_places) >= _CACHE_LIMIT:
            _places.clear()
        _places[community] = place
    return place


@dataclass(frozen=True)
class TopicShape:
    """`{head…}/{community}/{device}/{tail}`, the shape every vendor here publishes on."""

    head: tuple[str, ...]
    tail: str

    @property
    def subscription(self) -> str:
        return "/".join((*self.head, "+", "+", self.tail))

    def build(self, community: str, device_id: str) -> str:
        return "/".join((*self.head, community, device_id, self.tail))

    def parse(self, topic: str) -> tuple[str, str]:
        """(community, device id) of a topic; raises `bad_topic` / `bad_device_id`."""
        hit = _topics.get((self, topic))
        if hit is not None:
            return hit
        levels = topic.split("/")
        n = len(self.head)
        if len(levels) != n + 3 or tuple(levels[:n]) != self.head or levels[-1] != self.tail:
            raise RejectedInput("bad_topic", f"expected {self.build('community', 'device')}")
        community, device_id = levels[n], levels[n + 1]
        if not is_valid_id(community):
            raise RejectedInput("bad_topic", "community id has characters outside [A-Za-z0-9_.:-]")
        if not is_valid_id(device_id):
            raise RejectedInput("bad_device_id", "device id has characters outside [A-Za-z0-9_.:-]")
        if len(_topics) >= _CACHE_LIMIT:
            _topics.clear()
        _topics[(self, topic)] = (community, device_id)
        return community, device_id


_topics: dict[tuple[TopicShape, str], tuple[str, str]] = {}


def check_device(payload_id: str, topic_id: str, field: str) -> None:
    if not is_valid_id(payload_id):
        raise RejectedInput("bad_device_id", f"{field} has characters outside [A-Za-z0-9_.:-]")
    if payload_id != topic_id:
        raise RejectedInput("device_id_mismatch", f"payload {field} differs from the topic's")


def parse_local_time(text: str, field: str) -> int:
    """Epoch ns of "yyyy-MM-dd HH:mm:ss[.SSS]", which Chinese devices send in UTC+8."""
    match = _LOCAL_TIME.fullmatch(text)
    if match is None:
        raise RejectedInput("bad_timestamp", f"{field} is not yyyy-MM-dd HH:mm:ss[.SSS]")
    year, month, day, hour, minute, second, milli = match.groups()
    try:
        when = datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second),
            tzinfo=CHINA_STANDARD_TIME,
        )
    except ValueError:
        raise RejectedInput("bad_timestamp", f"{field} is not a calendar time") from None
    seconds = (when - _EPOCH) // timedelta(seconds=1)
    _check_epoch_s(seconds, field)
    return seconds * NS_PER_S + int(milli or 0) * NS_PER_MS


def format_local_time(time_ns: int) -> str:
    """The inverse of `parse_local_time`; milliseconds only when there are some."""
    seconds, rest = divmod(time_ns, NS_PER_S)
    when = (_EPOCH + timedelta(seconds=seconds)).astimezone(CHINA_STANDARD_TIME)
    text = when.strftime("%Y-%m-%d %H:%M:%S")
    milli = rest // NS_PER_MS
    return f"{text}.{milli:03d}" if milli else text


def epoch_s_to_ns(seconds: int, field: str) -> int:
    _check_epoch_s(seconds, field)
    return seconds * NS_PER_S


def epoch_ms_to_ns(millis: int, field: str) -> int:
    _check_epoch_s(millis // 1000, field)
    return millis * NS_PER_MS


def _check_epoch_s(seconds: int, field: str) -> None:
    if not _MIN_S <= seconds < _MAX_S:
        raise RejectedInput("bad_timestamp", f"{field} must be a time between 2000 and 2100")


def canonical(family: Family, values: Mapping[str, Any]) -> dict[str, Any]:
    """Validate converted values against the family model: units make absurd values too."""
    model = FAMILY_DATA[family]
    try:
        data = model.model_validate(values)
    except ValidationError as exc:
        rejected = rejection_from(exc, model)
        raise RejectedInput(rejected.reason, f"after conversion: {rejected.detail}") from None
    return data.model_dump(exclude_none=True)


def add_extras(
    family: Family, values: dict[str, Any], extras: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Pass a vendor's unknown fields on untouched, renaming only those that would pose as
    canonical fields (`VENDOR_PREFIX`)."""
    if extras:
        known = FAMILY_DATA[family].model_fields
        for key, value in extras.items():
            values[f"{VENDOR_PREFIX}{key}" if key in known else key] = value
    return values


def unknown_values(
    family: Family, values: Mapping[str, Any], vendor_keys: Iterable[str]
) -> dict[str, Any]:
    """For `encode`: the values that are not canonical, to be sent as vendor extras.

    Raises ValueError if one would shadow a field the vendor format defines itself.
    """
    known = FAMILY_DATA[family].model_fields
    extras = {k: v for k, v in values.items() if k not in known}
    clash = set(extras).intersection(vendor_keys)
    if clash:
        raise ValueError(f"values {sorted(clash)} would shadow vendor fields")
    return extras


def clamp(value: float, lo: float, hi: float) -> float:
    return min(hi, max(lo, value))


def option_number(key: str, value: object) -> float:
    """A numeric route option; YAML makes it too easy to pass a string or a bool."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"option {key} must be a number")
    number = float(value)
    if number != number or number in (float("inf"), float("-inf")):
        raise ConfigError(f"option {key} must be finite")
    return number
