"""Dead letters as numbers (admin): counts by reason and hour, never payloads or topics."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

from fastapi import APIRouter

from gateway.api.deps import Admin, Context
from gateway.api.schemas import DeadLetterCount, DeadLettersPublic, Instant, at, ns_of

router = APIRouter(prefix="/deadletters", tags=["dead letters"])


@router.get("/counts", response_model=DeadLettersPublic)
def counts(
    context: Context,
    caller: Admin,
    since: Instant | None = None,
    until: Instant | None = None,
) -> DeadLettersPublic:
    """Per hour and reason over [since, until) (default: the last day)."""
    until_ns = ns_of(until) if until else context.clock_ns()
    since_ns = ns_of(since) if since else until_ns - int(timedelta(days=1).total_seconds() * 1e9)
    rows = context.deadletters.counts(since_ns, until_ns, 3600)
    by_reason: Counter[str] = Counter()
    data = []
    for bucket, reason, n in rows:
        by_reason[reason] += n
        hour = at(bucket)
        assert hour is not None
        data.append(DeadLetterCount(hour=hour, reason=reason, count=n))
    return DeadLettersPublic(total=sum(by_reason.values()), by_reason=dict(by_reason), data=data)
