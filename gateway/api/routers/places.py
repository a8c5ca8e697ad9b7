"""The place tree within the caller's scopes, and the grid members responsible there."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from devices.location import Location
from devices.places import location_key, location_of
from gateway.api.deps import Caller, Context
from gateway.api.schemas import MemberPublic, MembersPublic, PlacePublic, PlacesPublic
from gateway.registry import PlaceNode
from gateway.registry.records import ROLE_LABELS

router = APIRouter(tags=["places"])


def _public(node: PlaceNode, rooms: bool) -> PlacePublic:
    children = [_public(c, rooms) for c in node.children if rooms or c.level.value != "room"]
    return PlacePublic(
        key=node.key, level=node.level.value, code=node.code, name=node.name, children=children
    )


def _subtrees(nodes: list[PlaceNode], scopes: tuple[str, ...]) -> list[PlaceNode]:
    """The nodes whose key is one of `scopes` (each scope's own subtree)."""
    found: list[PlaceNode] = []
    stack = list(nodes)
    while stack:
        node = stack.pop()
        if node.key in scopes:
            found.append(node)
        else:
            stack.extend(
                c
                for c in node.children
                if any(s == c.key or s.startswith(c.key + "/") for s in scopes)
            )
    return sorted(found, key=lambda n: n.key)


@router.get("/places", response_model=PlacesPublic)
def places(
    context: Context, caller: Caller, rooms: Annotated[bool, Query()] = False
) -> PlacesPublic:
    """The caller's places with names, down to units (rooms on request)."""
    trees = _subtrees(context.registry.place_tree(), caller.scopes)
    data = [
        _public(t, rooms).model_copy(update={"path": list(context.registry.place_names(t.key))})
        for t in trees
    ]
    return PlacesPublic(data=data, count=len(data))


@router.get("/members", response_model=MembersPublic)
def members(context: Context, caller: Caller) -> MembersPublic:
    """Members responsible for the caller's places or for places inside them: ids, roles and
    places, no contact details."""
    found: dict[str, MemberPublic] = {}
    for scope in caller.scopes:
        location = location_of(scope)
        around = context.registry.members_for(location)
        inside = context.registry.members_within(location)
        for m in around + inside:
            found[m.id] = MemberPublic(
                id=m.id,
                name=m.name,
                role=m.role.value,
                role_label=ROLE_LABELS[m.role],
                places=[p for p in (_key(s) for s in m.scopes) if caller.covers(p)],
                active=m.active,
            )
    data = sorted(found.values(), key=lambda m: m.id)
    return MembersPublic(data=data, count=len(data))


def _key(location: Location) -> str:
    return location_key(location) or ""
