"""A local stand-in for the routing policy's `emergency` webhook, for `gridgate demo` when
GRIDGATE_EMERGENCY_WEBHOOK_URL is unset: level-I alerts reach it signed, as a 119/120 dispatch
integration would get them, instead of being reported undeliverable on every run."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import uvicorn
from fastapi import FastAPI, Request, Response

from gateway.alerts.delivery import verify_signature
from gateway.alerts.delivery.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER
from gateway.settings import environment

EMERGENCY_URL_ENV = "GRIDGATE_EMERGENCY_WEBHOOK_URL"
SECRETS_ENV = "GRIDGATE_WEBHOOK_SECRETS"


@dataclass
class DispatchStandIn:
    """A local receiver for the routing policy's `emergency` webhook when none is configured:
    level-I alerts reach it signed, as a 119/120 dispatch integration would get them."""

    received: int = 0
    forged: int = 0
    url: str = ""
    environ: dict[str, str] = field(default_factory=dict)  # for the gateway's alert side

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[DispatchStandIn]:
        secret = secrets.token_hex(16)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}/emergency"
        app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

        @app.post("/emergency")
        async def emergency(request: Request) -> Response:
            body = await request.body()
            ok = verify_signature(
                secret,
                request.headers.get(TIMESTAMP_HEADER, ""),
                body,
                request.headers.get(SIGNATURE_HEADER, ""),
            )
            if not ok:
                self.forged += 1
                return Response(status_code=401)
            self.received += 1
            return Response(status_code=204)

        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        server = uvicorn.Server(config)
        known = json.loads(environment().get(SECRETS_ENV, "") or "{}")
        self.environ = {
            EMERGENCY_URL_ENV: self.url,
            SECRETS_ENV: json.dumps(known | {self.url: secret}),
        }
        task = asyncio.create_task(server.serve(sockets=[sock]), name="dispatch-stand-in")
        try:
            yield self
        finally:
            server.should_exit = True
            with contextlib.suppress(Exception):  # it only ever counted
                await task
            sock.close()
