from __future__ import annotations

from adapters.registry import AdapterRegistry, Route, default_registry, topic_matches
from devices.families import Channel, Family
from devices.topics import build_topic, parse_topic


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
