"""`create_app(settings)`: the FastAPI application. Its lifespan owns the runtime — it enters a
`Gateway` (stores, registry, alert side; no ingestion) for `gridgate api`, or uses the one
`gridgate run --api` already runs — and the live feeds' pollers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from gateway.alerts.model import Alert
from gateway.api import problems
from gateway.api.context import build
from gateway.api.feeds import AlertPoller, Feed, run_alert_feed, run_status_feed
from gateway.api.problems import PROBLEM_JSON
from gateway.api.routers import (
    alerts,
    audit,
    auth,
    deadletters,
    devices,
    health,
    places,
    readings,
    reident,
    ws,
)
from gateway.api.schemas import ProblemPublic
from gateway.runtime import Gateway
from gateway.settings import Settings
from gateway.web import WEB_ROOT

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
_PROBLEM = {"model": ProblemPublic, "content": {PROBLEM_JSON: {}}}
PROBLEMS: dict[int | str, dict[str, object]] = {
    401: {**_PROBLEM, "description": "missing, expired or unknown credentials"},
    403: {**_PROBLEM, "description": "the caller's role may not do this"},
    404: {**_PROBLEM, "description": "not found, or outside the caller's places"},
    422: {**_PROBLEM, "description": "the request does not match the API"},
}
STATUS_EVERY_S = 2.0


def create_app(
    settings: Settings,
    *,
    gateway: Gateway | None = None,
    clock_ns: Callable[[], int] | None = None,
) -> FastAPI:
    """The app. With `gateway` (entered by the caller) it serves that gateway's parts;
    without, its lifespan enters a `Gateway` of its own. `clock_ns` is the alerts' clock
    (a test's fake one)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            gw = gateway
            if gw is None:
                gw = await stack.enter_async_context(
                    Gateway(settings, alert_clock_ns=clock_ns or time.time_ns)
                )
            context = build(gw, clock_ns=clock_ns)
            app.state.context = context
            gauge = context.api_metrics.ws_clients

            def count(name: str, n: int) -> None:
                gauge.labels(name).set(n)

            alert_feed = Feed("alerts", settings.api_feed_queue, on_count=count)
            status_feed = Feed("status", settings.api_feed_queue, on_count=count)
            app.state.alert_feed, app.state.status_feed = alert_feed, status_feed
            stop = asyncio.Event()

            def render(alert: Alert) -> dict[str, object]:
                return alerts.alert_public(alert).model_dump(mode="json")

            hint = asyncio.Event()  # alerts changed in this process (`gridgate run --api`)
            context.alert_service.on_change.append(hint.set)
            tasks = [
                asyncio.create_task(
                    run_alert_feed(
                        alert_feed,
                        AlertPoller(gw.registry),
                        render,
                        stop,
                        settings.api_feed_poll_s,
                        hint,
                    ),
                    name="api-alert-feed",
                ),
                asyncio.create_task(
                    run_status_feed(
                        status_feed,
                        lambda scopes: ws.status_of(context, scopes),
                        stop,
                        STATUS_EVERY_S,
                    ),
                    name="api-status-feed",
                ),
            ]
            try:
                yield
            finally:
                stop.set()
                context.alert_service.on_change.remove(hint.set)
                await asyncio.gather(*tasks, return_exceptions=True)

    app = FastAPI(
        title="gridgate",
        summary="Smart-community gateway: alerts, devices, readings, audit",
        version="1",
        lifespan=lifespan,
    )
    problems.install(app)

    @app.middleware("http")
    async def measure(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        template = getattr(route, "path", "unmatched")
        context = getattr(request.app.state, "context", None)
        if context is not None:
            metrics = context.api_metrics
            metrics.requests.labels(request.method, template, str(response.status_code)).inc()
            metrics.latency.labels(request.method, template).observe(time.perf_counter() - started)
        return response

    v1 = APIRouter(prefix=API_PREFIX, responses=PROBLEMS)
    for module in (auth, places, devices, readings, alerts, reident, audit, deadletters, ws):
        v1.include_router(module.router)
    app.include_router(v1)
    app.include_router(health.router)

    @app.get("/", include_in_schema=False)
    def screen() -> FileResponse:
        """The property firm's monitoring screen (大屏)."""
        return FileResponse(WEB_ROOT / "screen" / "index.html")

    app.mount("/screen", StaticFiles(directory=WEB_ROOT / "screen"), name="screen")
    app.mount("/vendor", StaticFiles(directory=WEB_ROOT / "vendor"), name="vendor")
    app.mount("/shared", StaticFiles(directory=WEB_ROOT / "shared"), name="shared")
    app.mount("/m", StaticFiles(directory=WEB_ROOT / "member", html=True), name="member-page")
    return app


__all__ = ["API_PREFIX", "create_app"]
