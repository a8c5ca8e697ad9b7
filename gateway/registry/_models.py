"""Registry tables (SQLAlchemy 2.0 declarative), portable between SQLite and PostgreSQL.

Private to `gateway.registry`: its repositories read and write these rows and hand out frozen
values (`records`) instead, so no caller outside the package holds a registry row
(tests/unit/test_import_contract.py checks that nothing else imports this module).

Enums are stored as their values in VARCHAR columns with CHECK constraints (``native_enum=False``)
so adding a role or a channel kind never needs a PostgreSQL ``ALTER TYPE``.

A place's primary key is its key (``xf/g01/b03/u2/1201``, see `records`): a device's full
`Location` then comes from its own row, and the places covering a location are known without
walking up the tree. ``parent_id`` and ``code`` are kept as columns for the tree and for the
"code unique within its parent" constraint.
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    Enum,
    ForeignKey,
    Index,
    MetaData,
    String,
    UniqueConstraint,
    false,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from devices.families import Family
from devices.places import PlaceLevel
from gateway.registry.database import NAMING_CONVENTION
from gateway.registry.records import AccessRole, ChannelKind, Power, RequestStatus, Role

ID_LEN = 64  # devices.topics.ID_PATTERN allows at most 64 characters
KEY_LEN = 5 * ID_LEN + 4
NAME_LEN = 128
TARGET_LEN = 512
PSEUDONYM_LEN = 160  # "{kid}:{token}": a kid of up to 32 characters and an HMAC token
TEXT_LEN = 500  # reasons and purposes of re-identification requests


class ConsentSource(StrEnum):
    """Who last set a household's face consent: a file import may not undo a resident's
    own withdrawal (see `importer`)."""

    IMPORT = "import"
    DIRECT = "direct"


def _values_enum(enum: type[StrEnum], name: str) -> Enum:
    return Enum(
        enum,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda e: [m.value for m in e],
        validate_strings=True,
    )


class Base(DeclarativeBase):
    # Stable constraint names: migrations (Alembic) and PostgreSQL error messages need them.
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Place(Base):
    __tablename__ = "places"
    __table_args__ = (UniqueConstraint("parent_id", "code"),)

    id: Mapped[str] = mapped_column(String(KEY_LEN), primary_key=True)
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("places.id"))
    community: Mapped[str] = mapped_column(String(ID_LEN), index=True)
    level: Mapped[PlaceLevel] = mapped_column(_values_enum(PlaceLevel, "place_level"))
    code: Mapped[str] = mapped_column(String(ID_LEN))
    name: Mapped[str] = mapped_column(String(NAME_LEN))
    street: Mapped[str] = mapped_column(String(NAME_LEN), default="")  # communities only


class HouseholdRow(Base):
    __tablename__ = "households"

    id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    place_id: Mapped[str] = mapped_column(ForeignKey("places.id"), index=True)  # a room
    elder_alone: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    face_consent: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    face_consent_ns: Mapped[int | None] = mapped_column(BigInteger)
    face_consent_source: Mapped[ConsentSource] = mapped_column(
        _values_enum(ConsentSource, "consent_source"), default=ConsentSource.IMPORT
    )


class Device(Base):
    __tablename__ = "devices"
    __table_args__ = (Index(None, "family", "online"),)  # online rate per family for screens

    id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    family: Mapped[Family] = mapped_column(_values_enum(Family, "family"))
    adapter: Mapped[str] = mapped_column(String(ID_LEN))
    vendor: Mapped[str] = mapped_column(String(ID_LEN))
    place_id: Mapped[str] = mapped_column(ForeignKey("places.id"), index=True)
    household_id: Mapped[str | None] = mapped_column(ForeignKey("households.id"), index=True)
    power: Mapped[Power] = mapped_column(_values_enum(Power, "power"))
    installed: Mapped[date | None] = mapped_column(Date)
    last_seen_ns: Mapped[int | None] = mapped_column(BigInteger)
    online: Mapped[bool | None] = mapped_column(Boolean)
    # Face-recognition gates run identity matching only where the owners approved the
    # installation (R3.3, seed 004); everything else keeps only the anonymous event.
    gate_approved: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class MemberRow(Base):
    __tablename__ = "members"

    id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN))
    role: Mapped[Role] = mapped_column(_values_enum(Role, "role"), index=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())


class MemberScope(Base):
    """A member is responsible for a place and everything inside it."""

    __tablename__ = "member_scopes"

    member_id: Mapped[str] = mapped_column(
        ForeignKey("members.id", ondelete="CASCADE"), primary_key=True
    )
    place_id: Mapped[str] = mapped_column(ForeignKey("places.id"), primary_key=True, index=True)


class MemberChannel(Base):
    __tablename__ = "member_channels"
    __table_args__ = (UniqueConstraint("member_id", "kind", "target"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)  # keeps file order
    member_id: Mapped[str] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    kind: Mapped[ChannelKind] = mapped_column(_values_enum(ChannelKind, "channel_kind"))
    target: Mapped[str] = mapped_column(String(TARGET_LEN))


class ResidentRow(Base):
    """A resident as far as consent needs one: no name, no ID number (those stay with the
    property firm); the person is recognised through `PseudonymRow`."""

    __tablename__ = "residents"

    id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    household_id: Mapped[str] = mapped_column(ForeignKey("households.id"), index=True)
    face_consent: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    face_consent_ns: Mapped[int | None] = mapped_column(BigInteger)
    face_consent_source: Mapped[ConsentSource] = mapped_column(
        _values_enum(ConsentSource, "consent_source"), default=ConsentSource.IMPORT
    )


class PseudonymRow(Base):
    """The pseudonym vault: a resident's ID-number pseudonym under each key of the ring.

    Rows for older keys stay after a rotation, so pseudonyms stored before it still match
    (consent) and still resolve (with a re-identification grant).
    """

    __tablename__ = "resident_pseudonyms"
    __table_args__ = (UniqueConstraint("resident_id", "kid"),)

    pseudonym: Mapped[str] = mapped_column(String(PSEUDONYM_LEN), primary_key=True)
    resident_id: Mapped[str] = mapped_column(
        ForeignKey("residents.id", ondelete="CASCADE"), index=True
    )
    kid: Mapped[str] = mapped_column(String(ID_LEN))


class VehicleRow(Base):
    """A resident's registered vehicle, known only by its plate's pseudonym under each key of
    the ring (the plate stays in the fleet file): a barrier camera's plate is then the
    resident vehicle's pseudonym, any other plate only masked."""

    __tablename__ = "resident_vehicles"

    pseudonym: Mapped[str] = mapped_column(String(PSEUDONYM_LEN), primary_key=True)
    resident_id: Mapped[str] = mapped_column(
        ForeignKey("residents.id", ondelete="CASCADE"), index=True
    )
    kid: Mapped[str] = mapped_column(String(ID_LEN), index=True)


