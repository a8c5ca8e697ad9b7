"""Group robots (R5.6): alerts posted into the WeCom (企业微信) and DingTalk group chats grid
members live in.

* **WeCom**: ``POST <webhook>?key=…`` with ``{"msgtype": "markdown", "markdown": {"content":
  …}}``; the answer is 200 with ``{"errcode": 0}``, or an errcode: 45009 (too fast) is retried
  after a minute, any other is permanent (93000: the key is wrong).
* **DingTalk** custom robot: ``{"msgtype": "markdown", "markdown": {"title", "text"}}``; with
  a secret, the URL carries ``timestamp`` (ms) and ``sign`` = urlencode(base64(HMAC-SHA256(
  secret, f"{timestamp}\\n{secret}"))). 130101 (too fast) is retried, other errcodes (310000:
  sign, keyword or IP refused) are permanent.

A robot takes about 20 messages a minute. `RobotSender` keeps a sliding window of what it
posted per robot (on the delivery clock, so tests walk time), and posts what is waiting as it
can: one alert as one message, several as one digest (most severe first), so a burst is merged,
never dropped. Two messages of every window are kept for level I, and level I is posted before
anything else waiting: a storm of level-IV alerts cannot delay a gas leak's. Each outbox item
is answered when the message that carried it was accepted — so the worker marks items sent,
retried or dead one by one, as for every other channel. A robot cannot deduplicate: an item
resent after a crash shows twice in the chat; the message names the alert and the step.

URLs and secrets come from the environment (the routing policy names the variables) and are
never logged, stored or put in an error; messages hold no personal data: kind, severity,
place names, time, what to do, and a link to the alert on the member's page.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import hashlib
import hmac
import logging
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

import httpx

from gateway.alerts.delivery.outbox import DeliveryError, OutboxItem
from gateway.closing import ClosingClient

log = logging.getLogger(__name__)

RobotKind = Literal["wecom", "dingtalk"]
ROBOT_CHANNELS = frozenset({"wecom", "dingtalk"})
PER_WINDOW = 20  # messages a robot takes per window
WINDOW_S = 60.0
URGENT_RESERVE = 2  # of every window's messages, kept for level I
RATE_LIMITED = {"wecom": {45009}, "dingtalk": {130101}}
NS = 1_000_000_000
CST = timezone(timedelta(hours=8))
# Alerts per digest: a line is under 250 bytes, and WeCom takes 4096 of markdown. What does not
# fit waits for the next message (nothing is marked sent that a message did not show).
DIGEST_MAX = 15

SEVERITY_TEXT = {
    "I": "一级（特别重大）红色",
    "II": "二级（重大）橙色",
    "III": "三级（较大）黄色",
    "IV": "四级（一般）蓝色",
}
SEVERITY_COLOUR = {"I": "warning", "II": "warning", "III": "comment", "IV": "info"}
STEP_TEXT = {
    "raised": "新告警",
    "upgraded": "告警升级",
    "escalated": "逐级上报（超时未处置）",
    "cleared": "已解除",
    "reopened": "再次发生",
    "coordinated": "协同处置",
}
KIND_TEXT = {
    "gas_leak": "燃气泄漏",
    "co_high": "一氧化碳超标",
    "fire": "火情",
    "building_fire": "楼栋火情",
    "smoke": "烟雾报警",
    "water_leak": "漏水",
    "elder_inactive": "独居老人用水异常",
    "elder_fall": "老人跌倒",
    "fall": "老人跌倒",
    "sos": "紧急呼叫",
    "elder_sos": "紧急呼叫",
    "vitals": "生命体征异常",
    "door_forced": "门被强行打开",
    "door_held_open": "门长时间未关",
    "perimeter_breach": "周界入侵",
    "device_offline": "设备离线",
    "battery": "电池电量低",
    "low_battery": "电池电量低",
    "delivery_failed": "告警送达失败",
    "alert_refused": "告警未能记录",
    "spool_full": "缓存已满",
}
WHAT_TO_DO = {
    "I": "请立即赶赴现场处置，并在平台确认接警。",
    "II": "请尽快到场核实处置，并在平台确认接警。",
    "III": "请在规定时限内核实处理。",
    "IV": "请在工作时间内跟进处理。",
}


@dataclass(frozen=True, slots=True)
class Robot:
    name: str
    kind: RobotKind
    url: str = field(repr=False)  # holds the robot's key: never logged
    secret: str | None = field(default=None, repr=False)


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """The ``sign`` query value of a DingTalk custom robot with a secret (already URL-encoded,
    as DingTalk's documentation has it)."""
    mac = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256)
    return urllib.parse.quote_plus(base64.b64encode(mac.digest()))


