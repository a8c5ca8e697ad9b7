"""InfluxDB 2.x native (R4): `/api/v2/write` with a token, an org and buckets, through the
`influxdb-client` library (`GRIDGATE_INFLUX_API=v2`).

The pipeline hands the same batches as to the v1 client, each with its retention-policy name.
In 2.x a retention is a bucket's, so each retention policy becomes a bucket of its own:
`<GRIDGATE_INFLUX_BUCKET>_<measurement>` with the privacy policy's duration as the bucket's
retention (health data still expires long before meter data, R3.7). With
`GRIDGATE_INFLUX_RETENTION=false` everything goes to `GRIDGATE_INFLUX_BUCKET`.

`ensure_schema` creates missing buckets through the buckets API; a write answered 404 (a bucket
deleted under a running gateway) creates it again and is sent once more, as v1 does for a
dropped database. A server that accepts `/api/v2/write` but has no buckets API manages its
storage itself; that is said once and the writes go on. VictoriaMetrics 1.79 (the test server)
is one: the buckets API answers 400 "unsupported path"; it ignores bucket and org (every bucket
lands in one namespace, under its own single -retentionPeriod), stores each field as a series
`<measurement>_<field>` labelled with the tags, at millisecond precision, and answers 204 even
for lines it could not parse or that fall outside its retention (it only logs them).

The library's client is synchronous and blocking (urllib3), so calls run in a worker thread.
Its own retries are off: the pipeline decides what is retried (the same rules as v1: the
server unreachable, 5xx, 408 and 429 are retried or spooled; other 4xx are not). InfluxQL
queries (`gridgate query`, the API's history) need the v1 API and say so.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import urllib3.exceptions
from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.domain.bucket_retention_rules import BucketRetentionRules
from influxdb_client.domain.write_precision import WritePrecision
from influxdb_client.rest import ApiException

from devices.errors import StorageError
from gateway.closing import ClosingClient

log = logging.getLogger(__name__)

TOKEN_VARIABLE = "GRIDGATE_INFLUX_TOKEN"
_RETRYABLE_4XX = frozenset({408, 429})
T = TypeVar("T")


class InfluxV2Client(ClosingClient):
    """One org's buckets; `buckets` maps a retention-policy name (what the pipeline passes
    with each batch) to (bucket name, retention seconds)."""

    def __init__(
        self,
        url: str,
        *,
        org: str,
        bucket: str,
        token: str | None,
        buckets: Mapping[str, tuple[str, int]] | None = None,
        timeout_s: float = 10.0,
        ca_file: Path | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.org = org
        self.bucket = bucket
        self.buckets = dict(buckets or {})
        self._client = InfluxDBClient(
            url=self.url,
            token=token or "",
            org=org,
            timeout=int(timeout_s * 1000),
            ssl_ca_cert=str(ca_file) if ca_file else None,
            retries=False,
        )
        self._writer = self._client.write_api(write_options=SYNCHRONOUS)
        self._no_buckets_api = False

    async def aclose(self) -> None:
        await asyncio.to_thread(self._client.close)

    async def ping(self) -> bool:
        """True when the server answers /ping; never raises."""
        try:
            return bool(await asyncio.to_thread(self._client.ping))
        except Exception as exc:  # the library raises what urllib3 raises: anything is "no"
            log.debug("influx ping failed: %s", exc)
            return False

    async def ensure_schema(self) -> None:
        """Every bucket, with its retention, unless the server has no buckets API."""
        if self._no_buckets_api:
            return
        wanted = list(self.buckets.values()) or [(self.bucket, 0)]
        for name, seconds in wanted:
            create = partial(self._ensure_bucket, name, seconds)
            await self._call(f"creating bucket {name!r}", create)
            if self._no_buckets_api:
                return

    def _ensure_bucket(self, name: str, seconds: int) -> None:
        api = self._client.buckets_api()
        try:
            found = api.find_bucket_by_name(name)  # type: ignore[no-untyped-call]
        except ApiException as exc:
            # 404, or VictoriaMetrics' 400 "unsupported path requested"
            if exc.status == 404 or "unsupported path" in str(exc.body or ""):
                log.info("InfluxDB at %s has no buckets API: it keeps its own storage", self.url)
                self._no_buckets_api = True
                return
            raise
        rules = (
            [BucketRetentionRules(type="expire", every_seconds=seconds)]  # type: ignore[no-untyped-call]
            if seconds
            else []
        )
        if found is None:
            api.create_bucket(bucket_name=name, retention_rules=rules, org=self.org)
        elif seconds and [r.every_seconds for r in found.retention_rules or []] != [seconds]:
            found.retention_rules = rules
            api.update_bucket(bucket=found)

    async def write(self, lines: Sequence[str], *, rp: str | None = None) -> None:
        """Write the lines in one request to the bucket of `rp`; a bucket deleted under a
        running gateway (404) is created again and the batch sent once more, as v1 does for a
        dropped database."""
        if not lines:
            return
        bucket, seconds = self.buckets.get(rp or "", (self.bucket, 0))
        try:
            body = "\n".join(lines).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise StorageError("batch is not valid UTF-8", retryable=False) from exc

        def send() -> None:
            for attempt in range(2):
                try:
                    self._writer.write(
                        bucket=bucket,
                        org=self.org,
                        record=body,
                        write_precision=WritePrecision.NS,  # type: ignore[arg-type]  # str enum
                    )
                    return
                except ApiException as exc:
                    if attempt or exc.status != 404 or self._no_buckets_api:
                        raise
                    log.warning("bucket %r not found; creating it again", bucket)
                    self._ensure_bucket(bucket, seconds)
                    if self._no_buckets_api:
                        raise

        await self._call(f"write of {len(lines)} lines to bucket {bucket!r}", send, write=True)

    async def query(self, influxql: str) -> list[dict[str, Any]]:
        raise StorageError(
            "InfluxQL queries (gridgate query, the API's history) need GRIDGATE_INFLUX_API=v1;"
            " InfluxDB 2.x serves them through its v1 compatibility API",
            retryable=False,
        )

    async def _call(self, what: str, call: Callable[[], T], *, write: bool = False) -> T:
        """`call` in a thread, its failures as StorageError: retryable when the server is
        down or busy; a refused token names the setting (retried only for a write: the
        points are not at fault)."""
        try:
            return await asyncio.to_thread(call)
        except ApiException as exc:
            status = exc.status or 0
            where = f"InfluxDB {what} failed ({status})"
            if status in (401, 403):
                raise StorageError(
                    f"{where}: the token was refused: check {TOKEN_VARIABLE} (it needs write"
                    " access to the buckets, and to create them)",
                    retryable=write,
                ) from None
            reason = str(exc.body or exc.reason or "").strip()[:300]
            raise StorageError(
                f"{where}: {reason}", retryable=status >= 500 or status in _RETRYABLE_4XX
            ) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise StorageError(
                f"InfluxDB at {self.url} unreachable: {type(exc).__name__}", retryable=True
            ) from None


__all__ = ["InfluxV2Client"]
