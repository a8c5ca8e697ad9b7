"""InfluxDB through the v1 HTTP API: ``/write`` line protocol and InfluxQL ``/query``.

Served natively by InfluxDB 1.x (the Debian 1.6.7 package is the test and demo server) and by
2.x/3.x through their v1 compatibility API, so one client covers every deployment.

Errors come out as ``StorageError``; ``retryable`` tells the writer whether to keep the batch
(spool and retry: server down, 5xx, timeout) or give up on it (4xx: the data or the request is
wrong and will be wrong again). Behaviour of influxd 1.6.7 this relies on, checked by hand:

* ``/write`` answers 204; 400 ``partial write: …`` when some lines were refused (the others
  are stored); 400 without that prefix for other refusals — e.g. two points of one batch giving
  a new field different types stores nothing of the batch; 404 for a missing database; 413 above
  ``max-body-size`` (25 MB by default); 500 for a missing retention policy.
* ``/query`` answers 400 for a parse error and 200 with a per-statement ``error`` otherwise;
  DDL such as ``CREATE DATABASE`` wants POST (GET only warns, but may be refused elsewhere).
* JSON numbers lose the float/int distinction: a float field holding 2.0 comes back as ``2``,
  and one holding 2.26797932753915e17 as an int that only equals the float after ``float()``.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from devices.errors import StorageError
from gateway.closing import ClosingClient

CA_VARIABLE = "GRIDGATE_INFLUX_TLS_CA_FILE"
USER_VARIABLE, PASSWORD_VARIABLE = "GRIDGATE_INFLUX_USERNAME", "GRIDGATE_INFLUX_PASSWORD"

__all__ = ["InfluxV1Client", "quote_ident", "quote_literal"]

log = logging.getLogger(__name__)

# 4xx that mean "later", not "never": request timeout, rate limited (2.x/3.x send 429).
_RETRYABLE_4XX = frozenset({408, 429})


def quote_ident(name: str) -> str:
    """An InfluxQL identifier (database, measurement, tag, field) in double quotes."""
    escaped = name.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def quote_literal(value: str) -> str:
    """An InfluxQL string literal in single quotes, e.g. a tag value in a WHERE clause."""
    escaped = value.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")
    return f"'{escaped}'"


def _error_text(response: httpx.Response) -> str:
    """InfluxDB's own words: the JSON ``error``, else the header, else the body."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])
    header = response.headers.get("X-Influxdb-Error")
    if header:
        return str(header)
    return response.text.strip()[:500] or response.reason_phrase


