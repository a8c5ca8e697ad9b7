"""The HTTP listener devices' platforms and terminals push to (R1, R8): OneNET, CTWing and
Hikvision terminals.

Routes (only those of platforms with a token configured):

* ``GET  /push/onenet``  OneNET's URL verification: answers ``msg`` when signed, else 401;
* ``POST /push/onenet``  OneNET's data push (signed: see `gateway.push.platforms`);
* ``POST /push/ctwing/<token>``  CTWing's subscription push;
* ``POST /push/hikvision/<device id>/<token>``  a Hikvision terminal's event (JSON or multipart
  with pictures, which are dropped on arrival: `gateway.push.isapi`). A terminal the registry
  does not know (as a ``hikvision_isapi`` device) is refused with 403.

Every answer is one of: 200 after the durable hand-off of every message in the push (a
malformed body or an unknown device is dead-lettered, then answered 200 so the platform does
not resend garbage forever); 401 for a wrong signature or token; 413 for a body over 1 MiB;
503 when the queue is full or the hand-off takes longer than `push_answer_s` (the platform
resends). Each is counted in `gridgate_push_requests_total{platform,outcome}`.

A body answered 200 is remembered (its SHA-256, the last `REMEMBERED` of them): the same body
again — the platform resending after a lost answer, or someone replaying it — is answered 200
and counted as ``replayed``, not stored twice. Stored twice would do no harm to the readings
(InfluxDB keeps one point per series and time) but would count alerts' repeats twice.

The listener runs in the ingest process, beside the pipeline it feeds: the answer waits for
that pipeline's ack. Its socket has SO_REUSEPORT, so the workers of `gridgate run --workers`
share one port and the kernel spreads the pushes. Nothing here logs a URL or a body.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import logging
import socket

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from adapters.nbiot import (
    MALFORMED,
    NO_COMMUNITY,
    NO_DEVICE,
    UNKNOWN,
    UNREGISTERED,
    push_topic,
)
from devices.errors import ConfigError
from gateway.pipeline.core import DeviceDirectory
from gateway.pipeline.metrics import GatewayMetrics
from gateway.push import isapi
from gateway.push.platforms import (
    MAX_BODY_BYTES,
    PushItem,
    onenet_verified,
    parse_ctwing,
    parse_onenet,
    token_matches,
)
from gateway.push.source import PushSource
from gateway.serving import serve_until
from gateway.settings import Settings

log = logging.getLogger(__name__)

REMEMBERED = 100_000
HIKVISION = "hikvision_isapi"


class PushListener:
    def __init__(
        self,
        settings: Settings,
        source: PushSource,
        directory: DeviceDirectory,
        metrics: GatewayMetrics,
    ) -> None:
        if settings.push_port is None:
            raise ConfigError("the push listener needs GRIDGATE_PUSH_PORT")
        self.host, self.port = settings.push_host, settings.push_port
        self.source = source
        self.directory = directory
        self.metrics = metrics
        self.answer_s = settings.push_answer_s
        self._onenet = settings.onenet_token.get_secret_value() if settings.onenet_token else None
        self._ctwing = settings.ctwing_token.get_secret_value() if settings.ctwing_token else None
        hikvision = settings.hikvision_secret
        self._hikvision = hikvision.get_secret_value() if hikvision else None
        self._answered: collections.OrderedDict[bytes, None] = collections.OrderedDict()

    @property
    def platforms(self) -> list[str]:
        tokens = (("onenet", self._onenet), ("ctwing", self._ctwing), (HIKVISION, self._hikvision))
        return [p for p, t in tokens if t]

    def app(self) -> Starlette:
        routes = []
        if self._onenet:
            routes.append(Route("/push/onenet", self._onenet_verify, methods=["GET"]))
            routes.append(Route("/push/onenet", self._onenet_push, methods=["POST"]))
        if self._ctwing:
            routes.append(Route("/push/ctwing/{token}", self._ctwing_push, methods=["POST"]))
        if self._hikvision:
            route = "/push/hikvision/{device}/{token}"
            routes.append(Route(route, self._isapi_push, methods=["POST"]))
        return Starlette(routes=routes)

    def bind(self) -> socket.socket:
        """The listening socket, shared by the workers on one host (SO_REUSEPORT)."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        try:
            return socket.create_server((self.host, self.port), family=family, reuse_port=True)
        except OSError as exc:
            raise ConfigError(
                f"the push listener cannot listen on {self.host}:{self.port} "
                f"(GRIDGATE_PUSH_HOST/GRIDGATE_PUSH_PORT): {exc.strerror or exc}"
            ) from None

    async def serve(self, stop: asyncio.Event, sock: socket.socket) -> None:
        config = uvicorn.Config(
            self.app(), log_level="warning", access_log=False, lifespan="off"
        )  # no access log: a CTWing or terminal URL carries its token
        log.info("push listener on %s:%d for %s", self.host, self.port,
                 ", ".join(self.platforms) or "no platform (no token set)")  # fmt: skip
        await serve_until(config, stop, [sock])

    # -- routes -----------------------------------------------------------------------------

    async def _onenet_verify(self, request: Request) -> Response:
        q = request.query_params
        msg, nonce, signature = q.get("msg", ""), q.get("nonce", ""), q.get("signature", "")
        assert self._onenet is not None
        if msg and nonce and onenet_verified(self._onenet, nonce, msg, signature):
            self._count("onenet", "verified")
            return PlainTextResponse(msg)
        return self._refuse("onenet")

    async def _onenet_push(self, request: Request) -> Response:
        body = await self._body(request, "onenet")
        if isinstance(body, Response):
            return body
        digest = hashlib.sha256(body).digest()
        if digest in self._answered:
            return self._replayed("onenet")
        assert self._onenet is not None
        parsed = parse_onenet(body, self._onenet)
        if not parsed.signed:
            return self._refuse("onenet")
        return await self._hand_off_items("onenet", parsed.items, digest)

    async def _ctwing_push(self, request: Request) -> Response:
        assert self._ctwing is not None
        if not token_matches(self._ctwing, request.path_params["token"]):
            return self._refuse("ctwing")
        body = await self._body(request, "ctwing")
        if isinstance(body, Response):
            return body
        digest = hashlib.sha256(body).digest()
        if digest in self._answered:
            return self._replayed("ctwing")
        return await self._hand_off_items("ctwing", parse_ctwing(body), digest)

    async def _isapi_push(self, request: Request) -> Response:
        assert self._hikvision is not None
        device_id, token = request.path_params["device"], request.path_params["token"]
        if not isapi.token_ok(self._hikvision, device_id, token):
            return self._refuse(HIKVISION)
        info = self.directory.lookup(device_id)
        if info is None or info.adapter != HIKVISION:
            return self._answer(HIKVISION, "unknown_terminal", 403)
        body = await self._body(request, HIKVISION)
        if isinstance(body, Response):
            return body
        parts = isapi.split(request.headers.get("content-type", ""), body)
        del body  # the pictures go with it: nothing below ever sees them
        if parts.pictures:
            self.metrics.dropped_fields["face_picture"] += parts.pictures
        seen = f"{device_id}:{parts.serial}".encode() if parts.serial is not None else parts.event
        digest = hashlib.sha256(b"isapi:" + (seen or b"")).digest()
        if parts.event is not None and digest in self._answered:
            return self._replayed(HIKVISION)
        community = info.location.community
        family = info.family.value if parts.event is not None else MALFORMED
        topic = push_topic(community, HIKVISION, family, device_id)
        return await self._hand_off(
            HIKVISION, [(topic, parts.event or b"")], digest, malformed=parts.event is None
        )

    # -- helpers ----------------------------------------------------------------------------

    async def _body(self, request: Request, platform: str) -> bytes | Response:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            return self._answer(platform, "too_large", 413)
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                return self._answer(platform, "too_large", 413)
        return body

    def _topic(self, platform: str, item: PushItem) -> str:
        """The registry says which device, community and family; the body only names it."""
        if item.imei is None:
            return push_topic(NO_COMMUNITY, platform, UNKNOWN, NO_DEVICE)
        info = self.directory.lookup(item.imei)
        if info is None or info.adapter != platform:  # not this platform's device
            return push_topic(NO_COMMUNITY, platform, UNREGISTERED, item.imei)
        return push_topic(info.location.community, platform, info.family.value, item.imei)

    async def _hand_off_items(
        self, platform: str, items: tuple[PushItem, ...], digest: bytes
    ) -> Response:
        messages = [(self._topic(platform, i), i.payload) for i in items]
        malformed = any(i.imei is None for i in items)
        return await self._hand_off(platform, messages, digest, malformed=malformed)

    async def _hand_off(
        self, platform: str, messages: list[tuple[str, bytes]], digest: bytes, *, malformed: bool
    ) -> Response:
        done = self.source.submit(messages)
        if done is None:
            return self._answer(platform, "busy", 503)
        done.add_done_callback(lambda _: self._remember(digest))
        try:
            await asyncio.wait_for(asyncio.shield(done), self.answer_s)
        except TimeoutError:  # handed off later all the same: the platform's resend is a replay
            return self._answer(platform, "timeout", 503)
        return self._answer(platform, "malformed" if malformed else "accepted", 200)

    def _remember(self, digest: bytes) -> None:
        self._answered[digest] = None
        if len(self._answered) > REMEMBERED:
            self._answered.popitem(last=False)

    def _count(self, platform: str, outcome: str) -> None:
        self.metrics.push_requests[(platform, outcome)] += 1

    def _answer(self, platform: str, outcome: str, status: int) -> Response:
        self._count(platform, outcome)
        return PlainTextResponse("ok" if status == 200 else outcome, status_code=status)

    def _refuse(self, platform: str) -> Response:
        return self._answer(platform, "unauthorized", 401)

    def _replayed(self, platform: str) -> Response:
        return self._answer(platform, "replayed", 200)
