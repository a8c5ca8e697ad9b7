"""Device and grid-member registry (R1.2, R3.3, R5.1): places, households, devices, members.

`Registry` is the store; `import_file` loads a property firm's fleet file (docs/fleet-file.md).
"""

from gateway.registry.importer import FleetFileError, ImportReport, import_file
from gateway.registry.records import (
    ChannelKind,
    ContactChannel,
    DeviceDetail,
    Household,
    Liveness,
    Member,
    PlaceLevel,
    PlaceNode,
    Power,
    RegistryCounts,
    Role,
    place_key,
)
from gateway.registry.store import Registry

__all__ = [
    "ChannelKind",
    "ContactChannel",
    "DeviceDetail",
    "FleetFileError",
    "Household",
    "ImportReport",
    "Liveness",
    "Member",
    "PlaceLevel",
    "PlaceNode",
    "Power",
    "Registry",
    "RegistryCounts",
    "Role",
    "import_file",
    "place_key",
]