class InfluxV1Client(ClosingClient):
    """Async client for one database; use as ``async with InfluxV1Client(...) as client``."""

    def __init__(
        self,
        url: str,
        database: str,
        *,
        username: str | None = None,
        password: str | None = None,
        timeout_s: float = 10.0,
        retention_policy: str | None = None,
        retention_policies: Mapping[str, str] | None = None,
        ca_file: Path | None = None,
    ) -> None:
        """`retention_policies`: name → duration, created by `ensure_schema` (and again if
        they vanish: a dropped or restored database). `ca_file`: the CA that signed an
        https InfluxDB's certificate (default: the system's); verification is never off."""
        if not database:
            raise ValueError("database name is empty")
        self.url = url.rstrip("/")
        self.database = database
        self.retention_policy = retention_policy
        self.retention_policies = dict(retention_policies or {})
        self._account = "no user name" if username is None else f"user {username!r}"
        # Basic auth, not u=/p= parameters: a password in a URL ends up in access logs.
        auth = httpx.BasicAuth(username, password or "") if username is not None else None
        verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=str(ca_file)) if ca_file is not None else True
        )
        self._http = httpx.AsyncClient(
            base_url=self.url, auth=auth, timeout=timeout_s, verify=verify
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def ping(self) -> bool:
        """True when the server answers /ping; never raises, so it suits health checks."""
        try:
            response = await self._http.get("/ping")
        except httpx.HTTPError as exc:
            log.debug("influx ping failed: %s", exc)
            return False
        return response.is_success

    async def ensure_database(self) -> None:
        """Create the database if missing; CREATE DATABASE is idempotent in InfluxQL."""
        await self._query(f"CREATE DATABASE {quote_ident(self.database)}", with_db=False)

    async def ensure_schema(self) -> None:
        """The database and every retention policy this client was given."""
        await self.ensure_database()
        for name, duration in self.retention_policies.items():
            await self.ensure_retention_policy(name, duration)

    async def ensure_retention_policy(self, name: str, duration: str) -> None:
        """Create the policy, or bring its duration to `duration` if it exists."""
        rows = await self.query(f"SHOW RETENTION POLICIES ON {quote_ident(self.database)}")
        existing = {row.get("name") for row in rows}
        verb = "ALTER" if name in existing else "CREATE"
        tail = " REPLICATION 1" if verb == "CREATE" else ""
        await self._query(
            f"{verb} RETENTION POLICY {quote_ident(name)} ON {quote_ident(self.database)}"
            f" DURATION {duration}{tail}",
            with_db=False,
        )

    async def write(self, lines: Sequence[str], *, rp: str | None = None) -> None:
        """Write the lines in one request; they must come from `encode_line` (no newlines)."""
        if not lines:
            return
        try:
            body = "\n".join(lines).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise StorageError("batch is not valid UTF-8", retryable=False) from exc
        params = {"db": self.database, "precision": "ns"}
        if rp or self.retention_policy:
            params["rp"] = rp or self.retention_policy or ""
        for attempt in range(2):
            response = await self._send(
                "POST",
                "/write",
                params=params,
                content=body,
                headers={"Content-Type": "text/plain; charset=utf-8"},
            )
            if response.is_success:
                return
            # The database was dropped under us (an operator, a restore): create it again
            # rather than dead-letter every point of the batch.
            text = _error_text(response)
            if attempt == 0 and (
                (response.status_code == 404 and "database not found" in text)
                or (response.status_code == 500 and "retention policy not found" in text)
            ):
                log.warning("%s in %r; creating the schema again", text[:80], self.database)
                await self.ensure_schema()
                continue
            break
        text = _error_text(response)
        status = response.status_code
        where = f"InfluxDB write of {len(lines)} lines to {self.database!r} failed ({status})"
        if status == 400 and text.startswith("partial write"):
            raise StorageError(
                f"{where}: InfluxDB kept the points it accepted and dropped the others, which "
                f"it would drop again: {text}",
                retryable=False,
            )
        if status == 413:
            raise StorageError(
                f"{where}: body of {len(body)} bytes exceeds the server's max-body-size: "
                "send smaller batches",
                retryable=False,
            )
        if status == 500 and "retention policy not found" in text:
            # influxd 1.x answers 500 here, but retrying cannot create the policy.
            raise StorageError(f"{where}: {text}", retryable=False)
        raise StorageError(f"{where}: {text}", retryable=self._retryable(status))

    async def query(self, influxql: str) -> list[dict[str, Any]]:
        """Rows of every series of every statement, flattened to dicts with ns epoch times.

        A series' tags (present with GROUP BY) are merged into each of its rows.
        """
        rows: list[dict[str, Any]] = []
        for result in await self._query(influxql, with_db=True):
            for series in result.get("series", ()):
                tags = series.get("tags") or {}
                columns = series.get("columns", [])
                for values in series.get("values", ()):
                    row = dict(tags)
                    row.update(zip(columns, values, strict=False))
                    rows.append(row)
        return rows

    async def count(self, measurement: str, field: str, *, rp: str | None = None) -> int:
        """Number of points in `measurement` that have `field` (0 when there are none)."""
        source = quote_ident(measurement)
        if rp or self.retention_policy:
            source = f"{quote_ident(rp or self.retention_policy or '')}.{source}"
        rows = await self.query(f"SELECT COUNT({quote_ident(field)}) FROM {source}")
        return sum(int(row.get("count") or 0) for row in rows)

    async def _query(self, influxql: str, *, with_db: bool) -> list[dict[str, Any]]:
        """POST, so DDL and SELECT … INTO work too; returns the raw statement results."""
        params = {"q": influxql, "epoch": "ns"}
        if with_db:
            params["db"] = self.database
        response = await self._send("POST", "/query", params=params)
        status = response.status_code
        if not response.is_success:
            raise StorageError(
                f"InfluxDB query failed ({status}): {_error_text(response)}",
                retryable=self._retryable(status),
            )
        try:
            payload = response.json()
        except ValueError as exc:
            raise StorageError("InfluxDB query answer is not JSON", retryable=False) from exc
        if not isinstance(payload, dict):
            raise StorageError("InfluxDB query answer is not a JSON object", retryable=False)
        if "error" in payload:
            raise StorageError(f"InfluxDB query failed: {payload['error']}", retryable=False)
        results: list[dict[str, Any]] = payload.get("results", [])
        for result in results:
            if "error" in result:
                raise StorageError(
                    f"InfluxDB statement {result.get('statement_id')} failed: {result['error']}",
                    retryable=False,
                )
            if result.get("partial"):
                # max-row-limit cut the answer; a short answer would look like missing data.
                raise StorageError(
                    "InfluxDB truncated the query answer (max-row-limit): narrow the query",
                    retryable=False,
                )
        return results

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One HTTP request with transport failures turned into retryable StorageErrors, and
        a refused account into one that names the settings: at start (a query) it ends the
        gateway, since a password does not fix itself; for a write (the account revoked under a
        running gateway) it is retried or spooled — the points are not at fault."""
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise StorageError(f"InfluxDB at {self.url} timed out", retryable=True) from exc
        except httpx.TransportError as exc:
            if "CERTIFICATE_VERIFY_FAILED" in str(exc):
                raise StorageError(
                    f"InfluxDB at {self.url}: its certificate is not trusted (check"
                    f" {CA_VARIABLE}): {exc}",
                    retryable=True,
                ) from exc
            raise StorageError(
                f"InfluxDB at {self.url} unreachable: {type(exc).__name__}: {exc}",
                retryable=True,
            ) from exc
        except httpx.HTTPError as exc:
            raise StorageError(f"InfluxDB request failed: {exc}", retryable=False) from exc
        if response.status_code in (401, 403):
            raise StorageError(
                f"InfluxDB at {self.url} refused {self._account} ({response.status_code}:"
                f" {_error_text(response)[:120]}): check {USER_VARIABLE} and"
                f" {PASSWORD_VARIABLE}; the account needs ALL PRIVILEGES to create the"
                " database and its retention policies",
                retryable=path == "/write",
            )
        return response

    @staticmethod
    def _retryable(status: int) -> bool:
        return status >= 500 or status in _RETRYABLE_4XX
