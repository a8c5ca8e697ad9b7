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
the field from the privacy policy's kept fields, place codes and device ids as quoted literals.
The HTTP API and `gridgate query` both run them through here, so the terminal is no way
around the suppression.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from devices.places import KEY_SEP
from gateway.storage.influx_v1 import quote_ident, quote_literal
from gateway.storage.retention import qualified
from gateway.storage.store import InfluxStore
from privacy.policy import Policy

NS = 1_000_000_000
WINDOWS = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "6h": 21600, "1d": 86400}
WHOLE_RANGE = ""  # the window of a query that is one cell over its whole range
FUNCTIONS = ("mean", "max", "min", "sum", "count", "last")
MEASUREMENTS = {"access": "access", "safety": "safety", "meter": "meter", "elder": "elder",
                "device_status": "status"}  # fmt: skip
PERSON_RELATED = frozenset({"access", "elder"})
GROUP_TAGS = {"community": ("community",), "grid": ("community", "grid"),
              "building": ("community", "grid", "building"),
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
    window: str  # a WINDOWS key, or WHOLE_RANGE
    places: tuple[str, ...]
    group_by: str | None = None
    kind: str | None = None
    device: str | None = None  # one device within the places
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
    if query.fn not in FUNCTIONS or (query.window not in WINDOWS and query.window != WHOLE_RANGE):
        raise HistoryError("unknown function or window")
    span = query.end_ns - query.start_ns
    if span <= 0:
        raise HistoryError("start must be before end")
    if span > max_range_s * NS:
        raise HistoryError(f"a history spans at most {int(max_range_s // 86400)} days")
    cells = -(-span // (WINDOWS[query.window] * NS)) if query.window else 1
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
    if query.device:
        clauses.append(f"device = {quote_literal(query.device)}")
    if query.only_true:
        clauses.append(f"{quote_ident(query.only_true)} = true")
    return " AND ".join(clauses)


def _group(query: HistoryQuery, *extra: str) -> str:
    tags = GROUP_TAGS[query.group_by] if query.group_by else ()
    times = [f"time({query.window})"] if query.window else []
    names = ", ".join([*times, *(quote_ident(t) for t in (*tags, *extra))])
    return f" GROUP BY {names}" if names else ""


def source(measurement: str, *, retention: bool = True) -> str:
    """The InfluxQL name to select from: in its own retention policy ("rp_elder"."elder")
    when the gateway writes there (settings.influx_retention), else in the default one."""
    return qualified(measurement) if retention else quote_ident(measurement)


def statements(query: HistoryQuery, *, retention: bool = True) -> list[str]:
    """The InfluxQL `run` sends for `query`: its values (unless the value is the person
    count), then, for a person-related measurement, the persons of each cell."""
    if not query.places:
        return []
    where, src = _where(query), source(query.measurement, retention=retention)
    out = []
    if not query.value_is_persons:
        out.append(
            f"SELECT {query.fn}({quote_ident(query.field)}) AS v FROM {src} WHERE {where}"
            f"{_group(query)} fill(none)"
        )
    if query.measurement in PERSON_RELATED:
        out.append(_persons_statement(query, src, where))
    return out


def _place_of(row: dict[str, object], query: HistoryQuery) -> str:
    tags = GROUP_TAGS[query.group_by] if query.group_by else ()
    return KEY_SEP.join(str(row.get(t) or "") for t in tags)


async def run(
    influx: InfluxStore, query: HistoryQuery, *, k: int, retention: bool = True
) -> tuple[list[HistoryCell], int]:
    """The cells of `query` (time, then place) and how many were suppressed."""
    todo = statements(query, retention=retention)
    if not todo:
        return [], 0
    values: dict[tuple[int, str], float | None] = {}
    if not query.value_is_persons:
        rows = await influx.query(todo.pop(0))
        for r in rows:
            v = r.get("v")
            number = float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None
            values[(int(str(r["time"])), _place_of(r, query))] = number
    persons: dict[tuple[int, str], int] = {}
    if query.measurement in PERSON_RELATED:
        persons = await _persons(influx, query, todo.pop(0))
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


def _persons_statement(query: HistoryQuery, src: str, where: str) -> str:
    if query.measurement == "access":
        return (
            f'SELECT count(distinct("resident_ref")) AS r, count(distinct("card_ref")) AS c'
            f" FROM {src} WHERE {where}{_group(query)} fill(none)"
        )
    return (
        f"SELECT count({quote_ident(query.field)}) AS n FROM {src} WHERE {where}"
        f"{_group(query, 'device')} fill(none)"
    )


async def _persons(
    influx: InfluxStore, query: HistoryQuery, statement: str
) -> dict[tuple[int, str], int]:
    out: dict[tuple[int, str], int] = defaultdict(int)
    rows = await influx.query(statement)
    if query.measurement == "access":
        for r in rows:
            n = max(_int(r.get("r")), _int(r.get("c")))
            out[(int(str(r["time"])), _place_of(r, query))] = n
        return out
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
    "WHOLE_RANGE",
    "WINDOWS",
    "HistoryCell",
    "HistoryError",
    "HistoryQuery",
    "check",
    "queryable_fields",
    "run",
    "source",
    "statements",
]
