"""Grid members and whom they answer for (R5.1, R5.3), and gridgate users' privacy roles (R3.5)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from devices.location import Location
from devices.places import ancestor_keys, location_of
from gateway.registry._models import MemberChannel, MemberRow, MemberScope, UserRoleRow
from gateway.registry.database import Database
from gateway.registry.identifiers import identifier_in_text
from gateway.registry.places import key_of
from gateway.registry.queries import chunks
from gateway.registry.records import AccessRole, ContactChannel, Member, Role
from privacy.audit import AuditAction
from privacy.identifiers import find_identifier

_ROLE_ORDER = {role: i for i, role in enumerate(Role)}


class MemberRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    def responsible_for(
        self, location: Location, roles: Collection[Role] | None = None
    ) -> list[Member]:
        """Active members responsible for `location`: scoped to it or to a place enclosing it.

        Listed innermost first (the unit head before the building head before the grid's
        workers before the community's desks), then by role and id: the order in which an
        alert is escalated. A location that skips a level (building without grid) is
        resolved through the registry when its codes are unambiguous.
        """
        with self._db.reading() as s:
            key = key_of(s, location)
            if key is None:
                return []
            keys = ancestor_keys(key)
            depth = {k: i for i, k in enumerate(keys)}
            stmt = (
                select(MemberScope.member_id, MemberScope.place_id)
                .join(MemberRow, MemberRow.id == MemberScope.member_id)
                .where(MemberScope.place_id.in_(keys), MemberRow.active.is_(True))
            )
            if roles is not None:
                stmt = stmt.where(MemberRow.role.in_(list(roles)))
            innermost: dict[str, int] = {}
            for member_id, place_id in s.execute(stmt):
                innermost[member_id] = max(innermost.get(member_id, -1), depth[place_id])
            members = _load_members(s, list(innermost))
        members.sort(key=lambda m: (-innermost[m.id], _ROLE_ORDER[m.role], m.id))
        return members

    def within(self, location: Location, roles: Collection[Role] | None = None) -> list[Member]:
        """Active members scoped to places strictly inside `location` (the unit heads of a
        building), by role and id."""
        with self._db.reading() as s:
            key = key_of(s, location)
            if key is None:
                return []
            stmt = (
                select(MemberScope.member_id)
                .join(MemberRow, MemberRow.id == MemberScope.member_id)
                .where(
                    MemberScope.place_id.startswith(key + "/", autoescape=True),
                    MemberRow.active.is_(True),
                )
                .distinct()
            )
            if roles is not None:
                stmt = stmt.where(MemberRow.role.in_(list(roles)))
            members = _load_members(s, list(s.scalars(stmt)))
        members.sort(key=lambda m: (_ROLE_ORDER[m.role], m.id))
        return members

    def get(self, member_id: str) -> Member | None:
        with self._db.reading() as s:
            found = _load_members(s, [member_id])
        return found[0] if found else None

    def all(self) -> list[Member]:
        with self._db.reading() as s:
            ids = list(s.scalars(select(MemberRow.id).order_by(MemberRow.id)))
            return _load_members(s, ids)


class UserRoleRepository:
    """Privacy roles (R3.5) of gridgate's users, apart from grid members' alerting roles."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def has(self, user_id: str, role: AccessRole) -> bool:
        with self._db.reading() as s:
            return (
                s.scalar(
                    select(func.count())
                    .select_from(UserRoleRow)
                    .where(UserRoleRow.user_id == user_id, UserRoleRow.role == role)
                )
                or 0
            ) > 0

    def users_with(self, role: AccessRole) -> list[str]:
        with self._db.reading() as s:
            return list(
                s.scalars(
                    select(UserRoleRow.user_id)
                    .where(UserRoleRow.role == role)
                    .order_by(UserRoleRow.user_id)
                )
            )

    def grant(self, user_id: str, role: AccessRole, *, actor: str, at_ns: int) -> bool:
        """Give `user_id` a privacy role (audited as a policy change); False if it had it.

        Raises ValueError for a user id holding a personal identifier (a phone number, an ID
        number, a name in Chinese): it would be stored and named in every audit record.
        """
        if find_identifier(user_id) is not None or identifier_in_text(user_id) is not None:
            raise ValueError("a user id must not hold personal data (phone, ID number, name)")
        audit = self._db.require_audit()
        with self._db.writing() as s:
            if s.get(UserRoleRow, (user_id, role)) is not None:
                return False
            s.add(UserRoleRow(user_id=user_id, role=role, granted_by=actor, granted_ns=at_ns))
            s.flush()
            audit.append(
                actor, AuditAction.POLICY_CHANGE, user_id, {"role": role.value, "granted": True}
            )
        return True

    def revoke(self, user_id: str, role: AccessRole, *, actor: str) -> bool:
        audit = self._db.require_audit()
        with self._db.writing() as s:
            done = s.execute(
                delete(UserRoleRow).where(UserRoleRow.user_id == user_id, UserRoleRow.role == role)
            )
            if not getattr(done, "rowcount", 0):
                return False
            audit.append(
                actor, AuditAction.POLICY_CHANGE, user_id, {"role": role.value, "granted": False}
            )
        return True


def _load_members(s: Session, ids: Sequence[str]) -> list[Member]:
    rows: list[MemberRow] = []
    scopes: dict[str, list[Location]] = defaultdict(list)
    channels: dict[str, list[ContactChannel]] = defaultdict(list)
    for part in chunks(ids):
        rows.extend(s.scalars(select(MemberRow).where(MemberRow.id.in_(part))))
        for mid, pid in s.execute(
            select(MemberScope.member_id, MemberScope.place_id)
            .where(MemberScope.member_id.in_(part))
            .order_by(MemberScope.place_id)
        ):
            scopes[mid].append(location_of(pid))
        for mid, kind, target in s.execute(
            select(MemberChannel.member_id, MemberChannel.kind, MemberChannel.target)
            .where(MemberChannel.member_id.in_(part))
            .order_by(MemberChannel.id)
        ):
            channels[mid].append(ContactChannel(kind, target))
    out = [
        Member(r.id, r.name, r.role, r.active, tuple(scopes[r.id]), tuple(channels[r.id]))
        for r in rows
    ]
    out.sort(key=lambda m: m.id)
    return out


__all__ = ["MemberRepository", "UserRoleRepository"]
