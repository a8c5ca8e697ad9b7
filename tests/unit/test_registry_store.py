"""Registry lookups: devices with locations, who is responsible for a place, liveness, consent."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from devices.location import Location
from devices.places import PlaceLevel, location_key
from gateway.registry import Registry, Role
from gateway.registry.records import ChannelKind
from tests.support.registry_files import small_registry


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return small_registry(tmp_path)


def ids(registry: Registry, location: Location, roles: list[Role] | None = None) -> list[str]:
    return [m.id for m in registry.members_for(location, roles)]


COMMUNITY_STAFF = ["m-desk", "m-street", "m-prop"]  # in Role order: duty desk, street, property


def test_sqlite_is_tuned_and_its_directory_created(tmp_path: Path) -> None:
    registry = Registry.open(f"sqlite:///{tmp_path / 'deep' / 'dir' / 'r.sqlite3'}")
    with registry.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 10_000
    assert registry.device_count() == 0 and registry.all_devices() == []
    registry.close()


def test_all_devices_match_single_lookups(registry: Registry) -> None:
    devices = registry.all_devices()
    assert registry.device_count() == len(devices) == 7
    assert [d.device_id for d in devices] == sorted(d.device_id for d in devices)
    assert all(registry.device(d.device_id) == d for d in devices)
    detail = registry.device_detail("em-123456789012")
    assert detail is not None
    assert detail.place_names == ("幸福小区", "第一网格", "3号楼", "2单元", "1201")


def test_members_for_a_room_are_its_unit_building_grid_and_community(registry: Registry) -> None:
    room = Location("xf", "g01", "b03", "u2", "1201")
    # Innermost first; the inactive former unit head (m-old) and b03's other unit are absent.
    assert ids(registry, room) == ["m-uh-b03u2", "m-bh-b03", "m-gc", "m-gw-g01", *COMMUNITY_STAFF]
    assert ids(registry, Location("xf", "g01", "b03", "u2")) == ids(registry, room)
    [unit_head] = registry.members_for(room, [Role.UNIT_HEAD])
    assert unit_head.name == "李建国" and unit_head.scopes == (Location("xf", "g01", "b03", "u2"),)
    assert [c.kind for c in unit_head.channels] == [ChannelKind.MQTT]


def test_members_for_a_building_exclude_its_unit_heads_and_other_buildings(
    registry: Registry,
) -> None:
    assert ids(registry, Location("xf", "g01", "b01")) == [
        "m-bh-b01",
        "m-gc",
        "m-gw-g01",
        *COMMUNITY_STAFF,
    ]
    assert ids(registry, Location("xf", "g01", "b01", "u1", "0102")) == [
        "m-uh-b01u1", "m-bh-b01", "m-gc", "m-gw-g01", *COMMUNITY_STAFF,
    ]  # fmt: skip


def test_members_for_a_grid_and_the_community(registry: Registry) -> None:
    assert ids(registry, Location("xf", "g02")) == ["m-gc", "m-gw-g02", *COMMUNITY_STAFF]
    assert ids(registry, Location("xf", "g02", "b05", "u1", "0101")) == [
        "m-gc",
        "m-gw-g02",
        *COMMUNITY_STAFF,
    ]
    assert ids(registry, Location("xf")) == COMMUNITY_STAFF
    assert ids(registry, Location("xf"), [Role.DUTY_DESK, Role.STREET_OFFICE]) == [
        "m-desk",
        "m-street",
    ]
    assert ids(registry, Location("elsewhere")) == []
    assert (
        ids(registry, Location("xf", "g09", "b99")) == COMMUNITY_STAFF
    )  # unknown parts: the community's


def test_members_for_a_location_without_its_grid(registry: Registry) -> None:
    """An adapter may know the building but not the grid: the registry fills it in."""
    assert ids(registry, Location("xf", "", "b03", "u2")) == ids(
        registry, Location("xf", "g01", "b03", "u2")
    )
    assert location_key(Location("xf", "", "b03")) is None


def test_bulk_liveness_updates_keep_the_newest(registry: Registry) -> None:
    assert registry.liveness("sd-1201") == registry.liveness("gate-main")
    live = registry.liveness("sd-1201")
    assert live is not None and (live.online, live.last_seen_ns) == (None, None)
    registry.set_liveness(
        [
            ("sd-1201", True, 2_000),
            ("gate-main", True, 2_000),
            ("gate-main", False, 3_000),
            ("gate-b03", True, 5_000),
            ("not-registered", True, 1),
        ]
    )
    registry.set_liveness([("gate-b03", False, 4_000)])  # older than what is stored: ignored
    states = {d: registry.liveness(d) for d in ("sd-1201", "gate-main", "gate-b03")}
    assert {d: (s.online, s.last_seen_ns) for d, s in states.items() if s} == {
        "sd-1201": (True, 2_000),
        "gate-main": (False, 3_000),
        "gate-b03": (True, 5_000),
    }
    assert registry.liveness("not-registered") is None
    counts = registry.counts()
    assert (counts.devices_online, counts.devices_offline) == (2, 1)
    registry.set_liveness([])


def test_many_liveness_updates_in_one_call(registry: Registry) -> None:
    devices = [d.device_id for d in registry.all_devices()]
    registry.set_liveness([(d, i % 2 == 0, 10_000 + i) for i in range(1000) for d in devices])
    assert registry.counts().devices_online + registry.counts().devices_offline == len(devices)
    live = registry.liveness(devices[0])
    assert live is not None and live.last_seen_ns == 10_999


def test_face_consent_grant_and_withdrawal(registry: Registry) -> None:
    assert registry.face_consent("h-b03-u2-0101") and not registry.face_consent("h-b03-u2-1201")
    assert registry.consented_households() == {"h-b03-u2-0101"}
    assert registry.set_face_consent("h-b03-u2-1201", True, at_ns=2_000_000_000_000_000_000)
    assert registry.face_consent("h-b03-u2-1201")
    # A withdrawal applies at once, even one stamped earlier than the grant.
    assert not registry.set_face_consent("h-b03-u2-1201", False, at_ns=1_000)
    assert not registry.face_consent("h-b03-u2-1201")
    # A grant older than the last change is stale and ignored.
    assert not registry.set_face_consent("h-b03-u2-1201", True, at_ns=500)
    household = registry.household("h-b03-u2-1201")
    assert household is not None and household.face_consent_ns == 1_000 and household.elder_alone
    assert not registry.face_consent("no-such-household")
    with pytest.raises(KeyError):
        registry.set_face_consent("no-such-household", True, at_ns=1)


def test_households_and_place_tree(registry: Registry) -> None:
    households = registry.households()
    assert [h.id for h in households] == sorted(h.id for h in households)
    assert {h.id for h in households if h.elder_alone} == {"h-b03-u2-1201", "h-b05-u1-0101"}
    [community] = registry.place_tree()
    assert (community.code, community.name, community.level) == (
        "xf",
        "幸福小区",
        PlaceLevel.COMMUNITY,
    )
    assert [g.name for g in community.children] == ["第一网格", "第二网格"]
    b03 = community.children[0].children[1]
    assert (b03.key, [u.code for u in b03.children]) == ("xf/g01/b03", ["u1", "u2"])
    counts = registry.counts()
    assert counts.places_by_level == {
        "community": 1,
        "grid": 2,
        "building": 3,
        "unit": 4,
        "room": 6,
    }
    assert counts.members_by_role["unit_head"] == 4 and counts.face_consent == 1


def test_contact_targets_stay_out_of_reprs(registry: Registry) -> None:
    member = registry.member("m-gw-g01")
    assert member is not None and "s3cret" in member.channels[1].target
    assert "s3cret" not in repr(member)
