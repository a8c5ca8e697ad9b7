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
from typing import Any

import httpx

from gateway.api.accounts import Accounts
from gateway.audit.store import AuditStore
from gateway.cli.api import serve_api
from gateway.registry import Registry
from gateway.runtime import Gateway
from gateway.settings import Settings
from tests.support.influx_util import free_port
from tests.support.services import ROOT

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
