"""A real webhook receiver for tests: an HTTP server on 127.0.0.1 that verifies our HMAC
signatures, records every request and answers as the test says."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from gateway.alerts.delivery import verify_signature
from gateway.alerts.delivery.webhook import DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER

SECRET = "integration-webhook-secret-0123456789"


@dataclass
class Hit:
    path: str
    delivery: str
    body: dict[str, Any]
    signed: bool  # the receiver verified the signature


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 that verifies signatures and answers per `answer`:
    a status, or "hold" (record the request, then answer only when `release` is set)."""

    answer: Callable[[Hit, int], int | str] = lambda hit, nth: 200
    hits: list[Hit] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, member: str) -> str:
        return f"{self.origin}/hook/{member}"

    def seen(self) -> Counter[str]:
        with self.lock:
            return Counter(h.delivery for h in self.hits)


@contextmanager
def running_receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            signed = verify_signature(
                SECRET,
                self.headers.get(TIMESTAMP_HEADER, ""),
                body,
                self.headers.get(SIGNATURE_HEADER, ""),
            )
            hit = Hit(self.path, self.headers.get(DELIVERY_HEADER, ""), json.loads(body), signed)
            with state.lock:
                state.hits.append(hit)
                nth = sum(1 for h in state.hits if h.delivery == hit.delivery)
            answer = state.answer(hit, nth) if signed else 401
            if answer == "hold":
                state.release.wait(60)
                answer = 200
            try:
                self.send_response(int(answer))
                self.send_header("Content-Length", "0")
                self.end_headers()
            except OSError:  # the sender is gone (killed while we held its request)
                pass

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
