from __future__ import annotations

import pytest

from privacy.identifiers import find_identifier
from privacy.redact import MAX_TOPIC, REDACTED, redact_topic


@pytest.mark.parametrize(
    "topic",
    [
        "gridgate/v1/xf/meter/123456789012/telemetry",  # a DL/T 645 address: 12 digits
        "gridgate/v1/xf-2/access/ACS2024051234/event",
        "gridgate/v1/c1/elder/862033300001226/status",  # an IMEI: 15 digits
        "gridgate/raw/xf/cjt188/conc-b07",
        "gridgate/raw/xf/dlt645/conc:b07.1",
        "vendor/band/xf/862033300001226/up",  # an IMEI: 15 digits
        "gridgate/raw/xf/cjt188/00000012345678",  # a CJ/T 188 address: 14 digits
        "vendor/acs/xf/ACS2024051234/event",
        "/leading/and//empty/levels",
    ],
)
def test_device_topics_pass_unchanged(topic: str) -> None:
    assert redact_topic(topic) == topic


PERSONAL = [
    ("gridgate/v1/xf/access/张三/event", "张三"),
    ("gridgate/v1/xf/access/13812348000/event", "13812348000"),
    ("gridgate/v1/xf/access/u-13812348000/event", "13812348000"),
    ("gridgate/v1/xf/access/id-13812345678/event", "13812345678"),
    ("gridgate/v1/xf/access/913812345678/event", "913812345678"),  # a stray leading digit
    ("gridgate/v1/xf/access/+8613812345678/event", "13812345678"),
    ("gridgate/v1/xf/access/138-1234-5678/event", "138-1234-5678"),
    ("gridgate/v1/xf/access/11010519491231002X/event", "11010519491231002X"),
    ("gridgate/v1/xf/access/110105194912310021/event", "110105194912310021"),  # bad checksum
    ("gridgate/v1/xf/access/330106-19491231-002X/event", "330106-19491231-002X"),
    ("gridgate/v1/xf/access/33010619491231002x-room/event", "33010619491231002x"),
    ("gridgate/v1/13812345678/access/d-1/event", "13812345678"),  # the community level
    ("vendor/acs/xf/京A12345/event", "京A12345"),
    ("vendor/acs/xf/id-13812345678/event", "13812345678"),
    ("vendor/acs/xf/913812345678/event", "913812345678"),
    ("vendor/acs/xf/330106-19491231-002X/event", "330106-19491231-002X"),
    ("vendor/acs/xf/33010619491231002xroom/event", "33010619491231002x"),
    ("vendor/acs/13812345678/ACS1/event", "13812345678"),
    ("gridgate/raw/xf/dlt645/Zhang San 13812345678", "13812345678"),
    ("vendor/acs/xf/tel:138 1234 5678/event", "138 1234 5678"),
]


@pytest.mark.parametrize(("topic", "secret"), PERSONAL)
def test_personal_levels_are_redacted(topic: str, secret: str) -> None:
    out = redact_topic(topic)
    assert secret not in out and REDACTED in out
    assert find_identifier(out, loose=True) is None
    assert out.split("/")[0] == topic.split("/")[0]  # the rest of the topic stays readable
    assert len(out.split("/")) == len(topic.split("/"))


def test_only_the_personal_level_is_replaced() -> None:
    assert redact_topic("gridgate/v1/xf/access/id-13812345678/event") == (
        f"gridgate/v1/xf/access/{REDACTED}/event"
    )
    assert redact_topic("vendor/acs/xf/京A12345/event") == f"vendor/acs/xf/{REDACTED}/event"


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        # the gateway's grammar: fixed words, families, channels and safe ids only
        ("gridgate/v1/xf/toaster/d-1/event", f"gridgate/v1/xf/{REDACTED}/d-1/event"),
        ("gridgate/v1/xf/access/d-1/gossip", f"gridgate/v1/xf/access/d-1/{REDACTED}"),
        ("gridgate/v1/xf/access/d 1/event", f"gridgate/v1/xf/access/{REDACTED}/event"),
        ("gridgate/v1/xf/access/d-1/event/zhang", f"gridgate/v1/xf/access/d-1/event/{REDACTED}"),
        ("gridgate/v1//access/d-1/event", f"gridgate/v1/{REDACTED}/access/d-1/event"),
        ("gridgate/v1/xf/access", "gridgate/v1/xf/access"),
        # any other topic: levels must be id-shaped (free text such as a name with a space is not)
        ("vendor/acs/xf/Zhang San/event", f"vendor/acs/xf/{REDACTED}/event"),
    ],
)
def test_levels_outside_the_grammar_are_replaced(topic: str, expected: str) -> None:
    assert redact_topic(topic) == expected


def test_a_meter_address_holding_a_mobile_shaped_run_is_redacted() -> None:
    # Accepted false alarm: 135000000123 holds 13500000012, which is mobile-shaped.
    assert (
        redact_topic("gridgate/raw/xf/dlt645/135000000123") == f"gridgate/raw/xf/dlt645/{REDACTED}"
    )


def test_long_topics_are_cut_between_levels() -> None:
    assert len(redact_topic("a/" * 500)) <= MAX_TOPIC
    imei = "138123456789012"  # 15 digits: an IMEI, but its first 11 alone are mobile-shaped
    assert redact_topic(f"vendor/band/xf/{imei}/up") == f"vendor/band/xf/{imei}/up"
    out = redact_topic("vendor/band/" + "/".join([imei] * 40))
    assert len(out) <= MAX_TOPIC and out.endswith("/...")
    assert all(level in (imei, "vendor", "band", "...") for level in out.split("/"))
    assert find_identifier(out, loose=True) is None
    huge = redact_topic("x/" + "13812345678" * 10_000)
    assert len(huge) <= MAX_TOPIC and "13812345678" not in huge
