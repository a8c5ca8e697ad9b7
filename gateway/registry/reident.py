"""Re-identification with graded approval (R3.5 分级审批) and accountability (R3.6 责任追查).

Resolving a pseudonym back to a resident is the one way out of de-identification, so every
path through here is narrow and written down:

* a **request** names the requester, a reason and a purpose (and the place it concerns);
* an **emergency** request is granted at once, but only if an active critical alert exists at
  that place (asked of the alert engine through `emergency`), and it is flagged for review
  by an approver afterwards; a claimed emergency without such an alert is an ordinary request;
* any other request needs **approval by a second person** who holds the approver role;
* a grant lets only its requester resolve, and only until it **expires**;
* every step — granted or refused — is an **audit record** (ids, pseudonyms, reasons; never a
  raw identifier). Refusals are audited too: repeated attempts are what an auditor looks for.

Requests and grants live in the registry database (`ReidentRequestRow`), so a restart keeps
them; the registry has no names, so a resolution yields the resident and household ids, which
the property firm's own records turn into a person when it must act.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from devices.errors import GridgateError
from devices.location import Location
from devices.places import KEY_SEP, location_of
from gateway.registry._models import (
    PSEUDONYM_LEN,
    TEXT_LEN,
    PseudonymRow,
    ReidentRequestRow,
    ResidentRow,
    UserRoleRow,
)
from gateway.registry.database import AuditSink
from gateway.registry.records import AccessRole, RequestStatus, Resident
from gateway.registry.store import Registry
from privacy.audit import AuditAction, find_raw_identifier

EMERGENCY_ACTOR = "gridgate:emergency"  # who "approves" an emergency grant: the rule itself
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_USER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}")


class ReidentError(GridgateError):
    """A re-identification step was refused; the message says why (no personal data)."""


class InvalidRequest(ReidentError, ValueError):
    """Missing or unusable reason, purpose, pseudonym or user id."""


class RequestNotFound(ReidentError, KeyError):
    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "no such request"


class NotPermitted(ReidentError):
    """The user may not take this step (role, self-approval, not the requester, no grant)."""


class NoSuchResident(ReidentError):
    """A live grant, but no registered resident has this pseudonym (a visitor, say)."""


@dataclass(slots=True, frozen=True)
class Request:
    id: str
    pseudonym: str
    requester: str
    reason: str
    purpose: str
    place: Location | None
    emergency_claimed: bool
    emergency: bool  # claimed and confirmed by an active critical alert at `place`
    status: RequestStatus
    needs_review: bool
    created_ns: int
    decided_by: str | None
    decided_ns: int | None
    expires_ns: int | None
    reviewed_by: str | None
    reviewed_ns: int | None
    review_upheld: bool | None
    resolutions: int

    def live(self, now_ns: int) -> bool:
        """A grant that may be used now."""
        return (
            self.status is RequestStatus.GRANTED
            and self.expires_ns is not None
            and now_ns < self.expires_ns
        )


class ReidentService:
    """The graded-approval workflow; safe to share (every call is one registry transaction)."""

    def __init__(
        self,
        registry: Registry,
        audit: AuditSink,
        *,
        clock_ns: Callable[[], int] = time.time_ns,
        emergency: Callable[[Location], bool],
        grant_ttl_s: float = 3600.0,
        request_ttl_s: float = 86_400.0,
    ) -> None:
        if grant_ttl_s <= 0 or request_ttl_s <= 0:
            raise ValueError("grant_ttl_s and request_ttl_s must be positive")
        self._registry = registry
        self._audit = audit
        self._clock_ns = clock_ns
        self._emergency = emergency
        self._grant_ttl_ns = int(grant_ttl_s * 1e9)
        self._request_ttl_ns = int(request_ttl_s * 1e9)

    # -- the workflow -----------------------------------------------------------------------

    def request(
        self,
        requester: str,
        pseudonym: str,
        reason: str,
        purpose: str,
        place: Location | None,
        emergency: bool = False,
    ) -> Request:
        """File a request: granted at once for a confirmed emergency, else pending approval."""
        requester = _user(requester, "requester")
        pseudonym = _pseudonym(pseudonym)
        reason, purpose = _text(reason, "reason"), _text(purpose, "purpose")
        now = self._clock_ns()
        honoured, check_failed = False, False
        if emergency and place is not None:
            try:
                honoured = bool(self._emergency(place))
            except Exception:  # the alert engine failing must not grant anything
                check_failed = True
        row = ReidentRequestRow(
            id=f"rq-{secrets.token_hex(8)}",
            pseudonym=pseudonym,
            requester=requester,
            reason=reason,
            purpose=purpose,
            place_id=_place_text(place),
            emergency_claimed=emergency,
            emergency=honoured,
            status=RequestStatus.GRANTED if honoured else RequestStatus.PENDING,
            needs_review=honoured,
            created_ns=now,
            decided_by=EMERGENCY_ACTOR if honoured else None,
            decided_ns=now if honoured else None,
            expires_ns=now + self._grant_ttl_ns if honoured else None,
            resolutions=0,
        )
        with self._registry.writing() as s:
            s.add(row)
            s.flush()
            details = _details(row) | {"reason": reason, "purpose": purpose}
            if emergency and not honoured:
                details["emergency_refused"] = (
                    "alert check failed"
                    if check_failed
                    else "no place given"
                    if place is None
                    else "no active critical alert at the place"
                )
            self._audit.append(requester, AuditAction.REIDENT_REQUEST, row.id, details)
            if honoured:
                self._audit.append(
                    EMERGENCY_ACTOR,
                    AuditAction.REIDENT_APPROVE,
                    row.id,
                    _details(row) | {"expires_ns": row.expires_ns},
                )
            return _request(row)

    def approve(self, request_id: str, approver: str) -> Request:
        """Grant a pending request: `approver` holds the approver role and is not the
        requester. The grant runs for grant_ttl_s from now."""
        approver = _user(approver, "approver")
        with self._registry.writing() as s:
            row = self._load(s, request_id)
            now = self._clock_ns()
            refusal = self._check_decider(s, row, approver, "approve")
            if refusal is None and now - row.created_ns > self._request_ttl_ns:
                refusal = "the request is too old to approve; file a new one"
            if refusal is not None:
                self._refuse(approver, AuditAction.REIDENT_APPROVE, row, refusal)
            row.status = RequestStatus.GRANTED
            row.decided_by, row.decided_ns = approver, now
            row.expires_ns = now + self._grant_ttl_ns
            s.flush()
            self._audit.append(
                approver,
                AuditAction.REIDENT_APPROVE,
                row.id,
                _details(row) | {"expires_ns": row.expires_ns},
            )
            return _request(row)

    def deny(self, request_id: str, approver: str, reason: str = "") -> Request:
        approver = _user(approver, "approver")
        note = _text(reason, "reason", required=False)
        with self._registry.writing() as s:
            row = self._load(s, request_id)
            refusal = self._check_decider(s, row, approver, "deny", self_allowed=True)
            if refusal is not None:
                self._refuse(approver, AuditAction.REIDENT_DENY, row, refusal)
            row.status = RequestStatus.DENIED
            row.decided_by, row.decided_ns = approver, self._clock_ns()
            s.flush()
            self._audit.append(
                approver, AuditAction.REIDENT_DENY, row.id, _details(row) | {"reason": note}
            )
            return _request(row)

    def resolve(self, request_id: str, requester: str, *, once: bool = False) -> Resident:
        """The resident behind the request's pseudonym, under a live grant of `requester`.

        Raises NotPermitted (no grant, not yours, expired, revoked; with `once`, already
        resolved), NoSuchResident.
        """
        requester = _user(requester, "requester")
        with self._registry.writing() as s:
            row = self._load(s, request_id)
            now = self._clock_ns()
            refusal = None
            if row.requester != requester:
                refusal = "only the requester may use a grant"
            elif row.status is not RequestStatus.GRANTED:
                refusal = f"the request is {row.status.value}, not granted"
            elif row.expires_ns is None or now >= row.expires_ns:
                refusal = "the grant has expired or was revoked"
            elif once and row.resolutions > 0:
                refusal = "the identity was already shown once under this grant"
            if refusal is not None:
                self._refuse(requester, AuditAction.REIDENT_RESOLVE, row, refusal)
            found = s.scalar(
                select(ResidentRow)
                .join(PseudonymRow, PseudonymRow.resident_id == ResidentRow.id)
                .where(PseudonymRow.pseudonym == row.pseudonym)
            )
            row.resolutions += 1
            s.flush()
            outcome: dict[str, Any] = {"outcome": "no_match"}
            if found is not None:
                outcome = {
                    "outcome": "resolved",
                    "resident": found.id,
                    "household": found.household_id,
                }
            self._audit.append(
                requester, AuditAction.REIDENT_RESOLVE, row.id, _details(row) | outcome
            )
            if found is None:
                raise NoSuchResident("no registered resident has this pseudonym")
            return Resident(found.id, found.household_id, found.face_consent, found.face_consent_ns)

    def review(
        self, request_id: str, reviewer: str, *, upheld: bool = True, note: str = ""
    ) -> Request:
        """An approver's after-the-fact review of an emergency grant; not upheld revokes it
        at once and the audit record says so."""
        reviewer = _user(reviewer, "reviewer")
        note = _text(note, "note", required=False)
        with self._registry.writing() as s:
            row = self._load(s, request_id)
            refusal = None
            if not row.needs_review:
                refusal = "the request is not awaiting review"
            elif not _has_role(s, reviewer, AccessRole.APPROVER):
                refusal = "only a user with the approver role may review"
            elif reviewer == row.requester:
                refusal = "the requester cannot review their own emergency grant"
            if refusal is not None:
                self._refuse(reviewer, AuditAction.REIDENT_REVIEW, row, refusal)
            now = self._clock_ns()
            row.needs_review = False
            row.reviewed_by, row.reviewed_ns, row.review_upheld = reviewer, now, upheld
            if not upheld and row.expires_ns is not None:
                row.expires_ns = min(row.expires_ns, now)
            s.flush()
            self._audit.append(
                reviewer,
                AuditAction.REIDENT_REVIEW,
                row.id,
                _details(row) | {"upheld": upheld, "note": note},
            )
            return _request(row)

    # -- queries ----------------------------------------------------------------------------

    def get(self, request_id: str) -> Request | None:
        with self._registry.reading() as s:
            row = s.get(ReidentRequestRow, request_id)
            return None if row is None else _request(row)

    def pending(self) -> list[Request]:
        """Requests waiting for an approver, oldest first."""
        return self._list(ReidentRequestRow.status == RequestStatus.PENDING)

    def awaiting_review(self) -> list[Request]:
        """Emergency grants an approver has not reviewed yet, oldest first."""
        return self._list(ReidentRequestRow.needs_review.is_(True))

    def requests_by(self, requester: str) -> list[Request]:
        return self._list(ReidentRequestRow.requester == requester)

    def _list(self, where: Any) -> list[Request]:
        with self._registry.reading() as s:
            rows = s.scalars(
                select(ReidentRequestRow)
                .where(where)
                .order_by(ReidentRequestRow.created_ns, ReidentRequestRow.id)
            )
            return [_request(r) for r in rows]

    # -- helpers ----------------------------------------------------------------------------

    def _load(self, s: Session, request_id: str) -> ReidentRequestRow:
        row = s.get(ReidentRequestRow, request_id)
        if row is None:
            raise RequestNotFound(f"no re-identification request {request_id!r}")
        return row

    def _check_decider(
        self,
        s: Session,
        row: ReidentRequestRow,
        user: str,
        verb: str,
        *,
        self_allowed: bool = False,
    ) -> str | None:
        if row.status is not RequestStatus.PENDING:
            return f"the request is {row.status.value}, not pending"
        if not _has_role(s, user, AccessRole.APPROVER):
            return f"only a user with the approver role may {verb}"
        if user == row.requester and not self_allowed:
            return f"a second person must {verb}: the requester cannot {verb} their own request"
        return None

    def _refuse(self, actor: str, action: AuditAction, row: ReidentRequestRow, why: str) -> None:
        """Audit a refused step, then raise: the attempt is on record even though nothing
        changed (the caller's transaction rolls back)."""
        self._audit.append(actor, action, row.id, _details(row) | {"refused": why})
        raise NotPermitted(why)


def approver_count(registry: Registry) -> int:
    """How many users may approve; a deployment with fewer than two cannot do graded approval."""
    with registry.reading() as s:
        return (
            s.scalar(
                select(func.count())
                .select_from(UserRoleRow)
                .where(UserRoleRow.role == AccessRole.APPROVER)
            )
            or 0
        )


def _has_role(s: Session, user: str, role: AccessRole) -> bool:
    return s.get(UserRoleRow, (user, role)) is not None


def _details(row: ReidentRequestRow) -> dict[str, Any]:
    """What every audit record of a request says about it (no raw identifiers)."""
    return {
        "pseudonym": row.pseudonym,
        "requester": row.requester,
        "place": row.place_id,
        "status": row.status.value,
        "emergency_claimed": row.emergency_claimed,
        "emergency": row.emergency,
        "needs_review": row.needs_review,
    }


def _request(row: ReidentRequestRow) -> Request:
    return Request(
        id=row.id,
        pseudonym=row.pseudonym,
        requester=row.requester,
        reason=row.reason,
        purpose=row.purpose,
        place=None if row.place_id is None else location_of(row.place_id),
        emergency_claimed=row.emergency_claimed,
        emergency=row.emergency,
        status=row.status,
        needs_review=row.needs_review,
        created_ns=row.created_ns,
        decided_by=row.decided_by,
        decided_ns=row.decided_ns,
        expires_ns=row.expires_ns,
        reviewed_by=row.reviewed_by,
        reviewed_ns=row.reviewed_ns,
        review_upheld=row.review_upheld,
        resolutions=row.resolutions,
    )


def _place_text(place: Location | None) -> str | None:
    """The place as a key; a location that skips a level keeps its empty codes
    (``xf//b03``), which `location_of` reads back."""
    if place is None:
        return None
    parts = (place.community, place.grid, place.building, place.unit, place.room)
    text = KEY_SEP.join(parts).rstrip(KEY_SEP)
    return text or None


def _user(value: str, what: str) -> str:
    if not isinstance(value, str) or not _USER_ID.fullmatch(value.strip()):
        raise InvalidRequest(f"{what} must be a user id (1-64 of A-Z a-z 0-9 _ . : @ -)")
    value = value.strip()
    if find_raw_identifier(value) is not None:
        raise InvalidRequest(f"{what} must be a user id, not an ID or phone number")
    return value


def _pseudonym(value: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value.strip()) > PSEUDONYM_LEN:
        raise InvalidRequest("a pseudonym is needed (as stored, e.g. k1:abcd…)")
    value = value.strip()
    if _CONTROL.search(value) or find_raw_identifier(value) is not None:
        raise InvalidRequest("give the pseudonym, not a raw identifier")
    return value


def _text(value: str, what: str, *, required: bool = True) -> str:
    if not isinstance(value, str):
        raise InvalidRequest(f"{what} must be text")
    value = value.strip()
    if required and not value:
        raise InvalidRequest(f"a {what} is required")
    if len(value) > TEXT_LEN or _CONTROL.search(value):
        raise InvalidRequest(f"{what} must be one line of at most {TEXT_LEN} characters")
    if find_raw_identifier(value) is not None:
        raise InvalidRequest(f"{what} must not contain ID or phone numbers (it is audited)")
    return value


__all__ = [
    "EMERGENCY_ACTOR",
    "InvalidRequest",
    "NoSuchResident",
    "NotPermitted",
    "ReidentError",
    "ReidentService",
    "Request",
    "RequestNotFound",
    "approver_count",
]
