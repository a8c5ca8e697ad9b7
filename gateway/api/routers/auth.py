"""Sign-in: a member's or staff account's password for an expiring bearer token."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer, OAuth2PasswordRequestForm

from gateway.api.accounts import LoginRefused, LoginThrottled
from gateway.api.deps import CHALLENGE, Caller, Context
from gateway.api.problems import Problem
from gateway.api.schemas import MePublic, TokenPublic, at

router = APIRouter(prefix="/auth", tags=["auth"])
_bearer = HTTPBearer(auto_error=False)


@router.post("/token", response_model=TokenPublic)
def login(
    context: Context, request: Request, form: Annotated[OAuth2PasswordRequestForm, Depends()]
) -> TokenPublic:
    """Form fields `username` (a member or staff id) and `password`. Wrong name, wrong password
    and a disabled account answer alike; repeated failures answer 429 for a while."""
    client = request.client.host if request.client else "unknown"
    try:
        token, expires = context.accounts.login(form.username, form.password, client)
    except LoginThrottled as exc:
        context.api_metrics.login_failures.labels("throttled").inc()
        raise Problem(429, str(exc), headers={"Retry-After": str(exc.retry_after_s)}) from exc
    except LoginRefused as exc:
        context.api_metrics.login_failures.labels("refused").inc()
        raise Problem(401, str(exc), headers=CHALLENGE) from exc
    expires_at = at(expires)
    assert expires_at is not None
    return TokenPublic(access_token=token, expires_at=expires_at)


@router.post("/logout", status_code=204, response_class=Response)
def logout(
    context: Context,
    caller: Caller,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Response:
    """Ends this token now (an API key is revoked with `gridgate apikey revoke`)."""
    if credentials is not None:
        context.accounts.logout(credentials.credentials)
    return Response(status_code=204)


@router.get("/me", response_model=MePublic)
def me(caller: Caller) -> MePublic:
    return MePublic(
        id=caller.id, kind=caller.kind, roles=sorted(caller.roles), scopes=list(caller.scopes)
    )
