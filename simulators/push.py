"""NB-IoT devices' messages as their carrier platforms push them to the gateway over HTTP, and
Hikvision terminals' events as the terminals push them.

A message the formats encode under a ``$push/{community}/{platform}/…`` topic is not published
on MQTT: it is POSTed to the gateway's push listener the way the platform would — OneNET's
body signed with its token, CTWing's message to the URL ending in its token, a terminal's
face event as multipart with a generated JPEG (its other events as JSON), numbered by the
terminal (serialNo) and sent to its own URL. A push not answered 200 is sent again, as the
platforms and terminals do (a few times, then given up and reported).
"""

from __future__ import annotations

import itertools
import secrets
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import orjson

from adapters import onenet
from adapters.hikvision_isapi import terminal_token

RETRIES = 3  # OneNET and CTWing both resend a failed push about three times
RETRY_WAIT_S = 0.2  # doubling
WORKERS = 16  # pushes in flight: the gateway answers each after its durable hand-off
JSON = "application/json"
FACE_CODES = frozenset({0x4B, 0x4C, 0x4D, 0x4E, 0x50})  # a face event comes with its picture


def face_jpeg(serial: int) -> bytes:
    """A small JPEG (start, a comment, end of image) of its own for each event, standing in for
    the captured face: the gateway must drop it on arrival, and a test can look for it."""
    comment = f"gridgate-sim face {serial} {secrets.token_hex(8)}".encode()
    return b"\xff\xd8\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + b"\xff\xd9"


def multipart(event: bytes, picture: bytes) -> tuple[bytes, str]:
    """The event and one picture as a terminal sends them (multipart/form-data)."""
    boundary = f"MIME_boundary_{secrets.token_hex(6)}"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="event_log"\r\n'
            "Content-Type: application/json\r\n\r\n"
        ).encode()
        + event
        + (
            f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="Picture"; '
            'filename="face.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
        ).encode()
        + picture
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


class Pusher:
    """Pushes on `WORKERS` threads; `on_done(ok)` is called once per message."""

    def __init__(
        self,
        url: str,
        *,
        onenet_token: str = "",
        ctwing_token: str = "",
        hikvision_secret: str = "",
        on_done: Callable[[bool], None],
        timeout_s: float = 15.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.onenet_token = onenet_token
        self.ctwing_token = ctwing_token
        self.hikvision_secret = hikvision_secret
        self._serials: dict[str, itertools.count[int]] = {}
        self._lock = threading.Lock()
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

    def request(self, topic: str, payload: bytes) -> tuple[str, bytes, str]:
        """The URL, body and content type the platform named in `topic` would POST."""
        platform, device = topic.split("/")[2], topic.split("/")[-1]
        if platform == "hikvision_isapi":
            return self._isapi(device, payload)
        if platform == "onenet":
            message = orjson.loads(payload)
            signed = onenet.body([message], self.onenet_token, secrets.token_hex(4))
            return f"{self.url}/push/onenet", signed, JSON
        if platform == "ctwing":
            return f"{self.url}/push/ctwing/{self.ctwing_token}", payload, JSON
        raise ValueError(f"no platform {platform!r}")

    def _isapi(self, device: str, payload: bytes) -> tuple[str, bytes, str]:
        event = orjson.loads(payload)
        url = f"{self.url}/push/hikvision/{device}/{terminal_token(self.hikvision_secret, device)}"
        body = event.get("AccessControllerEvent")
        if body is None:  # a plate camera's ANPR event
            return url, payload, JSON
        with self._lock:
            body["serialNo"] = next(self._serials.setdefault(device, itertools.count(1)))
        if body.get("subEventType") not in FACE_CODES:
            return url, orjson.dumps(event), JSON
        body["picturesNumber"] = 1
        return url, *multipart(orjson.dumps(event), face_jpeg(body["serialNo"]))

    def _push(self, topic: str, payload: bytes) -> None:
        ok = False
        try:
            url, body, content_type = self.request(topic, payload)
            for attempt in range(RETRIES + 1):
                if attempt:
                    self.resent += 1
                    self._stop.wait(RETRY_WAIT_S * 2 ** (attempt - 1))
                try:
                    answer = self._client.post(
                        url, content=body, headers={"content-type": content_type}
                    )
                except httpx.HTTPError:
                    continue
                if answer.status_code == 200:
                    ok = True
                    break
        finally:
            self.on_done(ok)
