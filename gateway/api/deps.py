"""Dependencies every router shares: the context, the caller (bearer token or API key), the
roles an endpoint needs, and paging. 401 without valid credentials, 403 for a role that may
not do this, 404 for what is outside the caller's places (`Principal.sees`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gateway.api.accounts import Principal, StaffRole
from gateway.api.context import ApiContext
from gateway.api.problems import Problem
from gateway.registry import Role

_bearer = HTTPBearer(auto_error=False, description="a token from /api/v1/auth/token, or an API key")
MEMBER_ROLES = frozenset(r.value for r in Role)
CHALLENGE = {"WWW-Authenticate": "Bearer"}


def get_context(request: Request) -> ApiContext:
    context: ApiContext = request.app.state.context
    return context


Context = Annotated[ApiContext, Depends(get_context)]


def principal_of(context: ApiContext, credential: str | None) -> Principal:
    """The caller behind a credential, or 401."""
    found = context.accounts.principal(credential) if credential else None
    if found is None:
        raise Problem(401, "missing, expired or unknown credentials", headers=CHALLENGE)
    return found


def current_principal(
    context: Context,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    return principal_of(context, credentials.credentials if credentials else None)


Caller = Annotated[Principal, Depends(current_principal)]


def require(*roles: str) -> Callable[[Principal], Principal]:
    """A dependency: the caller holds one of `roles`, else 403."""
    allowed = frozenset(roles)

    def check(caller: Caller) -> Principal:
        if not caller.roles & allowed:
            raise Problem(403, f"this needs one of the roles {', '.join(sorted(allowed))}")
        return caller

    return check


Member = Annotated[Principal, Depends(require(*MEMBER_ROLES))]
Auditor = Annotated[Principal, Depends(require(StaffRole.AUDITOR, StaffRole.ADMIN))]
OnlyAuditor = Annotated[Principal, Depends(require(StaffRole.AUDITOR))]
Admin = Annotated[Principal, Depends(require(StaffRole.ADMIN))]
Approver = Annotated[Principal, Depends(require(StaffRole.APPROVER))]
Person = Annotated[Principal, Depends(require(*MEMBER_ROLES, *(r.value for r in StaffRole)))]


class Page:
    """`offset` and `limit` of a paginated list."""

    def __init__(
        self,
        offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> None:
        self.offset = offset
        self.limit = limit


Paging = Annotated[Page, Depends(Page)]


def scoped_place(caller: Principal, place: str | None) -> tuple[str, ...]:
    """The place keys a query covers: the caller's scopes, or `place` within them (404 when
    it is outside, exactly like a place that does not exist)."""
    if not place:
        return caller.scopes
    if not caller.sees(place):
        raise Problem(404, "no such place")
    return (place,)


__all__ = [
    "Admin",
    "Approver",
    "Auditor",
    "Caller",
    "Context",
    "Member",
    "OnlyAuditor",
    "Paging",
    "Person",
    "get_context",
    "principal_of",
    "require",
    "scoped_place",
]
