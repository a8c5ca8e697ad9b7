"""Device and grid-member registry (R1.2, R3.3, R5.1): places, households, devices, members,
and residents with their consent, known only by pseudonyms of their ID numbers.

`Registry` is the entry point: a facade over repositories (`places`, `devices`, `members`,
`residents`) that returns frozen values (`records`); the ORM tables (`_models`) are private to
this package. `import_file` loads a property firm's fleet file (docs/fleet-file.md, parsed by
`fleet`); `rekey_file` adds residents' pseudonyms under a new key after a key rotation;
re-identification under graded approval is `reident`.
"""

from gateway.registry.database import NAMING_CONVENTION, AuditSink
from gateway.registry.importer import FleetFileError, ImportReport, import_file, rekey_file
from gateway.registry.records import (
    AccessRole,
    ChannelKind,
    ContactChannel,
    DeviceDetail,
    DeviceFilter,
    DeviceState,
    Household,
    Liveness,
    Member,
    PlaceNode,
    Power,
    RegistryCounts,
    RequestStatus,
    Resident,
    Role,
)
from gateway.registry.residents import ConsentCache, RegisteredVehicles, ResidentNumbers
from gateway.registry.store import Registry

__all__ = [
    "NAMING_CONVENTION",
    "AccessRole",
    "AuditSink",
    "ChannelKind",
    "ConsentCache",
    "ContactChannel",
    "DeviceDetail",
    "DeviceFilter",
    "DeviceState",
    "FleetFileError",
    "Household",
    "ImportReport",
    "Liveness",
    "Member",
    "PlaceNode",
    "Power",
    "RegisteredVehicles",
    "Registry",
    "RegistryCounts",
    "RequestStatus",
    "Resident",
    "ResidentNumbers",
    "Role",
    "import_file",
    "rekey_file",
]
