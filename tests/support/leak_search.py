"""Searching every place data ends up for raw personal identifiers (R3.2), for the privacy leak
tests (tests/integration/test_privacy_leak*.py). Not a test module: no test module imports
another.

A *needle* is one spelling of a planted or published personal value: the value itself, for
numbers also its bare digits, for an ID number both cases of its check letter, for a plate
every separator a device might put in it, for a long blob (a face image or feature) its head
too. A *sink* is the text of one place a value must never reach — InfluxDB, the dead-letter
store, a log, the registry or audit database, an alert on the wire, a webhook body, CLI
output, the metrics — and `assert_no_leaks` names every sink that holds a needle.

Two kinds of text are taken out of a sink before searching, because they are long digit runs
that mean nothing here and could hold a short needle by chance: epoch timestamps in
milliseconds or nanoseconds within two months of now (InfluxDB's own `time` column is never
read at all). Hex digests and pseudonyms stay in: a needle of digits is at least
`MIN_DIGITS` long, and no such run turns up in hex or base32 by chance.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from devices.errors import RejectedInput
from gateway.storage.influx_v1 import InfluxV1Client, quote_ident
from simulators.people import id_check_digit

# -- planted values: fixed, so that a failure names the same value on every run --------------
# Names use given-name characters the simulator's name generator never draws, so a grid
# member's generated name can never contain one.
NAMES = ("张三丰", "李四喜", "王小二", "欧阳修远")


def _id_number(first17: str) -> str:
    return first17 + id_check_digit(first17)


ID_A = _id_number("11010519491231002")  # 11010519491231002X
ID_B_HYPHENATED = "330106-19491231-002X"  # the shape matters here, not the check digit
ID_B = ID_B_HYPHENATED.replace("-", "")
ID_C = _id_number("44030519871105123")
ID_A_LOWER = ID_A.lower()  # …002x
PHONES = ("13812345678", "13987654321", "15900001111", "18600002222")
PHONE_LEADING_DIGIT = "9" + PHONES[0]  # 913812345678: a stray digit in front
PHONE_HYPHENATED = f"{PHONES[2][:3]}-{PHONES[2][3:7]}-{PHONES[2][7:]}"  # 159-0000-1111
PLATES = ("京A12345", "粤B6C789", "沪AD12345")
FACE_BLOB = "ZmFjZS1pbWFnZS1vZi1hLXJlYWwtcGVyc29uLXBsYW50ZWQtZm9yLXRoZS1sZWFrLXRlc3Q="
IDS = (ID_A, ID_B, ID_C)


def planted() -> set[str]:
    """Every value the hostile traffic and files of the leak tests plant."""
    return {
        *NAMES,
        *IDS,
        ID_B_HYPHENATED,
        ID_A_LOWER,
        *PHONES,
        PHONE_LEADING_DIGIT,
        PHONE_HYPHENATED,
        *PLATES,
        FACE_BLOB,
    }


# -- harvesting what a message carries -------------------------------------------------------

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
    """Every personal value this message carries (decoded by the product's adapters where it
    decodes, and found by shape in the raw text either way)."""
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


# -- needles ---------------------------------------------------------------------------------

MIN_DIGITS = 10  # bare-digit spellings of shorter numbers (8-hex-digit card numbers) are noise
BLOB_HEAD = 32  # a long blob is also searched for by its head (a detail cut short)
_PLATE = re.compile(r"^([^\x00-\x7f])([A-Za-z])(.+)$")
_PLATE_SEPARATORS = ("", "·", "-", " ", ".", "•")
_UPPER_ESCAPE = re.compile(r"\\u[0-9a-f]{4}")


def spellings(value: str) -> set[str]:
    """`value` and the other ways it could turn up in a sink."""
    out = {value}
    digits = "".join(c for c in value if c.isdigit())
    if len(digits) >= MIN_DIGITS:
        out.add(digits)
        if value[-1] in "Xx":
            out |= {digits + "X", digits + "x"}
    if re.fullmatch(r"\d{17}[Xx]", value):
        out |= {value.upper(), value.lower()}
    plate = _PLATE.match(value)
    if plate and len(value) in (7, 8) and plate.group(3).isalnum() and plate.group(3).isascii():
        head, letter, tail = plate.groups()
        for sep in _PLATE_SEPARATORS:
            out.add(f"{head}{letter}{sep}{tail}")
            out.add(f"{head}{sep}{letter}{sep}{tail}")
    if len(value) > 2 * BLOB_HEAD:
        out.add(value[:BLOB_HEAD])
    for text in list(out):
        if not text.isascii():  # as JSON with ensure_ascii, and as a bytes repr
            out_json = json.dumps(text)[1:-1]
            out.add(out_json)
            out.add(_UPPER_ESCAPE.sub(lambda m: m.group(0).upper().replace("U", "u"), out_json))
            out.add(repr(text.encode())[2:-1])
    return out


def needles(values: Iterable[str]) -> set[str]:
    out: set[str] = set()
    for value in values:
        out |= spellings(value)
    return out


def without_legitimate(needle_set: set[str], legitimate: Iterable[str]) -> set[str]:
    """The needles that are not part of text that is allowed in the sinks (grid members' own
    names, place names of the fleet): a resident called 王芳 is not leaked by a member called
    王芳华."""
    texts = list(legitimate)
    return {n for n in needle_set if not any(n in t for t in texts)}


_TIME_RUN = re.compile(r"(?<!\d)(1[6-9]\d{11}(?:\d{6})?)(?!\d)")  # epoch ms or ns
_WINDOW_NS = 62 * 86_400 * 1_000_000_000


def strip_times(text: str, now_ns: int | None = None) -> str:
    """`text` with every epoch-ms or epoch-ns digit run within two months of now replaced."""
    now = time.time_ns() if now_ns is None else now_ns

    def replace(match: re.Match[str]) -> str:
        run = match.group(1)
        value = int(run) * (1_000_000 if len(run) == 13 else 1)
        return "<time>" if abs(value - now) <= _WINDOW_NS else run

    return _TIME_RUN.sub(replace, text)


def leaks(haystack: str, needle_set: set[str]) -> list[str]:
    text = strip_times(haystack)
    return sorted(n for n in needle_set if n in text)


def assert_no_leaks(sinks: Mapping[str, str], needle_set: set[str]) -> None:
    """Fail naming every sink that holds a needle, and which needles it holds."""
    assert needle_set, "nothing to search for"
    found = {name: leaks(text, needle_set) for name, text in sinks.items()}
    leaked = {name: values for name, values in found.items() if values}
    assert leaked == {}, "raw personal data in " + "; ".join(
        f"{name} ({len(values)}: {values[:6]}, e.g. …{context(sinks[name], values[0])}…)"
        for name, values in leaked.items()
    )


def context(text: str, needle: str, width: int = 60) -> str:
    """Where `needle` first occurs in `text` (fake data: fine to show in a failure)."""
    text = strip_times(text)
    at = text.find(needle)
    return text[max(0, at - width) : at + len(needle) + width].replace("\n", "⏎")


# -- sinks -----------------------------------------------------------------------------------


async def influx_dump(influx: InfluxV1Client, database: str) -> str:
    """Every tag and field value of every point in every retention policy, every series key,
    tag key and field key, as text (the `time` column left out)."""
    parts: list[str] = []
    policies = [
        r["name"] for r in await influx.query(f"SHOW RETENTION POLICIES ON {quote_ident(database)}")
    ]
    measurements = [r["name"] for r in await influx.query("SHOW MEASUREMENTS")]
    assert "access" in measurements and len(policies) > 1, (measurements, policies)
    parts.extend(measurements)
    for rp in policies:
        for m in measurements:
            rows = await influx.query(f"SELECT * FROM {quote_ident(rp)}.{quote_ident(m)}")
            for row in rows:
                parts.extend(f"{k}={v}" for k, v in row.items() if k != "time" and v is not None)
    for query in ("SHOW SERIES", "SHOW TAG KEYS", "SHOW FIELD KEYS"):
        for row in await influx.query(query):
            parts.append(json.dumps(row, ensure_ascii=False))
    for row in await influx.query("SHOW TAG VALUES WITH KEY =~ /.*/"):
        parts.append(f"{row.get('key')}={row.get('value')}")
    return "\n".join(parts)


def sqlite_tables(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table (from sqlite_master), every column, by column name."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        names = [
            r[0]
            for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        ]
        out: dict[str, list[dict[str, Any]]] = {}
        for name in names:
            cursor = db.execute(f'SELECT * FROM "{name}"')
            columns = [d[0] for d in cursor.description]
            out[name] = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
        return out
    finally:
        db.close()


def rows_text(tables: Mapping[str, list[dict[str, Any]]]) -> str:
    """Rows as text: every column name and value (a JSON column as SQLite holds it)."""
    return "\n".join(
        f"{table}: " + " | ".join(f"{k}={'' if v is None else v}" for k, v in row.items())
        for table, rows in tables.items()
        for row in rows
    )


def file_text(path: Path) -> str:
    """The bytes of a SQLite database and its -wal/-shm/-journal files, as text: what a copy
    of the file gives away, free pages included."""
    files = sorted(path.parent.glob(path.name + "*"))
    return "\n".join(p.read_bytes().decode("utf-8", "replace") for p in files)


class AlertWire:
    """Everything published under ``gridgate/alerts/#`` whose topic names this community
    (its members' topics are ``gridgate/alerts/member/m-<community>-…``), as members' apps
    would receive it."""

    def __init__(self, host: str, port: int, community: str) -> None:
        self.community = community
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        client.on_connect = lambda c, *_: c.subscribe("gridgate/alerts/#", qos=1)
        client.on_subscribe = lambda *_: subscribed.set()
        client.on_message = self._on_message
        client.connect(host, port)
        client.loop_start()
        self.client = client
        assert subscribed.wait(10), "no SUBACK for gridgate/alerts/#"

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        if self.community in msg.topic:
            with self._lock:
                self.messages.append((msg.topic, bytes(msg.payload)))

    def kinds(self) -> set[str]:
        with self._lock:
            payloads = [p for _, p in self.messages]
        out = set()
        for p in payloads:
            try:
                out.add(str(json.loads(p).get("kind")))
            except (ValueError, AttributeError):
                out.add("<not json>")
        return out

    def text(self) -> str:
        with self._lock:
            return "\n".join(f"{t} {p.decode('utf-8', 'replace')}" for t, p in self.messages)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
