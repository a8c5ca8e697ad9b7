from __future__ import annotations

from adapters.registry import AdapterRegistry, Route, default_registry, topic_matches
from devices.families import Channel, Family
from devices.location import Location
from devices.reading import Reading
from devices.topics import build_topic, parse_topic
from privacy.baseline import BaselinePrivacy


def test_topic_grammar_round_trip() -> None:
    topic = build_topic("c1", Family.ELDER, "w-7", Channel.EVENT)
    assert topic == "gridgate/v1/c1/elder/w-7/event"
    parts = parse_topic(topic)
    assert (parts.community, parts.family, parts.device_id, parts.channel) == (
        "c1",
        Family.ELDER,
        "w-7",
        Channel.EVENT,
    )


def test_mqtt_filter_matching() -> None:
    assert topic_matches("a/+/c", "a/b/c")
    assert not topic_matches("a/+/c", "a/b/d")
    assert topic_matches("a/#", "a/b/c/d")
    assert topic_matches("a/#", "a")  # '#' also matches the parent level
    assert not topic_matches("a/+", "a/b/c")
    assert not topic_matches("a/b/c", "a/b")


def test_registry_picks_first_matching_route() -> None:
    registry = default_registry()
    assert registry.adapter_for("gridgate/v1/c/meter/m-1/telemetry").name == "gridgate_json"
    empty = AdapterRegistry([Route("vendor/x/#", registry.routes[0].adapter)])
    try:
        empty.adapter_for("gridgate/v1/c/meter/m-1/telemetry")
    except Exception as exc:
        assert getattr(exc, "reason", None) == "no_adapter"
    else:
        raise AssertionError("expected no_adapter")


def _access(values: dict[str, object]) -> Reading:
    return Reading("g-1", Family.ACCESS, Channel.EVENT, "entry_granted", 1, Location("c"), values)


def test_baseline_privacy_drops_identifiers_biometrics_and_unknown_fields() -> None:
    privacy = BaselinePrivacy()
    raw = {
        "method": "face",
        "granted": True,
        "person_name": "张三",
        "id_number": "11010519491231002X",
        "phone": "13800138000",
        "plate": "京A12345",
        "face_feature": "AAAA",
        "idCardNo": "440524188001010014",
    }
    out = privacy.apply(_access(raw))
    assert dict(out.values) == {"method": "face", "granted": True}
    assert privacy.dropped == {"personal": 5, "unknown": 1}


def test_baseline_privacy_keeps_health_but_not_coordinates() -> None:
    privacy = BaselinePrivacy()
    r = Reading(
        "w-1",
        Family.ELDER,
        Channel.TELEMETRY,
        "telemetry",
        1,
        Location("c"),
        {"heart_rate_bpm": 70.0, "latitude": 31.2, "longitude": 121.4, "inside_geofence": True},
    )
    assert dict(privacy.apply(r).values) == {"heart_rate_bpm": 70.0, "inside_geofence": True}


def test_clean_reading_passes_unchanged() -> None:
    r = _access({"method": "card", "granted": False})
    assert BaselinePrivacy().apply(r) is r
