"""Readings history from InfluxDB, scoped by place tags, with k-anonymity for what describes
people (R3.4).

Only what is stored is read, and it is already de-identified; on top of that a **person-related
aggregate** — access events, elder wearables — is checked cell by cell: a cell that describes
fewer than k persons is *suppressed* (no value, `suppressed: true`), never rounded or noised,
and the response says how many were. Persons are counted conservatively:

* access: the distinct resident pseudonyms and the distinct card pseudonyms of the cell, the
  larger of the two (a person using both counts once; an event with neither — a QR visitor —
  counts nobody, so a cell of only those is suppressed);
* elder: the distinct wearables reporting in the cell (one wearer each).

Queries are built from allow-listed names only: the measurement and function from fixed sets,
the field from the privacy policy's kept fields, place codes as quoted literals.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from devices.places import KEY_SEP
from gateway.storage.influx_v1 import InfluxV1Client, quote_ident, quote_literal
from gateway.storage.retention import qualified
from privacy.policy import Policy

NS = 1_000_000_000
WINDOWS = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "6h": 21600, "1d": 86400}
FUNCTIONS = ("mean", "max", "min", "sum", "count", "last")
MEASUREMENTS = {"access": "access", "safety": "safety", "meter": "meter", "elder": "elder",
                "device_status": "status"}  # fmt: skip
PERSON_RELATED = frozenset({"access", "elder"})
GROUP_TAGS = {"grid": ("community", "grid"), "building": ("community", "grid", "building"),
              "unit": ("community", "grid", "building", "unit")}  # fmt: skip
_PLACE_TAGS = ("community", "grid", "building", "unit")


class HistoryError(ValueError):
    """A query the API will not run; the message says what to change."""


def queryable_fields(policy: Policy, measurement: str) -> frozenset[str]:
    """Fields stored as they are and free of text (numbers and flags), plus `schema` (on
    every point: count(schema) counts events)."""
    family = policy.families[MEASUREMENTS[measurement]]
    kept = {name for name, spec in family.fields.items() if spec.kept_only}
    return frozenset(kept | {"schema"})


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    measurement: str
    field: str
    fn: str
    start_ns: int
    end_ns: int
    window: str
    places: tuple[str, ...]
    group_by: str | None = None
    kind: str | None = None
    only_true: str | None = None  # a boolean field that must be true (elder `worn`)
    value_is_persons: bool = False  # the value is the person count itself (devices worn)


@dataclass(frozen=True, slots=True)
class HistoryCell:
    time_ns: int
    place: str
    value: float | None
    suppressed: bool


def check(query: HistoryQuery, policy: Policy, *, max_range_s: float, max_points: int) -> None:
    if query.measurement not in MEASUREMENTS:
        raise HistoryError(f"measurement is one of {', '.join(MEASUREMENTS)}")
    if query.field not in queryable_fields(policy, query.measurement):
        raise HistoryError(
            f"{query.measurement} has no queryable field {query.field!r}; it has "
            + ", ".join(sorted(queryable_fields(policy, query.measurement)))
        )
    if query.fn not in FUNCTIONS or query.window not in WINDOWS:
        raise HistoryError("unknown function or window")
    span = query.end_ns - query.start_ns
    if span <= 0:
        raise HistoryError("start must be before end")
    if span > max_range_s * NS:
        raise HistoryError(f"a history spans at most {int(max_range_s // 86400)} days")
    cells = -(-span // (WINDOWS[query.window] * NS))
    if cells > max_points:
        raise HistoryError(f"{cells} windows: choose a wider window or a shorter range")


def _where(query: HistoryQuery) -> str:
    scopes = []
    for key in query.places:
        parts = key.split(KEY_SEP)
        conds = [
            f"{tag} = {quote_literal(code)}" for tag, code in zip(_PLACE_TAGS, parts, strict=False)
        ]
        if len(parts) == 5:  # a room: a field, where the policy keeps it
            conds.append(f"room = {quote_literal(parts[4])}")
        scopes.append("(" + " AND ".join(conds) + ")")
    clauses = [f"time >= {query.start_ns}", f"time < {query.end_ns}",
               "(" + " OR ".join(scopes) + ")"]  # fmt: skip
    if query.kind:
        clauses.append(f"kind = {quote_literal(query.kind)}")
    if query.only_true:
        clauses.append(f"{quote_ident(query.only_true)} = true")
    return " AND ".join(clauses)


def _group(query: HistoryQuery, *extra: str) -> str:
    tags = GROUP_TAGS[query.group_by] if query.group_by else ()
    names = ", ".join([f"time({query.window})", *(quote_ident(t) for t in (*tags, *extra))])
    return f"GROUP BY {names}"


def _source(query: HistoryQuery, retention: bool) -> str:
    return qualified(query.measurement) if retention else quote_ident(query.measurement)


def _place_of(row: dict[str, object], query: HistoryQuery) -> str:
    tags = GROUP_TAGS[query.group_by] if query.group_by else ()
    return KEY_SEP.join(str(row.get(t) or "") for t in tags)


async def run(
    influx: InfluxV1Client, query: HistoryQuery, *, k: int, retention: bool = True
) -> tuple[list[HistoryCell], int]:
    """The cells of `query` (time, then place) and how many were suppressed."""
    if not query.places:
        return [], 0
    where, source = _where(query), _source(query, retention)
    values: dict[tuple[int, str], float | None] = {}
    if not query.value_is_persons:
        rows = await influx.query(
            f"SELECT {query.fn}({quote_ident(query.field)}) AS v FROM {source} WHERE {where}"
            f" {_group(query)} fill(none)"
        )
        for r in rows:
            v = r.get("v")
            number = float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None
            values[(int(str(r["time"])), _place_of(r, query))] = number
    persons: dict[tuple[int, str], int] = {}
    if query.measurement in PERSON_RELATED:
        persons = await _persons(influx, query, source, where)
    cells: list[HistoryCell] = []
    suppressed = 0
    keys = set(values) | (set(persons) if query.value_is_persons else set())
    for key in sorted(keys):
        n = persons.get(key, 0)
        value = float(n) if query.value_is_persons else values.get(key)
        if query.measurement in PERSON_RELATED and n < k:
            cells.append(HistoryCell(key[0], key[1], None, True))
            suppressed += 1
        else:
            cells.append(HistoryCell(key[0], key[1], value, False))
    return cells, suppressed


async def _persons(
    influx: InfluxV1Client, query: HistoryQuery, source: str, where: str
) -> dict[tuple[int, str], int]:
    out: dict[tuple[int, str], int] = defaultdict(int)
    if query.measurement == "access":
        rows = await influx.query(
            f'SELECT count(distinct("resident_ref")) AS r, count(distinct("card_ref")) AS c'
            f" FROM {source} WHERE {where} {_group(query)} fill(none)"
        )
        for r in rows:
            n = max(_int(r.get("r")), _int(r.get("c")))
            out[(int(str(r["time"])), _place_of(r, query))] = n
        return out
    rows = await influx.query(
        f"SELECT count({quote_ident(query.field)}) AS n FROM {source} WHERE {where}"
        f" {_group(query, 'device')} fill(none)"
    )
    for r in rows:
        if _int(r.get("n")) > 0:
            out[(int(str(r["time"])), _place_of(r, query))] += 1
    return out


def _int(value: object) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def presets() -> Sequence[str]:
    return tuple(PRESETS)


# named person-related aggregates a screen asks for: (measurement, field, fn, kind, only_true,
# value is the person count)
PRESETS: dict[str, tuple[str, str, str, str | None, str | None, bool]] = {
    "entries": ("access", "schema", "count", "entry_granted", None, False),
    "elder_worn": ("elder", "worn", "count", None, "worn", True),
}


__all__ = [
    "FUNCTIONS",
    "MEASUREMENTS",
    "PERSON_RELATED",
    "PRESETS",
    "WINDOWS",
    "HistoryCell",
    "HistoryError",
    "HistoryQuery",
    "check",
    "queryable_fields",
    "run",
]