class UserRoleRow(Base):
    """Roles of gridgate's users (staff ids) for privacy decisions, e.g. who may approve a
    re-identification (R3.5)."""

    __tablename__ = "user_roles"

    user_id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    role: Mapped[AccessRole] = mapped_column(
        _values_enum(AccessRole, "access_role"), primary_key=True
    )
    granted_by: Mapped[str] = mapped_column(String(ID_LEN))
    granted_ns: Mapped[int] = mapped_column(BigInteger)


class ReidentRequestRow(Base):
    """A request to resolve a pseudonym, its decision and the grant it became (R3.5)."""

    __tablename__ = "reident_requests"
    __table_args__ = (Index(None, "status", "needs_review"),)

    id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    pseudonym: Mapped[str] = mapped_column(String(PSEUDONYM_LEN), index=True)
    requester: Mapped[str] = mapped_column(String(ID_LEN), index=True)
    reason: Mapped[str] = mapped_column(String(TEXT_LEN))
    purpose: Mapped[str] = mapped_column(String(TEXT_LEN))
    place_id: Mapped[str | None] = mapped_column(String(KEY_LEN))
    emergency_claimed: Mapped[bool] = mapped_column(Boolean, default=False)
    emergency: Mapped[bool] = mapped_column(Boolean, default=False)  # honoured: alert verified
    status: Mapped[RequestStatus] = mapped_column(_values_enum(RequestStatus, "request_status"))
    needs_review: Mapped[bool] = mapped_column(Boolean, default=False)
    created_ns: Mapped[int] = mapped_column(BigInteger)
    decided_by: Mapped[str | None] = mapped_column(String(ID_LEN))
    decided_ns: Mapped[int | None] = mapped_column(BigInteger)
    expires_ns: Mapped[int | None] = mapped_column(BigInteger)
    reviewed_by: Mapped[str | None] = mapped_column(String(ID_LEN))
    reviewed_ns: Mapped[int | None] = mapped_column(BigInteger)
    review_upheld: Mapped[bool | None] = mapped_column(Boolean)
    resolutions: Mapped[int] = mapped_column(default=0)
