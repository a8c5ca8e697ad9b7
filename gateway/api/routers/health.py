"""Liveness, readiness and Prometheus metrics (no credentials: loopback, nothing personal)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from gateway.api.deps import Context
from gateway.api.problems import problem_response
from gateway.api.schemas import HealthPublic
from gateway.mqtt.source import broker_reachable

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthPublic)
def healthz() -> HealthPublic:
    """The process answers."""
    return HealthPublic(status="ok")


@router.get("/readyz", response_model=HealthPublic, responses={503: {"model": HealthPublic}})
async def readyz(context: Context) -> HealthPublic | Response:
    """The broker, InfluxDB, the registry database and the audit log are reachable."""
    settings = context.settings
    checks: dict[str, str] = {}

    def database() -> None:
        with context.registry.reading() as s:
            s.execute(text("SELECT 1"))

    checks["influxdb"] = "ok" if await context.influx.ping() else "unreachable"
    checks["broker"] = (
        "ok"
        if await broker_reachable(settings.mqtt_host, settings.mqtt_port, timeout_s=2.0)
        else "unreachable"
    )
    # readiness reports what failed, whatever it was; nothing is retried here
    try:
        await asyncio.to_thread(database)
        checks["registry"] = "ok"
    except Exception as exc:
        checks["registry"] = f"unreachable ({type(exc).__name__})"
    try:
        await asyncio.to_thread(context.audit.count)
        checks["audit"] = "ok"
    except Exception as exc:
        checks["audit"] = f"unreachable ({type(exc).__name__})"
    if all(v == "ok" for v in checks.values()):
        return HealthPublic(status="ok", checks=checks)
    return problem_response(503, "not ready", checks=checks)


@router.get("/metrics", response_class=Response)
def metrics(context: Context) -> Response:
    body = generate_latest(context.api_metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
