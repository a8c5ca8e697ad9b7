"""WeCom and DingTalk group robots for tests: one real HTTP server on 127.0.0.1 answering as
the two platforms do, checking what their documentation asks of a message (the robot key, the
markdown body, and DingTalk's timestamp and signature), and recording each post with the
delivery clock's time."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

WECOM_KEY = "wecom-robot-key-for-tests"
DINGTALK_TOKEN = "dingtalk-token-for-tests"
DINGTALK_SECRET = "SEC-dingtalk-secret-for-tests"
ALERT_ID = re.compile(r"告警(?:编号：| )(\d+)")


@dataclass
class Post:
    robot: str  # wecom | dingtalk
    at_ns: int  # the delivery clock when it arrived
    text: str
    alert_ids: list[int]


@dataclass
class Robots:
    clock_ns: Callable[[], int]
    posts: list[Post] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # why a post was refused
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0

    @property
    def wecom_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/cgi-bin/webhook/send?key={WECOM_KEY}"

    @property
    def dingtalk_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/robot/send?access_token={DINGTALK_TOKEN}"

    def of(self, robot: str) -> list[Post]:
        with self.lock:
            return [p for p in self.posts if p.robot == robot]


def _sign(timestamp: str) -> str:
    mac = hmac.new(DINGTALK_SECRET.encode(), f"{timestamp}\n{DINGTALK_SECRET}".encode(),
                   hashlib.sha256)  # fmt: skip
    return base64.b64encode(mac.digest()).decode()


@contextmanager
def running_robots(clock_ns: Callable[[], int]) -> Iterator[Robots]:
    state = Robots(clock_ns)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            url = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            try:
                body: dict[str, Any] = json.loads(raw)
            except ValueError:
                body = {}
            if url.path == "/cgi-bin/webhook/send":
                robot, code, text = "wecom", *self._wecom(query, body)
            elif url.path == "/robot/send":
                robot, code, text = "dingtalk", *self._dingtalk(query, body)
            else:
                self.send_response(404)
                self.end_headers()
                return
            with state.lock:
                if code == 0:
                    ids = [int(i) for i in ALERT_ID.findall(text)]
                    state.posts.append(Post(robot, state.clock_ns(), text, ids))
                else:
                    state.refused.append(f"{robot}: {code}")
            answer = json.dumps({"errcode": code, "errmsg": "ok" if code == 0 else "refused"})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(answer.encode())

        @staticmethod
        def _wecom(query: dict[str, str], body: dict[str, Any]) -> tuple[int, str]:
            if query.get("key") != WECOM_KEY:
                return 93000, ""  # invalid webhook key
            markdown = body.get("markdown") or {}
            if body.get("msgtype") != "markdown" or not isinstance(markdown.get("content"), str):
                return 40008, ""  # invalid message type
            return 0, markdown["content"]

        @staticmethod
        def _dingtalk(query: dict[str, str], body: dict[str, Any]) -> tuple[int, str]:
            if query.get("access_token") != DINGTALK_TOKEN:
                return 300001, ""
            stamp = query.get("timestamp", "")
            if not stamp.isdigit() or query.get("sign") != _sign(stamp):
                return 310000, ""  # sign not matching
            markdown = body.get("markdown") or {}
            if body.get("msgtype") != "markdown" or not (
                isinstance(markdown.get("title"), str) and isinstance(markdown.get("text"), str)
            ):
                return 40035, ""
            return 0, markdown["text"]

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
