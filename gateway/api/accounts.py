"""Who may use the API (R3.4): accounts for people, keys for machines, expiring bearer tokens.

* A grid member's **account** takes its role and places from the registry, so a member moved
  to another building sees the new one at their next request. Other people (the property
  firm's operator, an approver, an auditor, an administrator) get a staff account with one
  role and one place. Passwords are argon2id hashes (argon2-cffi).
* An **API key** is for a machine (a screen, a dispatch integration): a role and a place, shown
  once when created (``ggk_<id>_<secret>``), stored as the SHA-256 of its secret — the secret
  is 256 random bits, so a slow hash adds nothing.
* A **token** (``ggt_<secret>``) is what a login returns; only its SHA-256 is stored, with its
  expiry, in the shared database: every API process accepts it, and disabling the account or
  a password change ends it at once.
* **Logins** are rate-limited per account and per client address over a window, in the shared
  database; every failure is counted and audited. An unknown user, a wrong password and a
  disabled account get the same answer after the same work (a dummy hash is verified), so the
  API does not tell which user names exist. Nothing here stores what someone typed as a user
  name unless it names an account: it might be a phone number.

Tables live beside the registry's under their own `MetaData`, like the alert tables.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import BigInteger, Boolean, Integer, MetaData, String, delete, func, select
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from devices.errors import GridgateError
from devices.location import Location
from devices.places import location_key
from gateway.registry import NAMING_CONVENTION, AccessRole, AuditSink, Registry, Role
from privacy.audit import AuditAction, find_raw_identifier
from privacy.identifiers import find_identifier

NS = 1_000_000_000
ID_LEN = 64
KEY_LEN = 5 * ID_LEN + 4
MIN_PASSWORD = 10
TOKEN_PREFIX = "ggt_"
KEY_PREFIX = "ggk_"
_USER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}")
_KEY = re.compile(r"ggk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")


class StaffRole(StrEnum):
    """API roles beside the grid members' own (`Role`)."""

    OPERATOR = "operator"  # the property firm's screen: aggregates and lists, no alert actions
    APPROVER = "approver"  # decides re-identification requests (R3.5)
    AUDITOR = "auditor"  # reads and verifies the audit log
    ADMIN = "admin"  # dead letters, accounts; no alert actions


API_ROLES: tuple[str, ...] = tuple(r.value for r in Role) + tuple(r.value for r in StaffRole)


class AccountError(GridgateError):
    """An account or key operation was refused; the message says why (no secret in it)."""


class LoginRefused(AccountError):
    """Wrong user name or password, or a disabled account: deliberately one answer."""


class LoginThrottled(AccountError):
    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"too many failed logins; try again in {retry_after_s} s")
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking: roles and the place keys they may see (each with what is inside)."""

    id: str
    kind: str  # "user" | "key"
    roles: frozenset[str]
    scopes: tuple[str, ...]

    @property
    def member_role(self) -> Role | None:
        """The grid-member role this caller acts on alerts with (keys never do)."""
        if self.kind != "user":
            return None
        return next((Role(r) for r in self.roles if r in Role.__members__.values()), None)

    def sees(self, place: str) -> bool:
        """`place` (a key) is inside one of the caller's scopes."""
        return any(place == s or place.startswith(s + "/") for s in self.scopes)

    def covers(self, place: str) -> bool:
        """`place` (a key) encloses one of the caller's scopes or is inside one."""
        return self.sees(place) or any(s.startswith(place + "/") for s in self.scopes)


@dataclass(frozen=True, slots=True)
class Account:
    user_id: str
    member: bool
    role: str | None  # a staff role (or an extra one of a member)
    scope: str | None
    active: bool
    created_ns: int


@dataclass(frozen=True, slots=True)
class KeyInfo:
    id: str
    name: str
    role: str
    scope: str
    created_ns: int
    created_by: str
    revoked_ns: int | None


