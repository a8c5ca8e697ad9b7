"""The InfluxDB 2.x client's error mapping, without a server: the library's exceptions become
StorageError with `retryable` as for v1 (down, 5xx, 408, 429: later; other 4xx: never; a
refused token names GRIDGATE_INFLUX_TOKEN and is retried only for a write), and a bucket deleted
under a running gateway is created again rather than the batch dead-lettered."""

from __future__ import annotations

from typing import Any

import pytest
import urllib3.exceptions
from influxdb_client.rest import ApiException

from devices.errors import StorageError
from gateway.storage.influx_v2 import InfluxV2Client


def api_error(status: int, body: str = "") -> ApiException:
    error = ApiException(status=status, reason="x")  # type: ignore[no-untyped-call]
    error.body = body
    return error


class FakeWriter:
    """The library's write API: answers from a list (an exception or None), records calls."""

    def __init__(self, *answers: Exception | None) -> None:
        self.answers = list(answers)
        self.calls: list[dict[str, Any]] = []

    def write(self, **kwargs: Any) -> None:
        self.calls.append(kwargs)
        answer = self.answers.pop(0) if self.answers else None
        if answer is not None:
            raise answer


class FakeBuckets:
    def __init__(self, find: Exception | None = None) -> None:
        self.find = find
        self.created: list[tuple[str, list[Any]]] = []

    def find_bucket_by_name(self, name: str) -> None:
        if self.find is not None:
            raise self.find

    def create_bucket(self, *, bucket_name: str, retention_rules: list[Any], org: str) -> None:
        self.created.append((bucket_name, [r.every_seconds for r in retention_rules]))


def client(writer: FakeWriter, buckets: FakeBuckets | None = None) -> InfluxV2Client:
    c = InfluxV2Client(
        "http://127.0.0.1:9", org="o", bucket="b", token="t",
        buckets={"rp_elder": ("b_elder", 86_400)},
    )  # fmt: skip
    c._writer = writer  # type: ignore[assignment]
    api = buckets or FakeBuckets()
    c._client.buckets_api = lambda: api  # type: ignore[method-assign,assignment,return-value]
    return c


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (api_error(500), True),
        (api_error(503), True),
        (api_error(408), True),
        (api_error(429), True),
        (api_error(400, '{"code":"invalid","message":"unable to parse"}'), False),
        (api_error(413), False),
        (api_error(422), False),
        (urllib3.exceptions.NewConnectionError(None, "refused"), True),  # type: ignore[arg-type]
        (urllib3.exceptions.ReadTimeoutError(None, "/api/v2/write", "timed out"), True),  # type: ignore[arg-type]
        (ConnectionResetError(), True),
    ],
)
async def test_write_failures_are_retryable_as_for_v1(error: Exception, retryable: bool) -> None:
    async with client(FakeWriter(error)) as c:
        with pytest.raises(StorageError) as info:
            await c.write(["elder,device=e-1 heart_rate=70i 1"], rp="rp_elder")
    assert info.value.retryable is retryable


@pytest.mark.parametrize("status", [401, 403])
async def test_a_refused_token_names_the_setting_and_only_a_write_is_retried(status: int) -> None:
    async with client(FakeWriter(api_error(status)), FakeBuckets(api_error(status))) as c:
        with pytest.raises(StorageError) as write:
            await c.write(["m v=1 1"])
        with pytest.raises(StorageError) as schema:
            await c.ensure_schema()
    assert "GRIDGATE_INFLUX_TOKEN" in str(write.value) and write.value.retryable
    assert "GRIDGATE_INFLUX_TOKEN" in str(schema.value) and not schema.value.retryable


async def test_each_retention_policy_writes_to_its_bucket_in_ns() -> None:
    writer = FakeWriter()
    async with client(writer) as c:
        await c.write(["elder,device=e-1 heart_rate=70i 1"], rp="rp_elder")
        await c.write(["m v=1 1", "m v=2 2"], rp=None)
    assert [(w["bucket"], w["org"], w["record"]) for w in writer.calls] == [
        ("b_elder", "o", b"elder,device=e-1 heart_rate=70i 1"),
        ("b", "o", b"m v=1 1\nm v=2 2"),
    ]
    assert all(w["write_precision"] == "ns" for w in writer.calls)


async def test_a_deleted_bucket_is_created_again_and_the_batch_sent_once_more() -> None:
    writer, buckets = FakeWriter(api_error(404, "bucket not found")), FakeBuckets()
    async with client(writer, buckets) as c:
        await c.write(["elder,device=e-1 heart_rate=70i 1"], rp="rp_elder")
    assert buckets.created == [("b_elder", [86_400])] and len(writer.calls) == 2


async def test_a_404_again_after_creating_is_not_retried() -> None:
    writer = FakeWriter(api_error(404), api_error(404))
    async with client(writer) as c:
        with pytest.raises(StorageError) as info:
            await c.write(["m v=1 1"])
    assert not info.value.retryable and len(writer.calls) == 2


async def test_a_server_without_buckets_api_is_said_once_and_writes_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    buckets = FakeBuckets(api_error(400, 'unsupported path requested: "/api/v2/buckets"'))
    writer = FakeWriter()
    async with client(writer, buckets) as c:
        caplog.set_level("INFO", logger="gateway.storage.influx_v2")
        await c.ensure_schema()
        await c.ensure_schema()
        await c.write(["m v=1 1"])
    assert sum("has no buckets API" in r.getMessage() for r in caplog.records) == 1
    assert len(writer.calls) == 1


async def test_a_batch_that_is_not_utf8_is_refused_for_good() -> None:
    async with client(FakeWriter()) as c:
        with pytest.raises(StorageError) as info:
            await c.write(['m s="\udcff" 1'])
    assert not info.value.retryable


async def test_influxql_needs_the_v1_api() -> None:
    async with client(FakeWriter()) as c:
        with pytest.raises(StorageError) as info:
            await c.query("SELECT 1")
    assert "GRIDGATE_INFLUX_API=v1" in str(info.value) and not info.value.retryable
