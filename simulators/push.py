"""NB-IoT devices' messages as their carrier platforms push them to the gateway over HTTP.

A message the formats encode under a ``$push/{community}/{platform}/…`` topic is not published
on MQTT: it is POSTed to the gateway's push listener the way the platform would — OneNET's
body signed with its token, CTWing's message to the URL ending in its token. A push not
answered 200 is sent again, as the platforms do (a few times, then given up and reported).
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import orjson

from adapters import onenet

RETRIES = 3  # OneNET and CTWing both resend a failed push about three times
RETRY_WAIT_S = 0.2  # doubling
WORKERS = 16  # pushes in flight: the gateway answers each after its durable hand-off


class Pusher:
    """Pushes on `WORKERS` threads; `on_done(ok)` is called once per message."""

    def __init__(
        self,
        url: str,
        *,
        onenet_token: str = "",
        ctwing_token: str = "",
        on_done: Callable[[bool], None],
        timeout_s: float = 15.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.onenet_token = onenet_token
        self.ctwing_token = ctwing_token
        self.on_done = on_done
        self._client = httpx.Client(timeout=timeout_s, limits=httpx.Limits(max_connections=WORKERS))
        self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="push")
        self._stop = threading.Event()
        self.resent = 0

    def send(self, topic: str, payload: bytes) -> None:
        self._pool.submit(self._push, topic, payload)

    def close(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=True)
        self._client.close()

    def request(self, topic: str, payload: bytes) -> tuple[str, bytes]:
        """The URL and body the platform named in `topic` would POST."""
        platform = topic.split("/")[2]
        if platform == "onenet":
            nonce = secrets.token_hex(4)
            return f"{self.url}/push/onenet", onenet.body(
                [orjson.loads(payload)], self.onenet_token, nonce
            )
        if platform == "ctwing":
            return f"{self.url}/push/ctwing/{self.ctwing_token}", payload
        raise ValueError(f"no platform {platform!r}")

    def _push(self, topic: str, payload: bytes) -> None:
        ok = False
        try:
            url, body = self.request(topic, payload)
            for attempt in range(RETRIES + 1):
                if attempt:
                    self.resent += 1
                    self._stop.wait(RETRY_WAIT_S * 2 ** (attempt - 1))
                try:
                    answer = self._client.post(
                        url, content=body, headers={"content-type": "application/json"}
                    )
                except httpx.HTTPError:
                    continue
                if answer.status_code == 200:
                    ok = True
                    break
        finally:
            self.on_done(ok)