class ApiBase(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class AccountRow(ApiBase):
    __tablename__ = "api_accounts"

    user_id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    member: Mapped[bool] = mapped_column(Boolean)
    role: Mapped[str | None] = mapped_column(String(32))
    scope: Mapped[str | None] = mapped_column(String(KEY_LEN))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_ns: Mapped[int] = mapped_column(BigInteger)
    password_ns: Mapped[int] = mapped_column(BigInteger)  # tokens older than this are void


class ApiKeyRow(ApiBase):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(12), primary_key=True)
    secret_sha256: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(ID_LEN))
    role: Mapped[str] = mapped_column(String(32))
    scope: Mapped[str] = mapped_column(String(KEY_LEN))
    created_ns: Mapped[int] = mapped_column(BigInteger)
    created_by: Mapped[str] = mapped_column(String(ID_LEN))
    revoked_ns: Mapped[int | None] = mapped_column(BigInteger)


class TokenRow(ApiBase):
    __tablename__ = "api_tokens"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(ID_LEN), index=True)
    created_ns: Mapped[int] = mapped_column(BigInteger)
    expires_ns: Mapped[int] = mapped_column(BigInteger, index=True)


class LoginFailureRow(ApiBase):
    """A failed login: the account it named (if any) and the client's address."""

    __tablename__ = "api_login_failures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[str | None] = mapped_column(String(ID_LEN), index=True)
    client: Mapped[str] = mapped_column(String(64), index=True)
    at_ns: Mapped[int] = mapped_column(BigInteger, index=True)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def check_user_id(user_id: str) -> str:
    if not isinstance(user_id, str) or not _USER_ID.fullmatch(user_id):
        raise AccountError("a user id is 1–64 letters, digits and . _ : @ -")
    if find_identifier(user_id) is not None or find_raw_identifier(user_id) is not None:
        raise AccountError("a user id must not be a phone, ID or plate number")
    return user_id


def check_password(password: str) -> str:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise AccountError(f"a password has at least {MIN_PASSWORD} characters")
    if len(password) > 512:
        raise AccountError("a password has at most 512 characters")
    return password


@dataclass(frozen=True, slots=True)
class LoginLimits:
    window_s: float = 900.0
    per_account: int = 5
    per_client: int = 20
    token_ttl_s: float = 8 * 3600.0


