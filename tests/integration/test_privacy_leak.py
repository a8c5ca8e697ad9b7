"""No raw personal identifier anywhere (R3.2), for well-formed, vendor, hostile and malformed
traffic alike.

The community's residents carry known fake personal data (names, valid-checksum ID numbers,
phones, card numbers, plates, face feature blobs) in every vendor format; the `hostile`
scenario and every malformed case add more, some of it inside payloads that do not even
parse. Every personal value published is collected, then searched for — raw, and for numbers
also as bare digits — in InfluxDB (every retention policy, every measurement, tags and
fields), the dead-letter store, the captured DEBUG logs and the metrics output.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from adapters.registry import default_registry
from devices.errors import RejectedInput
from gateway.storage.influx_v1 import InfluxV1Client, quote_ident
from simulators import malformed
from simulators.community_cli import parse_scenario, plan_injections
from simulators.schedule import Schedule, SimClock
from tests.integration.conftest import Services
from tests.integration.gateway_util import running_gateway, wait_for
from tests.integration.mqtt_util import drop_session, publish_all
from tests.integration.test_community import community_settings, registered_community

pytestmark = pytest.mark.integration

PERSONAL_FIELDS = (
    "person_name",
    "id_number",
    "phone",
    "card_no",
    "plate",
    "face_image",
    "face_feature",
)
# For payloads that do not decode: the shapes of the same data in any vendor's spelling.
_PATTERNS = [
    re.compile(r"(?<![\dA-Za-z])\d{17}[\dXx](?![\dA-Za-z])"),  # ID numbers, valid or not
    re.compile(r"(?<!\d)1[3-9]\d{9}(?!\d)"),  # mobiles
    re.compile(r'"(?:person_?[nN]ame|personName|name)"\s*:\s*"([^"]{2,12})"'),
    re.compile(r'"(?:face\w*|certNo|cardNo|card_no|plateNo|plate)"\s*:\s*"([^"]{4,})"'),
    re.compile(
        r"[京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼][A-Z][A-Z0-9]{5,6}"
    ),
]


def harvest(topic: str, payload: bytes, adapters: Any) -> set[str]:
    """Every personal value this message carries."""
    found: set[str] = set()
    try:
        for reading in adapters.decode(topic, payload):
            found |= {str(reading.values[f]) for f in PERSONAL_FIELDS if reading.values.get(f)}
    except RejectedInput:
        pass
    text = payload.decode("utf-8", "replace")
    for pattern in _PATTERNS:
        for match in pattern.finditer(text):
            found.add(match.group(match.lastindex or 0))
    return {value for value in found if len(value) >= 2}


def needles(values: set[str]) -> set[str]:
    """The values, plus the bare digits of anything that is mostly a number."""
    out = set(values)
    for value in values:
        digits = "".join(c for c in value if c.isdigit())
        if len(digits) >= 7:
            out.add(digits)
    return out


def leaks(haystack: str, needle_set: set[str]) -> list[str]:
    return sorted(n for n in needle_set if n in haystack)


async def influx_dump(influx: InfluxV1Client, database: str) -> str:
    """Every tag and field value of every point in every retention policy, as text
    (timestamps left out: they are long digit runs that mean nothing here)."""
    parts: list[str] = []
    policies = [
        r["name"] for r in await influx.query(f"SHOW RETENTION POLICIES ON {quote_ident(database)}")
    ]
    measurements = [r["name"] for r in await influx.query("SHOW MEASUREMENTS")]
    assert "access" in measurements and len(policies) > 1
    for rp in policies:
        for m in measurements:
            for row in await influx.query(f"SELECT * FROM {quote_ident(rp)}.{quote_ident(m)}"):
                parts.extend(f"{k}={v}" for k, v in row.items() if k != "time" and v is not None)
    for row in await influx.query("SHOW TAG VALUES WITH KEY =~ /.*/"):
        parts.append(str(row.get("value")))
    return "\n".join(parts)


def dead_letter_dump(path: Path) -> tuple[str, bytes]:
    """Row text without the digests (hex that may contain any digit run by chance), and the
    raw file bytes (for the non-numeric needles)."""
    db = sqlite3.connect(path)
    rows = db.execute("SELECT topic, reason, detail FROM dead_letters").fetchall()
    db.close()
    raw = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    return "\n".join(" ".join(map(str, r)) for r in rows), raw


async def test_no_personal_data_anywhere(
    services: Services,
    unique: str,
    influx_db: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    community, registry_url, _ = registered_community(100, 23, unique, tmp_path)
    clock = SimClock.plan(600, 20)
    injections = plan_injections(community, clock, [parse_scenario("hostile@b01")], 23)
    messages = [
        (m.topic, m.payload) for m in Schedule(community, clock, seed=23, injections=injections)
    ]
    rng = random.Random(23)
    now_ms = int(time.time() * 1000)
    for case in malformed.CASES:  # every malformed case, several times, some with personal data
        messages += [
            malformed.bad_message(rng, unique, now_ms=now_ms, case=case)[:2] for _ in range(5)
        ]

    adapters = default_registry()
    published: set[str] = set()
    for topic, payload in messages:
        published |= harvest(topic, payload, adapters)
    published -= {r.name for r in community.members}  # staff names are not residents' data
    assert len(published) > 100, (
        "the traffic must carry personal data for this test to mean anything"
    )
    targets = needles(published)

    settings = community_settings(services, unique, influx_db, tmp_path, registry_url)
    try:
        async with running_gateway(settings) as metrics:
            await asyncio.to_thread(publish_all, services.mqtt_host, services.mqtt_port, messages)
            await wait_for(lambda: metrics.acked >= len(messages), 120, "every message handled")
            async with InfluxV1Client(services.influx_url, influx_db) as influx:
                stored = await influx_dump(influx, influx_db)
        assert metrics.dead_lettered > len(malformed.CASES)  # hostile input did arrive
        assert "resident_ref=k1:" in stored  # identities arrived, pseudonymised

        assert leaks(stored, targets) == [], "raw personal data in InfluxDB"
        rows, raw = dead_letter_dump(Path(settings.deadletter_path))
        assert leaks(rows, targets) == [], "raw personal data in the dead-letter store"
        text_needles = {n for n in targets if not n.isdigit()}
        assert [n for n in text_needles if n.encode() in raw] == [], "in the dead-letter file"
        logs = caplog.text
        assert "DEBUG" in logs  # the capture really was at DEBUG level
        assert leaks(logs, targets) == [], "raw personal data in the logs"
        exported = metrics.prometheus() + json.dumps(metrics.snapshot(), ensure_ascii=False)
        assert leaks(exported, targets) == [], "raw personal data in the metrics"
    finally:
        drop_session(services.mqtt_host, services.mqtt_port, settings.mqtt_client_id)