def _when(payload: Mapping[str, Any]) -> str:
    text = str(payload.get("raised_at", ""))
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(CST)
    except ValueError:
        return ""
    return stamp.strftime("%Y-%m-%d %H:%M")


def _place(payload: Mapping[str, Any]) -> str:
    names = [str(n) for n in payload.get("place_names") or () if n]
    return " ".join(names) or str(payload.get("place", ""))


def _line(payload: Mapping[str, Any], link: str | None) -> str:
    severity = str(payload.get("severity", ""))
    kind = str(payload.get("kind", ""))
    step = STEP_TEXT.get(str(payload.get("step", "")), str(payload.get("step", "")))
    text = (
        f"【{SEVERITY_TEXT.get(severity, severity)}】{KIND_TEXT.get(kind, kind)} · {step} · "
        f"{_place(payload)} · {_when(payload)}（告警 {payload.get('alert_id')}）"
    )
    return f"{text} [查看]({link})" if link else text


def render(
    payloads: Sequence[Mapping[str, Any]], link_for: Callable[[int], str | None]
) -> tuple[str, str]:
    """(title, markdown) of one alert, or of a digest of several (most severe first)."""
    if len(payloads) == 1:
        p = payloads[0]
        severity = str(p.get("severity", ""))
        kind = KIND_TEXT.get(str(p.get("kind", "")), str(p.get("kind", "")))
        step = STEP_TEXT.get(str(p.get("step", "")), str(p.get("step", "")))
        title = f"{SEVERITY_TEXT.get(severity, severity)}预警：{kind}"
        lines = [
            f'### <font color="{SEVERITY_COLOUR.get(severity, "info")}">{title}</font>',
            f"> 状态：{step}",
            f"> 地点：{_place(p)}",
            f"> 时间：{_when(p)}（北京时间）",
            f"> 告警编号：{p.get('alert_id')}",
            "",
            "告警已解除，请知悉。" if p.get("step") == "cleared" else WHAT_TO_DO.get(severity, ""),
        ]
        link = link_for(int(p.get("alert_id", 0) or 0))
        if link:
            lines.append(f"[在成员页面查看并处理]({link})")
        return title, "\n".join(lines)
    ordered = sorted(payloads, key=lambda p: (_rank(p), int(p.get("alert_id", 0) or 0)))
    counts = collections.Counter(str(p.get("severity", "")) for p in ordered)
    by_rank = sorted(counts.items(), key=lambda pair: _rank({"severity": pair[0]}))
    summary = "，".join(f"{SEVERITY_TEXT.get(s, s)} {n} 条" for s, n in by_rank)
    title = f"告警汇总：{len(ordered)} 条"
    lines = [f"### {title}", f"> {summary}（发送频率受限，合并为一条）", ""]
    lines += [f"- {_line(p, link_for(int(p.get('alert_id', 0) or 0)))}" for p in ordered]
    return title, "\n".join(lines)


def _rank(payload: Mapping[str, Any]) -> int:
    return {"I": 1, "II": 2, "III": 3, "IV": 4}.get(str(payload.get("severity", "")), 5)


@dataclass(slots=True)
class _Waiting:
    item: OutboxItem
    done: asyncio.Future[None]

    @property
    def urgent(self) -> bool:
        return str(self.item.payload.get("severity", "")) == "I"


