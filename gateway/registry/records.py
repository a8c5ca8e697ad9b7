"""Values the registry hands out: plain frozen dataclasses, so no caller holds an ORM session.

Places are identified by their *key*: the codes from the community down, joined by ``/``
(``xf/g01/b03/u2/1201``). Codes are topic-safe ids (no ``/``), so a key is unambiguous, and a
`Location` and its key convert into each other without a database round trip.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from devices.info import DeviceInfo
from devices.location import Location
from devices.places import KEY_SEP, LEVELS, PlaceLevel


class Role(StrEnum):
    """Grid members' roles (R5.1). Declaration order is the order members are listed in."""

    GRID_CHIEF = "grid_chief"
    GRID_WORKER = "grid_worker"
    BUILDING_HEAD = "building_head"
    UNIT_HEAD = "unit_head"
    DUTY_DESK = "duty_desk"
    STREET_OFFICE = "street_office"
    PROPERTY_DUTY = "property_duty"

    @property
    def label(self) -> str:
        return ROLE_LABELS[self]


ROLE_LABELS: dict[Role, str] = {
    Role.GRID_CHIEF: "网格长",
    Role.GRID_WORKER: "网格员",
    Role.BUILDING_HEAD: "楼栋长",
    Role.UNIT_HEAD: "单元长",
    Role.DUTY_DESK: "社区值班台",
    Role.STREET_OFFICE: "街道",
    Role.PROPERTY_DUTY: "物业值班",
}

# The levels a role's responsibility may be scoped to. A unit head scoped to a whole building is
# a data error that would send one unit's alerts to the wrong person, so the importer refuses it.
ROLE_SCOPE_LEVELS: dict[Role, frozenset[PlaceLevel]] = {
    Role.GRID_CHIEF: frozenset({PlaceLevel.COMMUNITY, PlaceLevel.GRID}),
    Role.GRID_WORKER: frozenset({PlaceLevel.GRID}),
    Role.BUILDING_HEAD: frozenset({PlaceLevel.BUILDING}),
    Role.UNIT_HEAD: frozenset({PlaceLevel.UNIT}),
    Role.DUTY_DESK: frozenset({PlaceLevel.COMMUNITY}),
    Role.STREET_OFFICE: frozenset({PlaceLevel.COMMUNITY}),
    Role.PROPERTY_DUTY: frozenset({PlaceLevel.COMMUNITY, PlaceLevel.GRID, PlaceLevel.BUILDING}),
}


class ChannelKind(StrEnum):
    MQTT = "mqtt"
    WEBHOOK = "webhook"
    SMS = "sms"
    APP = "app"
    WECOM = "wecom"  # target: a robot of the routing policy (a member's own group chat)
    DINGTALK = "dingtalk"


# The kinds alert delivery (gateway.alerts.delivery) sends on. sms and app are kept as kinds
# (a registry from before may hold them; the router reports such members unreachable) but have
# no sender: the importer refuses them, since a channel that never delivers is an alert lost.
DELIVERABLE_CHANNEL_KINDS: tuple[ChannelKind, ...] = (
    ChannelKind.MQTT,
    ChannelKind.WEBHOOK,
    ChannelKind.WECOM,
    ChannelKind.DINGTALK,
)
# "mqtt, webhook, wecom or dingtalk", for messages that name what delivery sends on
DELIVERABLE_TEXT = (
    ", ".join(k.value for k in DELIVERABLE_CHANNEL_KINDS[:-1])
    + f" or {DELIVERABLE_CHANNEL_KINDS[-1].value}"
)


class AccessRole(StrEnum):
    """Privacy roles of gridgate users, apart from grid members' alerting roles."""

    APPROVER = "approver"  # may approve or deny re-identification and review emergency grants


class RequestStatus(StrEnum):
    PENDING = "pending"
    GRANTED = "granted"
    DENIED = "denied"


class Power(StrEnum):
    """Decides a device's offline timeout: battery devices beat rarely."""

    MAINS = "mains"
    BATTERY = "battery"


@dataclass(slots=True, frozen=True)
class ContactChannel:
    kind: ChannelKind
    # Phone numbers and webhook URLs (which may embed a secret) stay out of reprs and logs.
    target: str = field(repr=False)


@dataclass(slots=True, frozen=True)
class Member:
    id: str
    name: str
    role: Role
    active: bool
    scopes: tuple[Location, ...]
    channels: tuple[ContactChannel, ...]


@dataclass(slots=True, frozen=True)
class Household:
    """A household is its room and a few flags; residents' names are never needed here."""

    id: str
    location: Location
    elder_alone: bool
    face_consent: bool
    face_consent_ns: int | None  # when consent was last granted or withdrawn


@dataclass(slots=True, frozen=True)
class Resident:
    """A registered resident: ids and consent only. Names and ID numbers are not kept; the
    person is matched by the pseudonym of their ID number."""

    id: str
    household: str
    face_consent: bool
    face_consent_ns: int | None


@dataclass(slots=True, frozen=True)
class Liveness:
    online: bool | None  # None: never heard of since registration
    last_seen_ns: int | None


@dataclass(slots=True, frozen=True)
class PlaceNode:
    key: str
    level: PlaceLevel
    code: str
    name: str
    children: tuple[PlaceNode, ...] = ()


@dataclass(slots=True, frozen=True)
class DeviceDetail:
    """One device as an operator sees it: the entry, its place's display names, its state."""

    info: DeviceInfo
    place_names: tuple[str, ...]  # display names from the community down to the device's place
    liveness: Liveness
    gate_approved: bool


@dataclass(slots=True, frozen=True)
class RegistryCounts:
    places: int
    households: int
    devices: int
    members: int
    places_by_level: dict[str, int] = field(default_factory=dict)
    devices_by_family: dict[str, int] = field(default_factory=dict)
    devices_online: int = 0
    devices_offline: int = 0  # the rest have not been heard of since registration
    members_by_role: dict[str, int] = field(default_factory=dict)
    elder_alone: int = 0
    face_consent: int = 0
    residents: int = 0
    residents_face_consent: int = 0


@dataclass(slots=True, frozen=True)
class DeviceFilter:
    """What an operator narrows a device list by; `places` are the caller's scopes (place keys,
    each with everything inside it), `place` one subtree within them."""

    places: tuple[str, ...] = ()
    place: str = ""
    family: str | None = None
    vendor: str | None = None
    online: bool | None = None  # None: any; an unheard-of device counts as not online
    seen_before_ns: int | None = None
    seen_after_ns: int | None = None
    ids: tuple[str, ...] | None = None  # only these devices


@dataclass(slots=True, frozen=True)
class DeviceState:
    """A device with its liveness, as a list shows it."""

    info: DeviceInfo
    liveness: Liveness


def level_of(key: str) -> PlaceLevel:
    return LEVELS[key.count(KEY_SEP)]
