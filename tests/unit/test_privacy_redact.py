from __future__ import annotations

import pytest

from privacy.redact import REDACTED, redact_topic


@pytest.mark.parametrize(
    "topic",
    [
        "gridgate/v1/xf/meter/123456789012/telemetry",  # a DL/T 645 address: 12 digits
        "gridgate/raw/xf/cjt188/conc-b07",
        "vendor/band/xf/862033300001226/up",  # an IMEI: 15 digits
        "gridgate/raw/xf/cjt188/00000012345678",  # a CJ/T 188 address: 14 digits
    ],
)
def test_device_topics_pass_unchanged(topic: str) -> None:
    assert redact_topic(topic) == topic


@pytest.mark.parametrize(
    ("topic", "secret"),
    [
        ("gridgate/v1/xf/access/张三/event", "张三"),
        ("gridgate/v1/xf/access/13812348000/event", "13812348000"),
        ("gridgate/v1/xf/access/u-13812348000/event", "13812348000"),
        ("gridgate/v1/xf/access/11010519491231002X/event", "11010519491231002X"),
        ("gridgate/v1/xf/access/110105194912310021/event", "110105194912310021"),  # bad checksum
        ("vendor/acs/xf/京A12345/event", "京A12345"),
    ],
)
def test_personal_levels_are_redacted(topic: str, secret: str) -> None:
    out = redact_topic(topic)
    assert secret not in out and REDACTED in out
    assert out.split("/")[0] == topic.split("/")[0]  # the rest of the topic stays readable


def test_long_topics_are_cut() -> None:
    assert len(redact_topic("a/" * 500)) <= 256
