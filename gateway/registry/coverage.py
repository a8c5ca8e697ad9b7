"""Places where an alert would reach nobody, found when a fleet file is imported.

An alert is routed to the active members responsible for its place — scoped to it or to a
place enclosing it — who hold the roles the routing policy names, on a channel delivery can
send on (`DELIVERABLE_CHANNEL_KINDS`). A building with devices and nobody responsible is an
alert nobody hears about; the router reports it when the alert happens (too late), so the
importer says it when the file goes in.

The routing policy lives in `gateway.alerts`, which builds on this package, so it is handed in
as plain `Audience`s: which alerts go first to which roles. Without them, only "nobody at all"
is checked. Findings are grouped by place — the highest place whose every place with devices
has the same gap — and capped, so that a file with no property duty anywhere gets one line,
not one per unit.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from devices.places import KEY_SEP, LEVELS, PlaceLevel
from gateway.registry._models import Device, MemberChannel, MemberRow, MemberScope, Place
from gateway.registry.identifiers import shown_key, shown_place_name
from gateway.registry.queries import chunks
from gateway.registry.records import DELIVERABLE_CHANNEL_KINDS, DELIVERABLE_TEXT, Role

MAX_WARNINGS = 20
_UNIT_DEPTH = PlaceLevel.UNIT.depth  # nobody is scoped to a room: a room is its unit's


@dataclass(frozen=True, slots=True)
class Audience:
    """Alerts told first to the same roles: ``Audience("severity IV, device_offline",
    (Role.PROPERTY_DUTY,))``; the roles in the policy's order, as warnings name them."""

    alerts: str
    roles: tuple[Role, ...]


@dataclass(frozen=True, slots=True)
class _Gap:
    key: str
    whole: bool  # the place and everything under it; else the place's own devices only
    audience: Audience | None  # None: nobody at all is responsible


def uncovered_places(
    s: Session,
    communities: Collection[str],
    audiences: Sequence[Audience] = (),
    *,
    limit: int = MAX_WARNINGS,
) -> list[str]:
    """One line per place (with devices) of `communities` where some alert reaches no
    member, at most `limit` lines plus one "… and N more"."""
    devices = _device_places(s, communities)
    if not devices:
        return []
    held = _held_roles(s, communities)
    tree = _Tree(devices)

    def lacking(roles: frozenset[Role]) -> Callable[[str], bool]:
        """Whether no member responsible for a place holds any of `roles`."""
        return lambda key: not any(held.get(k, frozenset()) & roles for k in _ancestors(key))

    nobody = tree.gaps(lacking(frozenset(Role)))
    gaps = [_Gap(k, whole, None) for k, whole in nobody]
    silent = {k for k, whole in nobody if whole}
    for audience in audiences:
        for key, whole in tree.gaps(lacking(frozenset(audience.roles))):
            if not any(k in silent for k in _ancestors(key)):
                gaps.append(_Gap(key, whole, audience))
    by_place: dict[tuple[str, bool], list[Audience | None]] = defaultdict(list)
    for gap in gaps:
        by_place[gap.key, gap.whole].append(gap.audience)
    names = _names(s, [key for key, _ in by_place])
    lines = [
        _line(key, whole, names.get(key, ""), tree, found)
        for (key, whole), found in sorted(by_place.items(), key=lambda item: _order(item[0]))
    ]
    if len(lines) > limit:
        more = len(lines) - limit
        lines = [*lines[:limit], f"… and {more} more place(s)"]
    return lines


def _line(key: str, whole: bool, name: str, tree: _Tree, found: Sequence[Audience | None]) -> str:
    code = key.rsplit(KEY_SEP, 1)[-1]
    place = shown_key(key) + (f" {shown_place_name(name)}" if name and name != code else "")
    n_devices, n_places = tree.count(key, whole)
    where = f"{n_devices} device(s)"
    if whole and n_places > 1:
        where += f" in {n_places} places"
    elif not whole:  # places under it have someone: its own devices have not
        where += f" at the {LEVELS[key.count(KEY_SEP)].value} itself"
    if None in found:
        return (
            f"{place} ({where}): nobody is responsible there (no active member with an"
            f" {_channels()} channel), so no alert there reaches a member"
        )
    parts = [f"no {_either(a.roles)} for {a.alerts} alerts" for a in found if a is not None]
    return f"{place} ({where}): {'; '.join(parts)}"


