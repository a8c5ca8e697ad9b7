// The grid member's page: sign in, my open alerts (live), one alert's timeline and the actions
// its state allows. Plain browser JavaScript, no build step; talks only to /api/v1.
"use strict";

const API = "/api/v1";
const STEPS = {
  raised: "发现", notified: "推送", acknowledged: "接收", handling: "开始处置", coordinated: "协调",
  resolved: "办结", closed: "评价", reopened: "重新打开", escalated: "逐级上报",
  upgraded: "升级", grouped: "并入事件", cleared: "消除", exhausted: "已报至最高级",
  delivery_failed: "通知失败", unrouted: "无人可通知", repeated: "重复",
};
const ACTIONS = {
  acknowledge: "确认接收", "start-handling": "开始处置", coordinate: "转交 / 协同",
  resolve: "办结（填写处置结果）", close: "评价并关闭", reopen: "重新打开",
};

const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("gridgate.token") || "";
let me = null;
let current = null; // the alert shown in the detail view
let socket = null;
let retry = 1000;
const names = {}; // place key → display name

function placeName(key) {
  const parts = key.split("/");
  const found = [];
  for (let i = 3; i <= parts.length; i++) {
    const name = names[parts.slice(0, i).join("/")];
    if (name) found.push(name);
  }
  return found.join(" ") || key;
}

async function loadPlaces() {
  const walk = (node) => {
    names[node.key] = node.name;
    node.children.forEach(walk);
  };
  for (const top of (await api("/places")).data) {
    const parts = top.key.split("/"); // the places around mine, by name
    top.path.forEach((name, i) => (names[parts.slice(0, i + 1).join("/")] = name));
    walk(top);
  }
}

function text(tag, value, cls) {
  const el = document.createElement(tag);
  el.textContent = value;
  if (cls) el.className = cls;
  return el;
}

function age(iso) {
  const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (s < 60) return `${Math.floor(s)} 秒前`;
  if (s < 3600) return `${Math.floor(s / 60)} 分钟前`;
  if (s < 86400) return `${Math.floor(s / 3600)} 小时前`;
  return `${Math.floor(s / 86400)} 天前`;
}

async function api(path, options = {}) {
  const headers = Object.assign({ Authorization: `Bearer ${token}` }, options.headers || {});
  const response = await fetch(API + path, Object.assign({}, options, { headers }));
  if (response.status === 401) {
    signOut();
    throw new Error("登录已过期，请重新登录");
  }
  const body = response.status === 204 ? null : await response.json();
  if (!response.ok) throw new Error(body && body.detail ? body.detail : `错误 ${response.status}`);
  return body;
}

async function signIn(event) {
  event.preventDefault();
  $("login-error").textContent = "";
  const form = new URLSearchParams({ username: $("username").value, password: $("password").value });
  const response = await fetch(`${API}/auth/token`, { method: "POST", body: form });
  const body = await response.json();
  if (!response.ok) {
    $("login-error").textContent = response.status === 429 ? body.detail : "账号或密码错误";
    return;
  }
  token = body.access_token;
  sessionStorage.setItem("gridgate.token", token);
  $("password").value = "";
  await start();
}

function signOut() {
  token = "";
  sessionStorage.removeItem("gridgate.token");
  if (socket) socket.close();
  socket = null;
  $("login").hidden = false;
  $("list-view").hidden = $("detail-view").hidden = $("logout").hidden = true;
}

async function start() {
  me = await api("/auth/me");
  await loadPlaces();
  $("who").textContent = `${me.id} · ${me.scopes.map(placeName).join("、")}`;
  $("login").hidden = true;
  $("logout").hidden = false;
  showList();
  connect();
}

function severityRank(a) {
  return ["I", "II", "III", "IV"].indexOf(a.severity);
}

async function loadList() {
  const page = await api("/alerts?open_only=true&limit=200");
  const alerts = page.data.sort(
    (a, b) => severityRank(a) - severityRank(b) || Date.parse(b.first_seen) - Date.parse(a.first_seen)
  );
  const list = $("alerts");
  list.replaceChildren();
  for (const a of alerts) {
    const li = document.createElement("li");
    li.className = `sev-${a.severity}`;
    li.dataset.alertId = a.id;
    const top = document.createElement("div");
    top.className = "row";
    const title = document.createElement("strong");
    title.append(text("span", a.severity, `tag sev-${a.severity}`), KINDS[a.kind] || a.kind);
    top.append(title, text("span", STATES[a.state] || a.state, "state"));
    const bottom = document.createElement("div");
    bottom.className = "row muted";
    bottom.append(text("span", placeName(a.place)), text("span", age(a.first_seen)));
    li.append(top, bottom);
    li.addEventListener("click", () => showDetail(a.id));
    list.append(li);
  }
  $("count").textContent = String(alerts.length);
  $("empty").hidden = alerts.length > 0;
}