class Accounts:
    """Accounts, keys, tokens and login throttling in the registry's database."""

    def __init__(
        self,
        registry: Registry,
        audit: AuditSink,
        *,
        limits: LoginLimits | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
        hasher: PasswordHasher | None = None,
    ) -> None:
        self.registry = registry
        self.audit = audit
        self.limits = limits or LoginLimits()
        self._clock_ns = clock_ns
        self._hasher = hasher or PasswordHasher()
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))
        try:
            ApiBase.metadata.create_all(registry.engine)
        except (OperationalError, ProgrammingError):  # another process created them first
            ApiBase.metadata.create_all(registry.engine)

    # -- accounts ---------------------------------------------------------------------------

    def add_user(
        self,
        user_id: str,
        password: str,
        *,
        role: str | None = None,
        scope: str | None = None,
        actor: str,
    ) -> Account:
        """A member's account (role and places from the registry; `role` may add approver,
        auditor or admin), or a staff account with a staff `role` and a `scope`."""
        user_id = check_user_id(user_id)
        check_password(password)
        member = self.registry.member(user_id)
        if role is not None and role not in {r.value for r in StaffRole}:
            raise AccountError(f"role must be one of {', '.join(r.value for r in StaffRole)}")
        if member is None:
            if role is None or scope is None:
                raise AccountError(
                    f"{user_id} is not a grid member in the registry: a staff account needs"
                    " --role and --scope"
                )
        elif scope is not None:
            raise AccountError("a member's places come from the registry: no --scope")
        if scope is not None and not self.registry.place_exists(scope):
            raise AccountError(f"no place {scope!r} in the registry")
        now = self._clock_ns()
        with self.registry.writing() as s:
            if s.get(AccountRow, user_id) is not None:
                raise AccountError(f"{user_id} already has an account (use passwd)")
            s.add(
                AccountRow(
                    user_id=user_id,
                    password_hash=self._hasher.hash(password),
                    member=member is not None,
                    role=role,
                    scope=scope,
                    active=True,
                    created_ns=now,
                    password_ns=now,
                )
            )
        if role == StaffRole.APPROVER:
            self.registry.grant_role(user_id, AccessRole.APPROVER, actor=actor, at_ns=now)
        details = {"change": "add", "member": member is not None, "role": role, "scope": scope}
        self.audit.append(actor, AuditAction.ACCOUNT_CHANGE, f"user:{user_id}", details)
        found = self.account(user_id)
        assert found is not None
        return found

    def set_password(self, user_id: str, password: str, *, actor: str) -> None:
        check_password(password)
        now = self._clock_ns()
        with self.registry.writing() as s:
            row = s.get(AccountRow, user_id)
            if row is None:
                raise AccountError(f"{user_id} has no account")
            row.password_hash = self._hasher.hash(password)
            row.password_ns = now
            row.active = True
            s.execute(delete(TokenRow).where(TokenRow.user_id == user_id))
        self.audit.append(
            actor, AuditAction.ACCOUNT_CHANGE, f"user:{user_id}", {"change": "password"}
        )

    def disable(self, user_id: str, *, actor: str) -> None:
        with self.registry.writing() as s:
            row = s.get(AccountRow, user_id)
            if row is None:
                raise AccountError(f"{user_id} has no account")
            row.active = False
            s.execute(delete(TokenRow).where(TokenRow.user_id == user_id))
        self.audit.append(
            actor, AuditAction.ACCOUNT_CHANGE, f"user:{user_id}", {"change": "disable"}
        )

    def account(self, user_id: str) -> Account | None:
        with self.registry.reading() as s:
            row = s.get(AccountRow, user_id)
            if row is None:
                return None
            return Account(row.user_id, row.member, row.role, row.scope, row.active, row.created_ns)

    def accounts(self) -> list[Account]:
        with self.registry.reading() as s:
            rows = s.scalars(select(AccountRow).order_by(AccountRow.user_id))
            return [
                Account(r.user_id, r.member, r.role, r.scope, r.active, r.created_ns) for r in rows
            ]

    # -- logins and tokens ------------------------------------------------------------------

    def login(self, username: str, password: str, client: str) -> tuple[str, int]:
        """A new bearer token and its expiry (ns), or LoginRefused / LoginThrottled."""
        now = self._clock_ns()
        since = now - int(self.limits.window_s * NS)
        known = isinstance(username, str) and bool(_USER_ID.fullmatch(username))
        with self.registry.reading() as s:
            row = s.get(AccountRow, username) if known else None
            stored = row.password_hash if row is not None else self._dummy_hash
            active = row is not None and row.active
            by_client = s.scalar(
                select(func.count())
                .select_from(LoginFailureRow)
                .where(LoginFailureRow.client == client[:64], LoginFailureRow.at_ns >= since)
            )
            by_account: int | None = 0
            if row is not None:
                by_account = s.scalar(
                    select(func.count())
                    .select_from(LoginFailureRow)
                    .where(LoginFailureRow.user_id == row.user_id, LoginFailureRow.at_ns >= since)
                )
        if (by_client or 0) >= self.limits.per_client or (by_account or 0) >= (
            self.limits.per_account
        ):
            self._audit_login(row.user_id if row else None, "throttled")
            raise LoginThrottled(int(self.limits.window_s))
        try:
            ok: bool = self._hasher.verify(stored, password if isinstance(password, str) else "")
        except (VerificationError, InvalidHashError):
            ok = False
        if not ok or not active or row is None:
            with self.registry.writing() as s:
                s.add(
                    LoginFailureRow(
                        user_id=row.user_id if row else None, client=client[:64], at_ns=now
                    )
                )
            self._audit_login(row.user_id if row else None, "refused")
            raise LoginRefused("wrong user name or password")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        expires = now + int(self.limits.token_ttl_s * NS)
        with self.registry.writing() as s:
            s.add(TokenRow(sha256=_sha256(token), user_id=row.user_id, created_ns=now,
                           expires_ns=expires))  # fmt: skip
            s.execute(delete(TokenRow).where(TokenRow.expires_ns < now))
            s.execute(delete(LoginFailureRow).where(LoginFailureRow.at_ns < since))
        self._audit_login(row.user_id, "ok")
        return token, expires

    def logout(self, token: str) -> None:
        with self.registry.writing() as s:
            s.execute(delete(TokenRow).where(TokenRow.sha256 == _sha256(token)))

    def _audit_login(self, user_id: str | None, outcome: str) -> None:
        subject = f"user:{user_id}" if user_id else "user:unknown"
        self.audit.append("api", AuditAction.LOGIN, subject, {"outcome": outcome})

    def principal(self, credential: str) -> Principal | None:
        """The caller a bearer credential (a token or an API key) stands for, if valid now."""
        if credential.startswith(TOKEN_PREFIX):
            return self._token_principal(credential)
        if credential.startswith(KEY_PREFIX):
            return self._key_principal(credential)
        return None

    def _token_principal(self, token: str) -> Principal | None:
        now = self._clock_ns()
        with self.registry.reading() as s:
            tok = s.get(TokenRow, _sha256(token))
            if tok is None or tok.expires_ns <= now:
                return None
            row = s.get(AccountRow, tok.user_id)
            if row is None or not row.active or tok.created_ns < row.password_ns:
                return None
            account = Account(
                row.user_id, row.member, row.role, row.scope, row.active, row.created_ns
            )
        return self.user_principal(account)

    def user_principal(self, account: Account) -> Principal | None:
        roles: set[str] = set()
        scopes: list[str] = []
        if account.member:
            member = self.registry.member(account.user_id)
            if member is None or not member.active:
                return None
            roles.add(member.role.value)
            scopes.extend(_key(loc) for loc in member.scopes)
        if account.role:
            roles.add(account.role)
        if account.scope:
            scopes.append(account.scope)
        if self.registry.has_role(account.user_id, AccessRole.APPROVER):
            roles.add(StaffRole.APPROVER.value)
        return Principal(account.user_id, "user", frozenset(roles), tuple(dict.fromkeys(scopes)))

    # -- API keys ---------------------------------------------------------------------------

    def create_key(
        self, role: str, scope: str, *, name: str = "", actor: str
    ) -> tuple[str, KeyInfo]:
        """A new key: the text (shown once, never stored) and what is stored about it."""
        if role not in API_ROLES:
            raise AccountError(f"role must be one of {', '.join(API_ROLES)}")
        if role in {r.value for r in Role}:
            raise AccountError("member roles belong to people: give the member an account")
        if not self.registry.place_exists(scope):
            raise AccountError(f"no place {scope!r} in the registry")
        name = check_user_id(name) if name else f"{role}-key"
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        now = self._clock_ns()
        with self.registry.writing() as s:
            s.add(
                ApiKeyRow(
                    id=key_id, secret_sha256=_sha256(secret), name=name, role=role, scope=scope,
                    created_ns=now, created_by=actor, revoked_ns=None,
                )
            )  # fmt: skip
        self.audit.append(
            actor, AuditAction.ACCOUNT_CHANGE, f"apikey:{key_id}",
            {"change": "create", "role": role, "scope": scope, "name": name},
        )  # fmt: skip
        return f"{KEY_PREFIX}{key_id}_{secret}", KeyInfo(
            key_id, name, role, scope, now, actor, None
        )

    def api_keys(self) -> list[KeyInfo]:
        with self.registry.reading() as s:
            rows = s.scalars(select(ApiKeyRow).order_by(ApiKeyRow.created_ns))
            return [
                KeyInfo(r.id, r.name, r.role, r.scope, r.created_ns, r.created_by, r.revoked_ns)
                for r in rows
            ]

    def revoke_key(self, key_id: str, *, actor: str) -> None:
        now = self._clock_ns()
        with self.registry.writing() as s:
            row = s.get(ApiKeyRow, key_id)
            if row is None:
                raise AccountError(f"no API key {key_id!r}")
            if row.revoked_ns is None:
                row.revoked_ns = now
        self.audit.append(actor, AuditAction.ACCOUNT_CHANGE, f"apikey:{key_id}",
                          {"change": "revoke"})  # fmt: skip

    def _key_principal(self, text: str) -> Principal | None:
        match = _KEY.fullmatch(text)
        if match is None:
            return None
        key_id, secret = match.groups()
        with self.registry.reading() as s:
            row = s.get(ApiKeyRow, key_id)
            if row is None or row.revoked_ns is not None:
                return None
            if not hmac.compare_digest(row.secret_sha256, _sha256(secret)):
                return None
            return Principal(f"key:{row.id}", "key", frozenset({row.role}), (row.scope,))


def _key(location: Location) -> str:
    return location_key(location) or ""


__all__ = [
    "API_ROLES",
    "Account",
    "AccountError",
    "Accounts",
    "KeyInfo",
    "LoginLimits",
    "LoginRefused",
    "LoginThrottled",
    "Principal",
    "StaffRole",
    "check_password",
    "check_user_id",
]
