"""Signed webhooks (R5.6): a POST per delivery, signed so a receiver can tell it came from us.

Headers on every request:

* ``X-Gridgate-Timestamp``: unix seconds when this attempt was made;
* ``X-Gridgate-Signature``: ``sha256=<hex HMAC-SHA-256 over "{timestamp}.{body}">`` with the
  webhook's own secret — the timestamp is signed too, so a captured request cannot be replayed
  later than `verify_signature`'s skew window;
* ``X-Gridgate-Delivery``: the idempotency key (also ``delivery_id`` in the body). The same key
  may arrive more than once (a retry after a lost answer, a resend after a gateway crash):
  receivers must deduplicate by it.

Outcome: 2xx is delivered; 408, 429 (honouring ``Retry-After``), 5xx, timeouts and connection
errors are retried by the worker with backoff; any other status (3xx: redirects are not
followed; 4xx) is permanent and the delivery goes dead at once. A target without a configured
secret is permanent too: an unsigned alert would be indistinguishable from a forged one.

Secrets are per webhook (one receiver cannot forge for another): `WebhookSecrets` maps a
webhook URL, or its origin ``scheme://host[:port]``, to its secret, from the environment:
``GRIDGATE_WEBHOOK_SECRETS`` (a JSON object) and/or ``GRIDGATE_WEBHOOK_SECRETS_FILE`` (a JSON
file of the same shape). Neither URLs (they may embed tokens) nor secrets are ever logged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from gateway.alerts.delivery.outbox import DeliveryError
from gateway.closing import ClosingClient

TIMESTAMP_HEADER = "X-Gridgate-Timestamp"
SIGNATURE_HEADER = "X-Gridgate-Signature"
DELIVERY_HEADER = "X-Gridgate-Delivery"
SECRETS_ENV = "GRIDGATE_WEBHOOK_SECRETS"
SECRETS_FILE_ENV = "GRIDGATE_WEBHOOK_SECRETS_FILE"
DEFAULT_TIMEOUT_S = 10.0
MAX_RETRY_AFTER_S = 3600.0
_RETRYABLE_4XX = frozenset({408, 429})


def _key_bytes(secret: str | bytes) -> bytes:
    key = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    if not key.strip():
        raise ValueError("a webhook secret must not be empty")
    return key


def sign(secret: str | bytes, timestamp: int | str, body: bytes) -> str:
    """The ``X-Gridgate-Signature`` value for `body` sent at `timestamp`."""
    mac = hmac.new(_key_bytes(secret), f"{timestamp}.".encode("ascii") + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(
    secret: str | bytes,
    timestamp: str | int,
    body: bytes,
    header: str,
    *,
    max_skew_s: float = 300,
    now_s: float | None = None,
) -> bool:
    """For receivers: True if `header` signs `body` at `timestamp` with `secret` and the
    timestamp is within `max_skew_s` of now (a stale or future one is a replay or a bad clock).
    Constant-time comparison; never raises on malformed input (an empty secret raises)."""
    key = _key_bytes(secret)
    text = str(timestamp).strip()
    if not text.isascii() or not text.isdigit() or len(text) > 12:
        return False
    now = time.time() if now_s is None else now_s
    if abs(now - int(text)) > max_skew_s:
        return False
    if not isinstance(header, str) or not header.isascii():
        return False
    expected = hmac.new(key, f"{text}.".encode("ascii") + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest("sha256=" + expected, header.strip())


def origin(url: str) -> str:
    """``scheme://host[:port]`` of a URL (lower-case scheme and host, default port dropped)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    port = "" if parts.port in (None, default) else f":{parts.port}"
    return f"{parts.scheme.lower()}://{host}{port}"


