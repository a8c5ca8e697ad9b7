"""InfluxV1Client and the line-protocol encoder against the real influxd (1.6.7 in CI).

The point is that hostile text comes back from InfluxDB exactly as it went in, that what the
encoder refuses never reaches the server, and that failures carry the right `retryable`.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import pytest

from devices.errors import StorageError
from gateway.storage.influx_v1 import InfluxV1Client, quote_ident, quote_literal
from gateway.storage.line_protocol import encode_line
from tests.support.services import Services

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000_000_000

HOSTILE = [
    "a,b",
    "a b",
    "a=b",
    'say "hi"',
    "back\\slash",
    "it's",
    "12幢",
    "2单元",
    "😀 emoji",
    " lead",
    "trail ",
    "  both  ",
    ",= \"'",
    "a\\nb",  # the two characters backslash and n, not a newline
    "tab\there",
    '\\"quoted\\"',
    "#hash",
    "=",
    ",",
    " ",
]


@pytest.fixture
async def client(services: Services, influx_db: str) -> AsyncIterator[InfluxV1Client]:
    async with InfluxV1Client(services.influx_url, influx_db, timeout_s=30) as c:
        await c.ensure_database()
        yield c
        await c.query(f"DROP DATABASE {quote_ident(influx_db)}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def _series(client: InfluxV1Client) -> list[str]:
    return sorted(row["key"] for row in await client.query("SHOW SERIES"))


async def test_ping_and_idempotent_create(client: InfluxV1Client) -> None:
    assert await client.ping()
    await client.ensure_database()  # a second CREATE DATABASE is fine
    assert await client.count("nothing_here", "v") == 0


async def test_hostile_tag_values_round_trip(client: InfluxV1Client) -> None:
    lines = [encode_line("m", {"t": v, "k": "x"}, {"n": i}, T0 + i) for i, v in enumerate(HOSTILE)]
    await client.write(lines)

    shown = await client.query('SHOW TAG VALUES FROM "m" WITH KEY = "t"')
    assert sorted(row["value"] for row in shown) == sorted(HOSTILE)

    rows = await client.query('SELECT "n" FROM "m" GROUP BY "t", "k"')
    assert {row["t"]: row["n"] for row in rows} == {v: i for i, v in enumerate(HOSTILE)}
    assert all(row["k"] == "x" for row in rows)

    for i, value in enumerate(HOSTILE):  # and each one can be selected by its exact value
        hit = await client.query(f'SELECT "n" FROM "m" WHERE "t" = {quote_literal(value)}')
        assert [row["n"] for row in hit] == [i], value


async def test_hostile_strings_keys_and_measurements_round_trip(client: InfluxV1Client) -> None:
    texts = [*HOSTILE, "trail\\", "\\", "C:\\dir\\", 'x\\"y', "", "a,b=c d"]
    await client.write([encode_line("s", {}, {"s": v}, T0 + i) for i, v in enumerate(texts)])
    rows = await client.query('SELECT "s" FROM "s"')
    assert [row["s"] for row in rows] == texts

    names = ["cpu load, 幢 1", "m=x", 'm"q', "it's", " lead", "back\\slash", "a,b c"]
    keys = ["k,1", "k=2", "k 3", 'k"4', "单元", "k\\5"]
    fkeys = ["f,1", "f=2", "f 3", 'f"4', "温度", "f\\5"]
    tags = {key: f"v{j}" for j, key in enumerate(keys)}
    for i, name in enumerate(names):
        await client.write([encode_line(name, tags, {k: i for k in fkeys}, T0)])
    shown = await client.query("SHOW MEASUREMENTS")
    assert {row["name"] for row in shown} == {*names, "s"}
    for i, name in enumerate(names):
        tag_keys = await client.query(f"SHOW TAG KEYS FROM {quote_ident(name)}")
        assert sorted(row["tagKey"] for row in tag_keys) == sorted(keys)
        group = ", ".join(quote_ident(k) for k in keys)
        selected = ", ".join(quote_ident(k) for k in fkeys)
        rows = await client.query(f"SELECT {selected} FROM {quote_ident(name)} GROUP BY {group}")
        assert rows == [{"time": T0, **tags, **{k: i for k in fkeys}}]
        field_keys = await client.query(f"SHOW FIELD KEYS FROM {quote_ident(name)}")
        assert sorted(row["fieldKey"] for row in field_keys) == sorted(fkeys)
        tag_values = await client.query(
            f"SHOW TAG VALUES FROM {quote_ident(name)} WITH KEY IN ({group})"
        )
        assert {row["key"]: row["value"] for row in tag_values} == tags


async def test_newline_policy_refuses_before_the_server(client: InfluxV1Client) -> None:
    """A newline anywhere is a ValueError at encode time; nothing of it reaches InfluxDB."""
    attempts: list[tuple[str, dict[str, str], dict[str, int | str]]] = [
        ("m", {"t": "a\nevil,t=x v=1i 1"}, {"v": 1}),
        ("m", {"t": "ok"}, {"s": 'a"\nevil v=1i 1\n'}),
        ("m\nevil", {}, {"v": 1}),
        ("m", {"t\r": "x"}, {"v": 1}),
        ("m", {}, {"v\n": 1}),
    ]
    lines = [encode_line("m", {"t": "good"}, {"v": 1}, T0)]
    for measurement, tags, fields in attempts:
        with pytest.raises(ValueError, match="newline"):
            lines.append(encode_line(measurement, tags, fields, T0 + 1))
    lines.append(encode_line("m", {"t": "a\\nb"}, {"s": "x\\ny"}, T0 + 2))  # literal backslash-n
    await client.write(lines)

    assert await _series(client) == ["m,t=a\\nb", "m,t=good"]
    assert sorted(r["name"] for r in await client.query("SHOW MEASUREMENTS")) == ["m"]
    rows = await client.query('SELECT * FROM "m"')
    assert [(row["time"], row["t"], row["s"], row["v"]) for row in rows] == [
        (T0, "good", None, 1),
        (T0 + 2, "a\\nb", "x\\ny", None),
    ]


async def test_types_survive(client: InfluxV1Client) -> None:
    floats = [0.1, 1 / 3, -2.5, 1e300, -1e-300, 5e-324, 1.7976931348623157e308, 2.0, 2.0**53 + 2]
    ints = [0, 1, -1, 2**63 - 1, -(2**63), 123456789]
    lines = [
        encode_line(
            "types",
            {},
            {"f": floats[i % len(floats)], "i": ints[i % len(ints)], "b": i % 2 == 0},
            T0 + i,
        )
        for i in range(len(floats) * len(ints))
    ]
    await client.write(lines)

    types = {
        row["fieldKey"]: row["fieldType"]
        for row in await client.query('SHOW FIELD KEYS FROM "types"')
    }
    assert types == {"f": "float", "i": "integer", "b": "boolean"}

    rows = await client.query('SELECT "f", "i", "b" FROM "types"')
    assert len(rows) == len(lines)
    for row in rows:
        n = row["time"] - T0
        # Integral floats come back as JSON integers (2.0 -> 2), so compare as floats.
        assert float(row["f"]) == floats[n % len(floats)]
        assert type(row["i"]) is int and row["i"] == ints[n % len(ints)]
        assert row["b"] is (n % 2 == 0)


async def test_five_thousand_lines_in_one_write(client: InfluxV1Client) -> None:
    lines = [
        encode_line("bulk", {"unit": f"{i % 20}单元"}, {"v": float(i), "seq": i}, T0 + i)
        for i in range(5000)
    ]
    await client.write(lines)
    assert await client.count("bulk", "seq") == 5000
    rows = await client.query('SELECT COUNT("v") FROM "bulk" GROUP BY "unit"')
    assert len(rows) == 20 and sum(row["count"] for row in rows) == 5000


async def test_retention_policy(client: InfluxV1Client, services: Services, influx_db: str) -> None:
    await client.query(
        f'CREATE RETENTION POLICY "short" ON {quote_ident(influx_db)} DURATION 1h REPLICATION 1'
    )
    now = time.time_ns()  # a 1 h policy drops older points ("points beyond retention policy")
    async with InfluxV1Client(services.influx_url, influx_db, retention_policy="short") as rp:
        await rp.write([encode_line("m", {}, {"v": 1}, now)])
        assert await rp.count("m", "v") == 1
    assert await client.count("m", "v") == 0  # the default policy holds nothing
    async with InfluxV1Client(services.influx_url, influx_db, retention_policy="nope") as bad:
        with pytest.raises(StorageError) as info:
            await bad.write([encode_line("m", {}, {"v": 1}, now)])
    assert info.value.retryable is False  # influxd answers 500, but retrying cannot help


async def test_unreachable_server_is_retryable(influx_db: str) -> None:
    async with InfluxV1Client(f"http://127.0.0.1:{_free_port()}", influx_db) as c:
        assert await c.ping() is False
        with pytest.raises(StorageError) as info:
            await c.write([encode_line("m", {}, {"v": 1}, T0)])
        assert info.value.retryable is True
        assert info.value.__cause__ is not None
        with pytest.raises(StorageError) as info:
            await c.query("SHOW DATABASES")
        assert info.value.retryable is True


async def test_silent_server_times_out_retryably(influx_db: str) -> None:
    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # hold the connection until the client gives up
        writer.close()

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    async with server, InfluxV1Client(url, influx_db, timeout_s=0.3) as c:
        with pytest.raises(StorageError, match="timed out") as info:
            await c.write([encode_line("m", {}, {"v": 1}, T0)])
    assert info.value.retryable is True


async def test_malformed_line_is_not_retryable(client: InfluxV1Client) -> None:
    with pytest.raises(StorageError, match="unable to parse") as info:
        await client.write(["this is not line protocol"])
    assert info.value.retryable is False
    assert await _series(client) == []


async def test_partial_write_stores_the_good_lines(client: InfluxV1Client) -> None:
    good = [encode_line("m", {}, {"v": i}, T0 + i) for i in range(3)]
    with pytest.raises(StorageError, match="partial write") as info:
        await client.write([good[0], "m v=garbage 5", good[1], good[2]])
    assert info.value.retryable is False
    assert "kept the points it accepted" in str(info.value)
    assert await client.count("m", "v") == 3


async def test_type_conflict_is_not_retryable(client: InfluxV1Client) -> None:
    await client.write([encode_line("m", {}, {"v": 1}, T0)])
    with pytest.raises(StorageError, match="field type conflict") as info:
        await client.write([encode_line("m", {}, {"v": "text"}, T0 + 1)])
    assert info.value.retryable is False


async def test_write_to_a_missing_database_creates_it(services: Services, influx_db: str) -> None:
    async with InfluxV1Client(services.influx_url, influx_db + "_missing") as c:
        await c.write([encode_line("m", {}, {"v": 1}, T0)])
        assert await c.count("m", "v") == 1
        await c.query(f"DROP DATABASE {quote_ident(c.database)}")


async def test_query_errors(client: InfluxV1Client) -> None:
    with pytest.raises(StorageError) as info:
        await client.query("SELEKT nothing")
    assert info.value.retryable is False
    with pytest.raises(StorageError, match="not found"):
        await client.query('SELECT * FROM "nope"."autogen"."m"')


async def test_query_merges_group_by_tags_and_spans_statements(client: InfluxV1Client) -> None:
    await client.write(
        [
            encode_line("m", {"building": "1幢", "unit": "1单元"}, {"v": 1.5}, T0),
            encode_line("m", {"building": "2幢", "unit": "1单元"}, {"v": 2.5}, T0 + 1),
        ]
    )
    rows = await client.query('SELECT "v" FROM "m" GROUP BY "building"; SELECT COUNT("v") FROM "m"')
    assert rows == [
        {"building": "1幢", "time": T0, "v": 1.5},
        {"building": "2幢", "time": T0 + 1, "v": 2.5},
        {"time": 0, "count": 2},
    ]


async def test_write_recreates_a_dropped_database(client: InfluxV1Client) -> None:
    await client.ensure_database()
    await client.write(["m v=1i 1"])
    await client.query(f"DROP DATABASE {quote_ident(client.database)}")
    await client.write(["m v=2i 2"])  # would be a 404 "database not found" without self-heal
    assert await client.count("m", "v") == 1
