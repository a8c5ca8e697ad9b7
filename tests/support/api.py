"""The gateway with its HTTP API in this test's event loop (as `gridgate run --api`), on a
free loopback port, and what API tests share: accounts, logging in, and problem checks."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from gateway.api.accounts import Accounts
from gateway.audit.store import AuditStore
from gateway.cli.api import serve_api
from gateway.registry import Registry
from gateway.runtime import Gateway
from gateway.settings import Settings
from tests.support.community import community_settings
from tests.support.influx_util import free_port
from tests.support.services import ROOT, Services

PASSWORD = "correct horse battery"
PROBLEM = "application/problem+json"


@dataclass
class ApiHandle:
    url: str
    gateway: Gateway
    settings: Settings

    def client(self, credential: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {credential}"} if credential else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30)

    async def login(self, user: str, password: str = PASSWORD) -> str:
        async with self.client() as c:
            r = await c.post("/api/v1/auth/token", data={"username": user, "password": password})
        assert r.status_code == 200, r.text
        token: str = r.json()["access_token"]
        return token


@asynccontextmanager
async def running_api(
    settings: Settings,
    clock_ns: Callable[[], int] = time.time_ns,
    *,
    ingest: bool = True,
) -> AsyncIterator[ApiHandle]:
    """Gateway (ingesting unless told not to) and API on one `Gateway`, stopped on exit."""
    settings = settings.model_copy(update={"api_port": free_port()})
    stop, ready = asyncio.Event(), asyncio.Event()
    async with Gateway(settings, alert_clock_ns=clock_ns) as gateway:
        tasks = [asyncio.create_task(serve_api(settings, stop, gateway), name="api")]
        if ingest:
            tasks.append(asyncio.create_task(gateway.run(stop, ready), name="gateway"))
        url = f"http://127.0.0.1:{settings.api_port}"
        try:
            await _until_up(url, tasks)
            if ingest:
                await asyncio.wait_for(ready.wait(), 30)
            yield ApiHandle(url, gateway, settings)
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)


async def _until_up(url: str, tasks: list[asyncio.Task[Any]]) -> None:
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient(base_url=url, timeout=2) as c:
        while True:
            for t in tasks:
                if t.done():
                    t.result()  # raises what stopped it
            try:
                if (await c.get("/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("the API did not come up")
            await asyncio.sleep(0.05)


def api_settings(
    services: Services, code: str, influx_db: str, tmp: Path, registry_url: str, **extra: Any
) -> Settings:
    """A registered community's gateway settings with the test's own audit log."""
    return community_settings(
        services, code, influx_db, tmp, registry_url, audit_path=tmp / "audit.sqlite3", **extra
    )


def add_accounts(settings: Settings, users: dict[str, dict[str, str | None]]) -> None:
    """user id → {"role": staff role or None, "scope": place or None}, all with PASSWORD."""
    audit = AuditStore(settings.audit_path)
    try:
        with Registry.open(settings.registry_url, audit=audit) as registry:
            accounts = Accounts(registry, audit)
            for user, spec in users.items():
                accounts.add_user(user, PASSWORD, role=spec.get("role"), scope=spec.get("scope"),
                                  actor="test")  # fmt: skip
    finally:
        audit.close()


def api_key(settings: Settings, role: str, scope: str) -> str:
    audit = AuditStore(settings.audit_path)
    try:
        with Registry.open(settings.registry_url, audit=audit) as registry:
            text, _ = Accounts(registry, audit).create_key(role, scope, actor="test")
            return text
    finally:
        audit.close()


def audit_verify(settings: Settings) -> subprocess.CompletedProcess[str]:
    """`gridgate audit verify` on the settings' audit log and registry, as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "audit", "verify"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "GRIDGATE_AUDIT_PATH": str(settings.audit_path),
             "GRIDGATE_REGISTRY_URL": settings.registry_url},
    )  # fmt: skip


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


async def crawl(api: ApiHandle, credential: str) -> dict[str, str]:
    """Every read the API offers, as `credential` sees it: each list page by page, each device
    and alert one by one, every readings field and aggregate, the audit log, dead-letter
    counts, metrics, and both live feeds' snapshots — response texts by endpoint, for the
    privacy leak search."""
    from gateway.api.history import MEASUREMENTS, queryable_fields

    out: dict[str, str] = {}
    async with api.client(credential) as c:

        async def get(path: str, **params: Any) -> Any:
            r = await c.get(path, params=params)
            assert r.status_code == 200, (path, params, r.status_code, r.text[:300])
            out[f"{path} {sorted(params.items())}"] = r.text
            return r.json()

        async def pages(path: str, **params: Any) -> list[dict[str, Any]]:
            items: list[dict[str, Any]] = []
            offset = 0
            while True:
                page = await get(path, offset=offset, limit=500, **params)
                items += page["data"]
                offset += 500
                if offset >= page["count"]:
                    return items

        for path in ("/api/v1/places", "/api/v1/members", "/api/v1/devices/status",
                     "/api/v1/reident/requests"):  # fmt: skip
            await get(path)
        roles = set((await get("/api/v1/auth/me"))["roles"])
        await get("/api/v1/places", rooms="true")
        for device in await pages("/api/v1/devices"):
            await get(f"/api/v1/devices/{device['id']}", history=500)
        for alert in await pages("/api/v1/alerts"):
            await get(f"/api/v1/alerts/{alert['id']}")
        policy = api.gateway.policy
        for measurement in MEASUREMENTS:
            for field in sorted(queryable_fields(policy, measurement)):
                for fn in ("count", "last"):  # both apply to text fields too
                    await get("/api/v1/readings", measurement=measurement, field=field, fn=fn,
                              window="1h", group_by="unit")  # fmt: skip
        for name in ("entries", "elder_worn"):
            await get(f"/api/v1/aggregates/{name}", group_by="unit")
        if roles & {"admin", "auditor"}:
            await pages("/api/v1/audit")
        if "admin" in roles:
            await get("/api/v1/deadletters/counts")
        r = await c.get("/metrics")
        out["/metrics"] = r.text
    import websockets

    for feed in ("alerts", "status"):
        url = api.url.replace("http", "ws") + f"/api/v1/ws/{feed}?token={credential}"
        async with websockets.connect(url) as ws:
            out[f"ws {feed}"] = str(await asyncio.wait_for(ws.recv(), 10))
    return out