class RobotSender(ClosingClient):
    """Posts outbox items to group robots within their rate limits (see the module doc)."""

    def __init__(
        self,
        robots: Mapping[str, Robot],
        *,
        clock_ns: Callable[[], int] = time.time_ns,
        link_for: Callable[[int], str | None] = lambda _alert_id: None,
        per_window: int = PER_WINDOW,
        window_s: float = WINDOW_S,
        poll_s: float = 0.05,
        timeout_s: float = 10.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.robots = dict(robots)
        self._clock_ns = clock_ns
        self._link_for = link_for
        self.per_window = per_window
        self.window_ns = int(window_s * NS)
        self.poll_s = poll_s
        self._client = client or httpx.AsyncClient(timeout=timeout_s, follow_redirects=False)
        self._waiting: dict[str, list[_Waiting]] = collections.defaultdict(list)
        self._posted: dict[str, collections.deque[int]] = collections.defaultdict(collections.deque)
        self._flushers: dict[str, asyncio.Task[None]] = {}
        self.messages = 0  # posted, for tests and logs

    async def send(self, item: OutboxItem) -> None:
        """Returns once the message carrying `item` was accepted; DeliveryError otherwise."""
        robot = self.robots.get(item.target)
        if robot is None:
            raise DeliveryError("no such robot configured", permanent=True)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[robot.name].append(_Waiting(item, done))
        task = self._flushers.get(robot.name)
        if task is None or task.done():
            self._flushers[robot.name] = asyncio.create_task(
                self._flush(robot), name=f"robot-{robot.name}"
            )
        await asyncio.shield(done)

    def _room(self, name: str, urgent: bool) -> bool:
        posted = self._posted[name]
        horizon = self._clock_ns() - self.window_ns
        while posted and posted[0] <= horizon:
            posted.popleft()
        limit = self.per_window if urgent else self.per_window - URGENT_RESERVE
        return len(posted) < limit

    async def _flush(self, robot: Robot) -> None:
        waiting = self._waiting[robot.name]
        while waiting:
            urgent = [w for w in waiting if w.urgent]
            if not self._room(robot.name, bool(urgent)):
                await asyncio.sleep(self.poll_s)  # the window frees on the delivery clock
                continue
            batch = sorted(urgent or waiting, key=lambda w: _rank(w.item.payload))[:DIGEST_MAX]
            for w in batch:
                waiting.remove(w)
            self._posted[robot.name].append(self._clock_ns())
            try:
                await self._post(robot, [w.item for w in batch])
            except DeliveryError as exc:
                for w in batch:
                    if not w.done.done():
                        w.done.set_exception(exc)
                continue
            except Exception as exc:  # a bug here must fail the items, not hang the worker
                log.exception("robot %s: posting failed", robot.name)
                error = DeliveryError(f"internal error ({type(exc).__name__})")
                for w in batch:
                    if not w.done.done():
                        w.done.set_exception(error)
                continue
            self.messages += 1
            for w in batch:
                if not w.done.done():
                    w.done.set_result(None)

    async def _post(self, robot: Robot, items: Sequence[OutboxItem]) -> None:
        title, text = render([i.payload for i in items], self._link_for)
        url = robot.url
        if robot.kind == "wecom":
            body: dict[str, Any] = {"msgtype": "markdown", "markdown": {"content": text}}
        else:
            body = {"msgtype": "markdown", "markdown": {"title": title, "text": text}}
            if robot.secret:
                stamp = self._clock_ns() // 1_000_000
                joiner = "&" if "?" in url else "?"
                url = f"{url}{joiner}timestamp={stamp}&sign={dingtalk_sign(robot.secret, stamp)}"
        try:
            answer = await self._client.post(url, json=body)
        except httpx.TimeoutException:
            raise DeliveryError("timeout") from None
        except httpx.HTTPError as exc:
            raise DeliveryError(f"unreachable ({type(exc).__name__})") from None
        if answer.status_code != 200:
            raise DeliveryError(
                f"HTTP {answer.status_code}", permanent=400 <= answer.status_code < 500
            )
        try:
            code = int(answer.json().get("errcode", -1))
        except (ValueError, AttributeError, TypeError):
            raise DeliveryError("answer is not the robot's JSON") from None
        if code == 0:
            return
        if code in RATE_LIMITED[robot.kind]:
            raise DeliveryError(f"{robot.kind} errcode {code} (rate)", retry_after_s=WINDOW_S)
        raise DeliveryError(f"{robot.kind} errcode {code}", permanent=True)

    async def aclose(self) -> None:
        for task in self._flushers.values():
            task.cancel()
        await self._client.aclose()