class WebhookSecrets:
    """Secret per webhook: by exact URL first, then by origin. Refuses empty secrets."""

    def __init__(self, secrets: Mapping[str, str | bytes]) -> None:
        self._by_url: dict[str, bytes] = {}
        self._by_origin: dict[str, bytes] = {}
        for target, secret in secrets.items():
            if not isinstance(target, str) or urlsplit(target).scheme not in ("http", "https"):
                raise ValueError("webhook secrets are keyed by an http(s) URL or origin")
            try:
                key = _key_bytes(secret)
            except ValueError:
                raise ValueError(
                    f"empty webhook secret for the webhook on {origin(target)}"
                ) from None
            parts = urlsplit(target)
            if parts.path in ("", "/") and not parts.query:
                self._by_origin[origin(target)] = key
            else:
                self._by_url[target] = key

    def __repr__(self) -> str:
        return f"WebhookSecrets({len(self)} webhooks)"

    def __len__(self) -> int:
        return len(self._by_url) + len(self._by_origin)

    def for_url(self, url: str) -> bytes | None:
        found = self._by_url.get(url)
        return found if found is not None else self._by_origin.get(origin(url))

    @classmethod
    def from_json(cls, text: str) -> WebhookSecrets:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"webhook secrets are not JSON (line {exc.lineno})") from None
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise ValueError('webhook secrets are a JSON object {"<url or origin>": "<secret>"}')
        return cls(data)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> WebhookSecrets:
        """``GRIDGATE_WEBHOOK_SECRETS_FILE`` then ``GRIDGATE_WEBHOOK_SECRETS`` of `env` (from
        `gateway.settings.environment`; the variable wins for a webhook named in both).
        Neither set: no webhook can be sent."""
        merged: dict[str, str | bytes] = {}
        if path := env.get(SECRETS_FILE_ENV, "").strip():
            merged |= cls._raw(Path(path).read_text(encoding="utf-8"))
        if text := env.get(SECRETS_ENV, "").strip():
            merged |= cls._raw(text)
        return cls(merged)

    @classmethod
    def _raw(cls, text: str) -> dict[str, str | bytes]:
        cls.from_json(text)  # validates
        data: dict[str, str | bytes] = json.loads(text)
        return data


class WebhookSender(ClosingClient):
    """POSTs signed bodies with one shared httpx client; `send` raises `DeliveryError`."""

    def __init__(
        self,
        secrets: WebhookSecrets,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        clock_s: Callable[[], float] = time.time,
        trust_env: bool = False,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.secrets = secrets
        self.timeout_s = timeout_s
        self._clock_s = clock_s
        # No redirects: a 3xx would send the alert to a target nobody configured.
        # trust_env=False: no proxy or .netrc from the environment unless asked for.
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s),
            follow_redirects=False,
            trust_env=trust_env,
            transport=transport,
            headers={"User-Agent": "gridgate-alerts/1"},
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    def headers(self, secret: bytes, body: bytes, delivery_id: str) -> dict[str, str]:
        ts = int(self._clock_s())
        return {
            "Content-Type": "application/json; charset=utf-8",
            TIMESTAMP_HEADER: str(ts),
            SIGNATURE_HEADER: sign(secret, ts, body),
            DELIVERY_HEADER: delivery_id,
        }

    async def send(self, url: str, body: bytes, *, delivery_id: str) -> None:
        """Returns once the receiver answered 2xx."""
        secret = self.secrets.for_url(url)
        if secret is None:
            raise DeliveryError("no webhook secret configured for this target", permanent=True)
        try:
            response = await self._client.post(
                url, content=body, headers=self.headers(secret, body, delivery_id)
            )
        except httpx.TimeoutException as exc:
            raise DeliveryError(f"timeout ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise DeliveryError(f"connection error ({type(exc).__name__})") from None
        except httpx.InvalidURL:
            raise DeliveryError("invalid webhook URL", permanent=True) from None
        status = response.status_code
        if 200 <= status < 300:
            return
        if status >= 500 or status in _RETRYABLE_4XX:
            raise DeliveryError(
                f"HTTP {status}", retry_after_s=_retry_after(response.headers.get("Retry-After"))
            )
        raise DeliveryError(f"HTTP {status}", permanent=True)


def _retry_after(value: str | None) -> float | None:
    """Seconds form only (an HTTP date is rare from webhooks and ignored)."""
    if value is None or not value.strip().isdigit():
        return None
    return min(float(value.strip()), MAX_RETRY_AFTER_S)


__all__ = [
    "DELIVERY_HEADER",
    "SECRETS_ENV",
    "SECRETS_FILE_ENV",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "WebhookSecrets",
    "WebhookSender",
    "origin",
    "sign",
    "verify_signature",
]