function showList() {
  current = null;
  $("detail-view").hidden = true;
  $("list-view").hidden = false;
  loadList().catch((e) => ($("who").textContent = e.message));
}

async function showDetail(id) {
  const a = await api(`/alerts/${id}`);
  current = a;
  $("list-view").hidden = true;
  $("detail-view").hidden = false;
  $("action-error").textContent = "";
  const card = $("detail");
  card.replaceChildren();
  const head = document.createElement("h2");
  head.append(text("span", a.severity, `tag sev-${a.severity}`), KINDS[a.kind] || a.kind);
  card.append(head);
  const place = a.place_names.filter(Boolean).join(" ") || a.place;
  for (const [label, value] of [
    ["状态", STATES[a.state] || a.state],
    ["地点", place],
    ["发现时间", `${new Date(a.first_seen).toLocaleString("zh-CN")}（${age(a.first_seen)}）`],
    ["设备", a.device_id || "—"],
    ["次数", String(a.count)],
    ["上报级别", String(a.escalation_level)],
  ]) {
    const p = document.createElement("p");
    p.append(text("span", `${label}：`, "muted"), text("span", value, `field-${label}`));
    card.append(p);
  }
  if (a.ack_deadline) card.append(text("p", `请在 ${new Date(a.ack_deadline).toLocaleTimeString("zh-CN")} 前接收，否则逐级上报`, "error"));
  if (a.feedback) card.append(text("p", `处置结果：${a.feedback}`));
  renderActions(a);
  const timeline = $("timeline");
  timeline.replaceChildren();
  for (const s of a.timeline) {
    timeline.append(text("li", `${new Date(s.at).toLocaleTimeString("zh-CN")} ${STEPS[s.step] || s.step} · ${s.actor}`));
  }
}

function renderActions(a) {
  const box = $("actions");
  box.replaceChildren();
  for (const action of a.allowed_actions) {
    const button = text("button", ACTIONS[action] || action);
    button.dataset.action = action;
    button.addEventListener("click", () => act(action).catch((e) => ($("action-error").textContent = e.message)));
    box.append(button);
  }
}

async function act(action) {
  const id = current.id;
  let body;
  if (action === "resolve") {
    const feedback = window.prompt("处置结果（做了什么）");
    if (!feedback) return;
    body = { feedback };
  } else if (action === "close") {
    const rating = Number(window.prompt("满意度评价（1–5）", "5"));
    if (!(rating >= 1 && rating <= 5)) return;
    body = { rating };
  } else if (action === "coordinate") {
    const members = (await api("/members")).data.filter((m) => m.id !== me.id && m.active);
    const choices = members.map((m, i) => `${i + 1}. ${m.name}（${m.role_label}）`).join("\n");
    const pick = Number(window.prompt(`转交给谁？输入序号\n${choices}`));
    const member = members[pick - 1];
    if (!member) return;
    const handover = window.confirm("确定＝转交（由对方处置）；取消＝协同（一起处置）");
    body = { to_member: member.id, mode: handover ? "handover" : "add" };
  }
  await api(`/alerts/${id}/${action}`, {
    method: "POST",
    headers: body ? { "Content-Type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  await showDetail(id);
}

function setLive(on) {
  const mark = $("live");
  mark.className = on ? "live on" : "live off";
  mark.textContent = on ? "● 实时" : "○ 连接中断，正在重连…";
}

function connect() {
  if (!token) return;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  socket = new WebSocket(`${scheme}://${location.host}${API}/ws/alerts?token=${encodeURIComponent(token)}`);
  socket.onopen = () => {
    retry = 1000;
    setLive(true);
  };
  socket.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (message.type !== "alert") return;
    if (current && current.id === message.alert.id) showDetail(current.id);
    else if (!$("list-view").hidden) loadList();
  };
  socket.onclose = (event) => {
    setLive(false);
    if (event.code === 4401) return signOut();
    if (!token) return;
    setTimeout(connect, retry);
    retry = Math.min(retry * 2, 15000);
  };
}

window.gridgateMember = { get socket() { return socket; } }; // for tests: drop the feed

$("login").addEventListener("submit", (e) => signIn(e).catch((err) => ($("login-error").textContent = err.message)));
$("logout").addEventListener("click", () => {
  api("/auth/logout", { method: "POST" }).finally(signOut);
});
$("back").addEventListener("click", showList);
if (token) start().catch(signOut);