def _either(roles: Sequence[Role]) -> str:
    """``unit_head, building_head or grid_worker``."""
    names = [r.value for r in roles]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def _channels() -> str:
    return DELIVERABLE_TEXT


def _order(item: tuple[str, bool]) -> tuple[list[str], bool]:
    key, whole = item
    return key.split(KEY_SEP), whole


def _ancestors(key: str) -> list[str]:
    """`key` and every place enclosing it, innermost first."""
    parts = key.split(KEY_SEP)
    return [KEY_SEP.join(parts[:i]) for i in range(len(parts), 0, -1)]


def _alert_place(key: str) -> str:
    """Where responsibility for a device's place is decided: its unit for a room."""
    return KEY_SEP.join(key.split(KEY_SEP)[:_UNIT_DEPTH])


class _Tree:
    """The places with devices (rooms folded into their units) and the places above them."""

    def __init__(self, devices: dict[str, int]) -> None:
        self.devices = devices  # alert place → devices there
        self.children: dict[str, set[str]] = defaultdict(set)
        self.roots: set[str] = set()
        for key in devices:
            chain = _ancestors(key)
            self.roots.add(chain[-1])
            for child, parent in pairwise(chain):
                self.children[parent].add(child)

    def under(self, key: str) -> Iterable[str]:
        """Places with devices in `key`'s subtree, `key` included."""
        stack = [key]
        while stack:
            node = stack.pop()
            if node in self.devices:
                yield node
            stack.extend(self.children.get(node, ()))

    def count(self, key: str, whole: bool) -> tuple[int, int]:
        places = list(self.under(key)) if whole else [key]
        return sum(self.devices[p] for p in places), len(places)

    def gaps(self, lacks: Callable[[str], bool]) -> list[tuple[str, bool]]:
        """The highest places whose every place with devices `lacks` (whole subtrees), and
        places with devices that lack it while places under them do not (`whole` False)."""
        out: list[tuple[str, bool]] = []

        def visit(node: str) -> None:
            if all(lacks(p) for p in self.under(node)):
                out.append((node, True))
                return
            if node in self.devices and lacks(node):
                out.append((node, False))
            for child in sorted(self.children.get(node, ())):
                visit(child)

        for root in sorted(self.roots):
            visit(root)
        return out


def _device_places(s: Session, communities: Collection[str]) -> dict[str, int]:
    stmt = (
        select(Device.place_id, func.count())
        .join(Place, Place.id == Device.place_id)
        .where(Place.community.in_(sorted(communities)))
        .group_by(Device.place_id)
    )
    out: dict[str, int] = defaultdict(int)
    for key, n in s.execute(stmt):
        out[_alert_place(key)] += n
    return dict(out)


def _held_roles(s: Session, communities: Collection[str]) -> dict[str, frozenset[Role]]:
    """Place key → roles of the active members scoped there who can be told (a channel
    delivery sends on)."""
    in_communities = select(Place.id).where(Place.community.in_(sorted(communities)))
    scoped = list(
        s.execute(
            select(MemberScope.place_id, MemberRow.id, MemberRow.role)
            .join(MemberRow, MemberRow.id == MemberScope.member_id)
            .where(MemberRow.active.is_(True), MemberScope.place_id.in_(in_communities))
        )
    )
    reachable: set[str] = set()
    for part in chunks(sorted({mid for _, mid, _ in scoped})):
        reachable.update(
            s.scalars(
                select(MemberChannel.member_id).where(
                    MemberChannel.member_id.in_(part),
                    MemberChannel.kind.in_(list(DELIVERABLE_CHANNEL_KINDS)),
                )
            )
        )
    held: dict[str, set[Role]] = defaultdict(set)
    for place, mid, role in scoped:
        if mid in reachable:
            held[place].add(role)
    return {k: frozenset(v) for k, v in held.items()}


def _names(s: Session, keys: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in chunks(sorted(set(keys))):
        stmt = select(Place.id, Place.name).where(Place.id.in_(part))
        out.update((key, name) for key, name in s.execute(stmt))
    return out
