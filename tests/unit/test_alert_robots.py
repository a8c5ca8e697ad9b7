"""Group robots without the network: DingTalk's signature, the Chinese message and digest,
and the routing policy's robots and groups (tests/integration/test_alert_robots.py posts)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import urllib.parse

import pytest

from devices.errors import ConfigError
from gateway.alerts.delivery.robots import dingtalk_sign, render
from gateway.alerts.routing import parse_routing_policy

PAYLOAD = {
    "alert_id": 7, "step": "raised", "kind": "gas_leak", "severity": "I",
    "place": "xf/g01/b03/u2", "place_names": ["幸福小区", "第一网格", "3号楼", "2单元"],
    "raised_at": "2026-12-05T00:30:00Z", "subject_ref": "k1:abcdefabcdefabcdefabcdefab",
    "device_id": "gas-0001", "room": "1201",
}  # fmt: skip


def test_dingtalk_sign_is_the_documented_hmac() -> None:
    mac = hmac.new(b"SECxyz", b"1700000000000\nSECxyz", hashlib.sha256).digest()
    assert dingtalk_sign("SECxyz", 1_700_000_000_000) == urllib.parse.quote_plus(
        base64.b64encode(mac)
    )


def test_one_alert_in_chinese_with_what_to_do_and_nothing_personal() -> None:
    title, text = render([PAYLOAD], lambda i: f"https://gw/m/?alert={i}")
    assert title == "一级（特别重大）红色预警：燃气泄漏"
    for part in ("新告警", "幸福小区 第一网格 3号楼 2单元", "2026-12-05 08:30", "请立即赶赴现场",
                 "https://gw/m/?alert=7"):  # fmt: skip
        assert part in text
    for private in ("k1:", "gas-0001", "1201"):
        assert private not in text


def test_a_digest_lists_the_most_severe_first() -> None:
    low = {**PAYLOAD, "alert_id": 8, "severity": "IV", "kind": "battery"}
    title, text = render([low, PAYLOAD], lambda i: None)
    assert title == "告警汇总：2 条"
    assert text.index("告警 7") < text.index("告警 8")
    assert "一级（特别重大）红色 1 条，四级（一般）蓝色 1 条" in text


BASE = """\
version: 1
severities:
  I: {roles: [unit_head], ack_within_s: 300, resolve_within_s: 7200}
  II: {roles: [unit_head], ack_within_s: 900, resolve_within_s: 28800}
  III: {roles: [grid_worker], ack_within_s: 3600, resolve_within_s: 86400}
  IV: {roles: [property_duty], ack_within_s: 86400, resolve_within_s: 604800}
escalation:
  levels:
    - roles: [grid_chief]
"""


def test_robots_and_groups_in_the_routing_policy() -> None:
    policy = parse_routing_policy(BASE + """\
robots:
  b03: {kind: wecom, url_env: GRIDGATE_B03_WECOM}
  all: {kind: dingtalk, url_env: GRIDGATE_DING, secret_env: GRIDGATE_DING_SECRET}
groups:
  - {robot: b03, building: b03}
  - {robot: all, severities: [I, II]}
""")  # fmt: skip
    assert set(policy.robots) == {"b03", "all"}
    assert [g.robot for g in policy.groups] == ["b03", "all"]


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ("robots:\n  r: {kind: wecom, url_env: GRIDGATE_X}\ngroups:\n  - {robot: nobody}\n",
         "unknown robot 'nobody'"),
        ("robots:\n  r: {kind: wecom, url_env: GRIDGATE_X, secret_env: GRIDGATE_Y}\n",
         "secret_env signs DingTalk robots only"),
        ("robots:\n  r: {kind: slack, url_env: GRIDGATE_X}\n", "kind"),
        ("robots:\n  r: {kind: wecom, url: 'https://qyapi.weixin.qq.com/x?key=k'}\n", "url"),
    ],
)  # fmt: skip
def test_bad_robots_are_refused_by_name(extra: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_routing_policy(BASE + extra)
    assert problem in str(caught.value)
