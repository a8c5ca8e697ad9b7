"""The audit log (R3.6): queries for auditors and administrators, `verify` for auditors."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from gateway.alerts.store import unbacked_alert_records
from gateway.api.deps import Auditor, Context, OnlyAuditor, Paging
from gateway.api.schemas import (
    AuditRecordPublic,
    AuditRecordsPublic,
    Instant,
    VerifyPublic,
    at,
    ns_of,
)
from privacy.audit import AuditAction

router = APIRouter(prefix="/audit", tags=["audit"])


@router.get("", response_model=AuditRecordsPublic)
def query(
    context: Context,
    caller: Auditor,
    paging: Paging,
    since: Instant | None = None,
    until: Instant | None = None,
    actor: Annotated[str | None, Query(max_length=64)] = None,
    action: AuditAction | None = None,
    subject: Annotated[str | None, Query(max_length=160)] = None,
) -> AuditRecordsPublic:
    """Newest first. Records about a place outside the caller's places are left out, and
    records about no place (logins, re-identification) need a whole community's scope."""
    found, total = context.audit.query(
        since_ns=ns_of(since) if since else None,
        until_ns=ns_of(until) if until else None,
        actor=actor,
        action=action,
        subject=subject,
        visible=lambda place: (
            caller.covers(place) if place else any("/" not in s for s in caller.scopes)
        ),
        offset=paging.offset,
        limit=paging.limit,
    )
    data = []
    for r in found:
        when = at(r.at_ns)
        assert when is not None
        data.append(AuditRecordPublic(seq=r.seq, at=when, actor=r.actor, action=r.action.value,
                                      subject=r.subject, details=dict(r.details)))  # fmt: skip
    return AuditRecordsPublic(data=data, count=total)


@router.post("/verify", response_model=VerifyPublic)
def verify(context: Context, caller: OnlyAuditor) -> VerifyPublic:
    """Re-hash the whole chain and check every alert record against the alert it names."""
    result = context.audit.verify()
    unbacked = unbacked_alert_records(context.registry, context.audit.records())
    return VerifyPublic(
        ok=result.ok and not unbacked,
        checked=result.checked,
        first_bad_seq=result.first_bad_seq,
        problem=result.problem or ("alert records without their alert" if unbacked else ""),
        unbacked_alert_records=unbacked[:100],
    )
