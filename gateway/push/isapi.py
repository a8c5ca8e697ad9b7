"""What a Hikvision terminal POSTs, split in memory into its event JSON and its pictures — and
the pictures are counted and let go at once (R3: a face image is the most sensitive thing that
reaches gridgate: never written to disk, spooled, logged or dead-lettered).

A terminal sends ``application/json`` (the event), or ``multipart/form-data`` with the event
in a part (commonly named ``event_log``; any part of type ``application/json`` or ``text/*``
is taken) and ``picturesNumber`` picture parts (``image/jpeg``). The multipart body is parsed
with python-multipart's push parser, never with a form parser that would spool large parts to
a temporary file. A terminal is known by its registry id and a token derived from it with
the gateway's secret: ``/push/hikvision/<device id>/<token>``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from python_multipart.multipart import MultipartParser, parse_options_header

from adapters.hikvision_isapi import terminal_token
from gateway.push.platforms import token_matches


@dataclass(frozen=True, slots=True)
class IsapiBody:
    """`event`: the event JSON (None: the body holds none that can be read); `pictures`:
    picture parts dropped; `serial`: the event's serialNo, for spotting a terminal's resend."""

    event: bytes | None
    pictures: int
    serial: int | None = None


def token_ok(secret: str, device_id: str, given: str) -> bool:
    return token_matches(terminal_token(secret, device_id), given)


def split(content_type: str, body: bytes) -> IsapiBody:
    kind, options = parse_options_header(content_type)
    if kind == b"multipart/form-data":
        boundary = options.get(b"boundary")
        event, pictures = _multipart(boundary, body) if boundary else (None, 0)
    elif kind in (b"application/json", b"text/json", b"text/plain", b""):
        event, pictures = body, 0
    else:
        event, pictures = None, 0
    return IsapiBody(event, pictures, None if event is None else _serial(event))


class _Parts:
    """python-multipart callbacks: keeps the first JSON part, counts the pictures."""

    def __init__(self) -> None:
        self.event: bytes | None = None
        self.pictures = 0
        self._field = b""
        self._value = b""
        self._headers: dict[bytes, bytes] = {}
        self._keep = False
        self._data: list[bytes] = []

    def on_part_begin(self) -> None:
        self._headers, self._data, self._keep = {}, [], False

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._field.strip().lower()] = self._value.strip()
        self._field = self._value = b""

    def on_headers_finished(self) -> None:
        kind = parse_options_header(self._headers.get(b"content-type", b""))[0]
        name = parse_options_header(self._headers.get(b"content-disposition", b""))[1].get(
            b"name", b""
        )
        if kind.startswith(b"image/"):
            self.pictures += 1
        elif self.event is None and (
            name == b"event_log" or kind in (b"application/json", b"text/json", b"text/plain")
        ):
            self._keep = True

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._keep:
            self._data.append(data[start:end])

    def on_part_end(self) -> None:
        if self._keep:
            self.event = b"".join(self._data)
        self._data, self._keep = [], False


def _multipart(boundary: bytes, body: bytes) -> tuple[bytes | None, int]:
    parts = _Parts()
    callbacks = {
        name: getattr(parts, name)
        for name in ("on_part_begin", "on_header_field", "on_header_value", "on_header_end",
                     "on_headers_finished", "on_part_data", "on_part_end")
    }  # fmt: skip
    try:
        parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
        parser.write(body)
        parser.finalize()
    except Exception:  # python-multipart raises several error types for a torn body
        return None, parts.pictures
    return parts.event, parts.pictures


def _serial(event: bytes) -> int | None:
    try:
        data = json.loads(event)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(data, dict) and isinstance(data.get("EventNotificationAlert"), dict):
        data = data["EventNotificationAlert"]
    body = data.get("AccessControllerEvent") if isinstance(data, dict) else None
    serial = body.get("serialNo") if isinstance(body, dict) else None
    return serial if isinstance(serial, int) and not isinstance(serial, bool) else None
