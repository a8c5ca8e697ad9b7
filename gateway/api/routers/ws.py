"""WebSocket live feeds: `/ws/alerts` (open alerts in your places, then every change) and
`/ws/status` (your places' device status, then every change). Credentials as for HTTP — an
``Authorization: Bearer`` header, or ``?token=`` where a browser cannot set headers. A client
without valid credentials is closed with 4401, one that falls behind with 4008."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from gateway.api.context import ApiContext
from gateway.api.feeds import SLOW_CLOSE_CODE, UNAUTHORISED_CLOSE_CODE, Feed, Subscriber
from gateway.api.routers.alerts import alert_public
from gateway.api.routers.devices import summarise

router = APIRouter(prefix="/ws", tags=["live feeds"])
SNAPSHOT_ALERTS = 200


def _credential(websocket: WebSocket) -> str | None:
    header = websocket.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return websocket.query_params.get("token")


async def _serve(websocket: WebSocket, feed: Feed, snapshot: Any) -> None:
    context: ApiContext = websocket.app.state.context
    credential = _credential(websocket)
    caller = await asyncio.to_thread(context.accounts.principal, credential) if credential else None
    await websocket.accept()
    if caller is None:
        await websocket.close(UNAUTHORISED_CLOSE_CODE, "missing, expired or unknown credentials")
        return
    sub = feed.subscribe(caller)
    try:
        await websocket.send_json(await asyncio.to_thread(snapshot, context, sub))
        await _pump(websocket, sub)
    except WebSocketDisconnect:
        pass
    finally:
        feed.unsubscribe(sub)


async def _pump(websocket: WebSocket, sub: Subscriber) -> None:
    receiving = asyncio.ensure_future(websocket.receive())
    try:
        while True:
            getting = asyncio.ensure_future(sub.queue.get())
            done, _ = await asyncio.wait({receiving, getting}, return_when=asyncio.FIRST_COMPLETED)
            if receiving in done:
                getting.cancel()
                message = receiving.result()
                if message["type"] == "websocket.disconnect":
                    return
                receiving = asyncio.ensure_future(websocket.receive())  # clients may ping
                continue
            item = getting.result()
            if item.get("type") == "_slow":
                context: ApiContext = websocket.app.state.context
                context.api_metrics.ws_closed_slow.labels(websocket.url.path).inc()
                await websocket.close(SLOW_CLOSE_CODE, "too slow: reconnect for a fresh snapshot")
                return
            await websocket.send_json(item)
    finally:
        receiving.cancel()
        with contextlib.suppress(BaseException):
            await receiving


def _alert_snapshot(context: ApiContext, sub: Subscriber) -> dict[str, Any]:
    alerts = []
    for scope in sub.caller.scopes:
        alerts += context.alerts.open_alerts(place_prefix=scope, limit=SNAPSHOT_ALERTS)
    unique = {a.id: a for a in alerts}
    data = [
        alert_public(a).model_dump(mode="json")
        for a in sorted(unique.values(), key=lambda a: -a.id)
    ]
    return {"type": "snapshot", "alerts": data[:SNAPSHOT_ALERTS]}


def status_of(context: ApiContext, scopes: tuple[str, ...]) -> dict[str, Any]:
    rows = context.registry.device_states(scopes)
    return summarise(context, rows).model_dump(mode="json")


def _status_snapshot(context: ApiContext, sub: Subscriber) -> dict[str, Any]:
    status = status_of(context, sub.caller.scopes)
    sub.last_status = status
    return {"type": "snapshot", "status": status}


@router.websocket("/alerts")
async def alerts_feed(websocket: WebSocket) -> None:
    await _serve(websocket, websocket.app.state.alert_feed, _alert_snapshot)


@router.websocket("/status")
async def status_feed(websocket: WebSocket) -> None:
    await _serve(websocket, websocket.app.state.status_feed, _status_snapshot)
