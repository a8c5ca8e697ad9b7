"""What a carrier platform's push must prove, and the device messages in it (pure).

OneNET (China Mobile) verifies the endpoint with a GET carrying ``msg``, ``nonce`` and
``signature`` = base64(md5(token + nonce + msg)), to be answered with ``msg``; it then POSTs
``{"msg": <message or array>, "msg_signature": …, "nonce": …}`` signed the same way over the
``msg`` JSON text. The signature is checked over ``msg`` serialised compactly in its own key
order (what OneNET's own receivers do), in constant time.

CTWing (China Telecom) signs nothing: it pushes to the URL configured for the subscription.
That URL carries a token of ours as its last path segment (``/push/ctwing/<token>``), compared
in constant time. A URL is a secret: it is never logged.

Device identity is the IMEI each message names, looked up in the registry by the caller.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from typing import Any

from adapters.onenet import compact, signature
from devices.topics import is_valid_id

MAX_BODY_BYTES = 1024 * 1024
MAX_MESSAGES = 1000  # per OneNET push (its batches are far smaller)


@dataclass(frozen=True, slots=True)
class PushItem:
    """One device message of a push: its IMEI (None: none could be found) and its bytes."""

    imei: str | None
    payload: bytes


@dataclass(frozen=True, slots=True)
class Parsed:
    """A push body: `signed` False when its signature (or token) is wrong; `items` what the
    pipeline gets — for a malformed body, the whole body as one item, to be dead-lettered."""

    signed: bool
    items: tuple[PushItem, ...]


def onenet_verified(token: str, nonce: str, msg: str, given: str) -> bool:
    return hmac.compare_digest(signature(token, nonce, msg).encode(), given.encode())


def token_matches(expected: str, given: str) -> bool:
    return hmac.compare_digest(expected.encode(), given.encode())


def _imei(message: Any, key: str) -> str | None:
    value = message.get(key) if isinstance(message, dict) else None
    return value if isinstance(value, str) and is_valid_id(value) else None


def parse_onenet(body: bytes, token: str) -> Parsed:
    """A malformed body (not JSON, no ``msg`` / ``nonce`` / ``msg_signature``) cannot be
    verified; it is handed on whole, unsigned items never are: see `Parsed`."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return Parsed(True, (PushItem(None, body),))
    if not isinstance(data, dict):
        return Parsed(True, (PushItem(None, body),))
    msg, nonce, given = data.get("msg"), data.get("nonce"), data.get("msg_signature")
    if msg is None or not isinstance(nonce, str) or not isinstance(given, str):
        return Parsed(True, (PushItem(None, body),))
    if not onenet_verified(token, nonce, compact(msg), given):
        return Parsed(False, ())
    messages = msg if isinstance(msg, list) else [msg]
    if not messages or len(messages) > MAX_MESSAGES:
        return Parsed(True, (PushItem(None, body),))
    return Parsed(True, tuple(PushItem(_imei(m, "imei"), compact(m).encode()) for m in messages))


def parse_ctwing(body: bytes) -> tuple[PushItem, ...]:
    """One message per push; its IMEI if it names one (the token was checked already)."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return (PushItem(None, body),)
    return (PushItem(_imei(data, "IMEI"), body),)
