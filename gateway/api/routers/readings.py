"""Readings history and the named person-related aggregates (`gateway.api.history`)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query

from gateway.api.deps import Caller, Context, scoped_place
from gateway.api.history import (
    PERSON_RELATED,
    PRESETS,
    HistoryError,
    HistoryQuery,
    check,
    run,
)
from gateway.api.problems import Problem
from gateway.api.schemas import Cell, Instant, ReadingsPublic, at, ns_of

router = APIRouter(tags=["readings"])

Measurement = Literal["access", "safety", "meter", "elder", "device_status"]
Fn = Literal["mean", "max", "min", "sum", "count", "last"]
Window = Literal["1m", "5m", "15m", "1h", "6h", "1d"]
GroupBy = Literal["grid", "building", "unit"]
Place = Annotated[str | None, Query(max_length=324)]


def _range(context: Context, start: datetime | None, end: datetime | None) -> tuple[int, int]:
    end_ns = ns_of(end) if end else context.clock_ns()
    start_ns = ns_of(start) if start else end_ns - int(timedelta(days=1).total_seconds() * 1e9)
    return start_ns, end_ns


async def _answer(context: Context, query: HistoryQuery) -> ReadingsPublic:
    settings = context.settings
    try:
        check(query, context.gateway.policy, max_range_s=settings.api_max_range_s,
              max_points=settings.api_max_points)  # fmt: skip
    except HistoryError as exc:
        raise Problem(422, str(exc)) from exc
    k = settings.api_k_anonymity
    cells, suppressed = await run(context.influx, query, k=k, retention=settings.influx_retention)
    data = []
    for c in cells:
        when = at(c.time_ns)
        assert when is not None
        data.append(Cell(time=when, place=c.place, value=c.value, suppressed=c.suppressed))
    person = query.measurement in PERSON_RELATED
    return ReadingsPublic(
        measurement=query.measurement,
        field=query.field,
        fn=query.fn,
        window=query.window,
        group_by=query.group_by,
        person_related=person,
        k=k if person else None,
        suppressed=suppressed,
        data=data,
        count=len(data),
    )


@router.get("/readings", response_model=ReadingsPublic)
async def readings(
    context: Context,
    caller: Caller,
    measurement: Measurement,
    field: Annotated[str, Query(pattern=r"^[a-z][a-z0-9_]{0,63}$")],
    fn: Fn = "mean",
    window: Window = "1h",
    start: Instant | None = None,
    end: Instant | None = None,
    place: Place = None,
    group_by: GroupBy | None = None,
) -> ReadingsPublic:
    """`fn(field)` per `window` over [start, end) (default: the last day) in the caller's
    places, optionally per grid, building or unit. Access and elder cells describing fewer
    than k persons are suppressed."""
    start_ns, end_ns = _range(context, start, end)
    query = HistoryQuery(
        measurement, field, fn, start_ns, end_ns, window, scoped_place(caller, place), group_by
    )
    return await _answer(context, query)


@router.get("/aggregates/{name}", response_model=ReadingsPublic)
async def aggregate(
    context: Context,
    caller: Caller,
    name: Literal["entries", "elder_worn"],
    window: Window = "1h",
    start: Instant | None = None,
    end: Instant | None = None,
    place: Place = None,
    group_by: GroupBy = "building",
) -> ReadingsPublic:
    """`entries`: granted entries per place and window; `elder_worn`: elder wearables worn.
    Both are about people: cells under k persons are suppressed."""
    measurement, field, fn, kind, only_true, persons = PRESETS[name]
    start_ns, end_ns = _range(context, start, end)
    query = HistoryQuery(
        measurement, field, fn, start_ns, end_ns, window, scoped_place(caller, place),
        group_by, kind=kind, only_true=only_true, value_is_persons=persons,
    )  # fmt: skip
    return await _answer(context, query)
