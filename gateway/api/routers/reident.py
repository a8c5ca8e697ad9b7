"""Re-identification under graded approval (R3.5): request, a second person's decision (or
the emergency path), and the identity shown to its requester once, while the grant lives.
Every step, granted or refused, is audited by `ReidentService`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from devices.places import location_of
from gateway.api.accounts import Principal, StaffRole
from gateway.api.deps import Context, Person
from gateway.api.problems import Problem, not_found
from gateway.api.schemas import (
    DenyIn,
    IdentityPublic,
    ReidentIn,
    ReidentPublic,
    ReidentsPublic,
    ReviewIn,
    at,
)
from gateway.registry.reident import (
    InvalidRequest,
    NoSuchResident,
    NotPermitted,
    Request,
    RequestNotFound,
)

router = APIRouter(prefix="/reident", tags=["re-identification"])
RequestId = Annotated[str, Path(pattern=r"^rq-[0-9a-f]{16}$")]


def _public(r: Request) -> ReidentPublic:
    created = at(r.created_ns)
    assert created is not None
    place = ""
    if r.place is not None:
        place = "/".join(p for p in (r.place.community, r.place.grid, r.place.building,
                                     r.place.unit, r.place.room) if p)  # fmt: skip
    return ReidentPublic(
        id=r.id, pseudonym=r.pseudonym, requester=r.requester, place=place,
        emergency_claimed=r.emergency_claimed, emergency=r.emergency, status=r.status.value,
        needs_review=r.needs_review, created=created, decided_by=r.decided_by,
        expires=at(r.expires_ns), resolutions=r.resolutions,
    )  # fmt: skip


def _person(caller: Principal) -> str:
    if caller.kind != "user":
        raise Problem(403, "re-identification is asked for by a person, not an API key")
    return caller.id


def _visible(context: Context, caller: Principal, request_id: str) -> Request:
    found = context.reident.get(request_id)
    if found is None:
        raise not_found("no such request")
    approver = StaffRole.APPROVER.value in caller.roles
    if found.requester != caller.id and not approver:
        raise not_found("no such request")
    return found


@router.post("/requests", response_model=ReidentPublic, status_code=201)
def request(context: Context, caller: Person, body: ReidentIn) -> ReidentPublic:
    """Reason and purpose are required; `emergency` is honoured only with an open level-I or II
    alert at, around or inside `place` (then granted at once and reviewed afterwards)."""
    who = _person(caller)
    if body.place and not caller.sees(body.place):
        raise not_found("no such place")
    place = location_of(body.place) if body.place else None
    try:
        made = context.reident.request(
            who, body.pseudonym, body.reason, body.purpose, place, body.emergency
        )
    except InvalidRequest as exc:
        raise Problem(422, str(exc)) from exc
    return _public(made)


@router.get("/requests", response_model=ReidentsPublic)
def requests(context: Context, caller: Person) -> ReidentsPublic:
    """Your own requests; an approver also sees those waiting for a decision or a review."""
    found = {r.id: r for r in context.reident.requests_by(caller.id)}
    if StaffRole.APPROVER.value in caller.roles:
        found.update({r.id: r for r in context.reident.pending()})
        found.update({r.id: r for r in context.reident.awaiting_review()})
    data = [_public(r) for r in sorted(found.values(), key=lambda r: (r.created_ns, r.id))]
    return ReidentsPublic(data=data, count=len(data))


@router.post("/requests/{request_id}/approve", response_model=ReidentPublic)
def approve(context: Context, caller: Person, request_id: RequestId) -> ReidentPublic:
    """By an approver who is not the requester (anyone else is refused — and audited)."""
    _visible(context, caller, request_id)
    try:
        return _public(context.reident.approve(request_id, _person(caller)))
    except RequestNotFound as exc:
        raise not_found("no such request") from exc
    except NotPermitted as exc:
        raise Problem(409 if "not pending" in str(exc) else 403, str(exc)) from exc


@router.post("/requests/{request_id}/deny", response_model=ReidentPublic)
def deny(context: Context, caller: Person, request_id: RequestId, body: DenyIn) -> ReidentPublic:
    _visible(context, caller, request_id)
    try:
        return _public(context.reident.deny(request_id, _person(caller), body.reason))
    except RequestNotFound as exc:
        raise not_found("no such request") from exc
    except InvalidRequest as exc:
        raise Problem(422, str(exc)) from exc
    except NotPermitted as exc:
        raise Problem(409 if "not pending" in str(exc) else 403, str(exc)) from exc


@router.post("/requests/{request_id}/review", response_model=ReidentPublic)
def review(
    context: Context, caller: Person, request_id: RequestId, body: ReviewIn
) -> ReidentPublic:
    """An approver's review of an emergency grant after the fact; not upheld revokes it now."""
    _visible(context, caller, request_id)
    try:
        made = context.reident.review(
            request_id, _person(caller), upheld=body.upheld, note=body.note
        )
    except RequestNotFound as exc:
        raise not_found("no such request") from exc
    except InvalidRequest as exc:
        raise Problem(422, str(exc)) from exc
    except NotPermitted as exc:
        raise Problem(409 if "not awaiting" in str(exc) else 403, str(exc)) from exc
    return _public(made)


@router.post("/requests/{request_id}/resolve", response_model=IdentityPublic)
def resolve(context: Context, caller: Person, request_id: RequestId) -> IdentityPublic:
    """The resident behind the pseudonym: to the requester only, once, under a live grant."""
    found = _visible(context, caller, request_id)
    if found.requester != caller.id:
        raise not_found("no such request")
    try:
        resident = context.reident.resolve(request_id, _person(caller), once=True)
    except RequestNotFound as exc:
        raise not_found("no such request") from exc
    except NotPermitted as exc:
        raise Problem(403, str(exc)) from exc
    except NoSuchResident as exc:
        raise Problem(404, str(exc)) from exc
    return IdentityPublic(
        request_id=request_id, resident_id=resident.id, household_id=resident.household
    )
