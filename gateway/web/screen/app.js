// The property firm's monitoring screen (大屏): live alerts, building map, device health and
// charts, from /api/v1 only. Plain browser JavaScript, no build step; ECharts is vendored.
"use strict";

const API = "/api/v1";
const FAMILIES = { safety: "消防燃气", elder: "养老监护", access: "门禁道闸", meter: "水电表" };
const SEVERITIES = ["I", "II", "III", "IV"];
const COLOURS = { I: "#d7191c", II: "#fd8d3c", III: "#e6c200", IV: "#2c7bb6" };

const $ = (id) => document.getElementById(id);
const state = {
  credential: sessionStorage.getItem("gridgate.screen") || "",
  names: {}, // place key → display name
  buildings: [], // [{key, name, grid}]
  alerts: [],
  seen: new Set(), // alert ids already shown (a new I/II one flashes)
  muted: false,
  socket: null,
  retry: 1000,
  charts: {},
  refreshTimer: null,
  loadedOnce: false,
};
window.gridgateScreen = state; // for tests and the curious: nothing secret beyond the session

function el(tag, value, cls) {
  const node = document.createElement(tag);
  if (value !== undefined) node.textContent = value;
  if (cls) node.className = cls;
  return node;
}

async function api(path) {
  const response = await fetch(API + path, { headers: { Authorization: `Bearer ${state.credential}` } });
  if (response.status === 401) {
    signOut();
    throw new Error("凭证无效或已过期");
  }
  const body = await response.json();
  if (!response.ok) throw new Error(body.detail || `错误 ${response.status}`);
  return body;
}

function duration(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return h ? `${h}时${m}分` : `${m}分${String(r).padStart(2, "0")}秒`;
}

function placeName(key) {
  const parts = key.split("/");
  const names = [];
  for (let i = 3; i <= parts.length; i++) {
    const name = state.names[parts.slice(0, i).join("/")];
    if (name) names.push(name);
  }
  return names.join(" ") || key;
}

async function signIn(event) {
  event.preventDefault();
  $("login-error").textContent = "";
  const key = $("key").value.trim();
  if (key) {
    state.credential = key;
  } else {
    const form = new URLSearchParams({ username: $("username").value, password: $("password").value });
    const response = await fetch(`${API}/auth/token`, { method: "POST", body: form });
    const body = await response.json();
    if (!response.ok) {
      $("login-error").textContent = response.status === 429 ? body.detail : "账号或密码错误";
      return;
    }
    state.credential = body.access_token;
  }
  sessionStorage.setItem("gridgate.screen", state.credential);
  await start();
}

function signOut() {
  state.credential = "";
  sessionStorage.removeItem("gridgate.screen");
  if (state.socket) state.socket.close();
  $("screen").hidden = true;
  $("login").hidden = false;
}

async function start() {
  await loadPlaces();
  $("login").hidden = true;
  $("screen").hidden = false;
  for (const id of ["chart-energy", "chart-water", "chart-entries", "chart-alerts"]) {
    state.charts[id] = echarts.init($(id), null, { renderer: "canvas" });
  }
  window.addEventListener("resize", () => Object.values(state.charts).forEach((c) => c.resize()));
  await Promise.all([loadAlerts(), loadHealth(), loadCharts()]);
  connect();
  setInterval(tick, 1000);
  setInterval(() => loadCharts().catch(() => {}), 60000);
  setInterval(() => loadHealth().catch(() => {}), 15000);
}

async function loadPlaces() {
  const tree = (await api("/places")).data;
  state.buildings = [];
  const walk = (node, grid) => {
    state.names[node.key] = node.name;
    if (node.level === "community") $("title").textContent = `${node.name} · 监控大屏`;
    if (node.level === "building") state.buildings.push({ key: node.key, name: node.name, grid });
    for (const child of node.children) walk(child, node.level === "grid" ? node : grid);
  };
  tree.forEach((node) => walk(node, null));
}

function worstByBuilding() {
  const worst = {};
  for (const a of state.alerts) {
    const building = a.place.split("/").slice(0, 3).join("/");
    const rank = SEVERITIES.indexOf(a.severity);
    if (!(building in worst) || rank < worst[building]) worst[building] = rank;
  }
  return worst;
}

async function loadAlerts() {
  const page = await api("/alerts?open_only=true&limit=200");
  const alerts = page.data.sort(
    (a, b) => SEVERITIES.indexOf(a.severity) - SEVERITIES.indexOf(b.severity) || b.id - a.id
  );
  const fresh = alerts.filter((a) => !state.seen.has(a.id) && SEVERITIES.indexOf(a.severity) <= 1);
  const firstLoad = !state.loadedOnce; // what was open before the screen came up does not ring
  state.loadedOnce = true;
  state.alerts = alerts;
  alerts.forEach((a) => state.seen.add(a.id));
  renderAlerts(firstLoad ? [] : fresh.map((a) => a.id));
  renderMap();
  $("open-count").textContent = String(page.count);
  if (!firstLoad && fresh.length) alarm();
}

function deadline(a) {
  const times = [a.ack_deadline, a.resolve_deadline].filter(Boolean).map(Date.parse);
  return times.length ? Math.min(...times) : null;
}

function renderAlerts(flashing) {
  const body = document.querySelector("#alerts tbody");
  body.replaceChildren();
  for (const a of state.alerts) {
    const row = document.createElement("tr");
    row.dataset.alertId = a.id;
    if (flashing.includes(a.id)) row.className = "flash";
    const sev = el("td");
    sev.append(el("span", a.severity, `sev sev-${a.severity}`));
    const due = deadline(a);
    const countdown = el("td", "", "countdown");
    if (due) countdown.dataset.due = String(due);
    row.append(
      sev,
      el("td", KINDS[a.kind] || a.kind),
      el("td", placeName(a.place)),
      el("td", "", "age"),
      el("td", STATES[a.state] || a.state, "state"),
      el("td", a.acknowledged_by || "—", "acker"),
      countdown
    );
    row.querySelector(".age").dataset.since = String(Date.parse(a.first_seen));
    body.append(row);
  }
  tick();
}

function tick() {
  const now = Date.now();
  $("clock").textContent = new Date(now).toLocaleString("zh-CN");
  for (const cell of document.querySelectorAll("#alerts .age")) {
    cell.textContent = duration((now - Number(cell.dataset.since)) / 1000);
  }
  for (const cell of document.querySelectorAll("#alerts .countdown")) {
    if (!cell.dataset.due) {
      cell.textContent = "—";
      continue;
    }
    const left = (Number(cell.dataset.due) - now) / 1000;
    cell.textContent = left > 0 ? duration(left) : "已超时";
  }
}

function renderMap() {
  const worst = worstByBuilding();
  const map = $("map");
  map.replaceChildren();
  const grids = new Map();
  for (const b of state.buildings) {
    const key = b.grid ? b.grid.key : "";
    if (!grids.has(key)) grids.set(key, { name: b.grid ? b.grid.name : "", buildings: [] });
    grids.get(key).buildings.push(b);
  }
  for (const [, grid] of grids) {
    const box = el("div", undefined, "grid");
    box.append(el("div", grid.name, "muted"));
    const tiles = el("div", undefined, "tiles");
    for (const b of grid.buildings) {
      const rank = worst[b.key];
      const tile = el("div", b.name, rank === undefined ? "tile" : `tile sev-${SEVERITIES[rank]}`);
      tile.dataset.place = b.key;
      tile.addEventListener("click", () => showBuilding(b).catch(() => {}));
      tiles.append(tile);
    }
    box.append(tiles);
    map.append(box);
  }
}

async function showBuilding(b) {
  const devices = (await api(`/devices?place=${encodeURIComponent(b.key)}&limit=500`)).data;
  const byUnit = {};
  for (const d of devices) {
    const unit = d.place.split("/").slice(0, 4).join("/");
    (byUnit[unit] = byUnit[unit] || []).push(d);
  }
  const box = $("building");
  box.replaceChildren(el("strong", `${b.name}：${devices.length} 台设备`));
  for (const unit of Object.keys(byUnit).sort()) {
    const list = byUnit[unit];
    const offline = list.filter((d) => d.online === false).length;
    box.append(el("div", `${state.names[unit] || unit}：${list.length} 台，离线 ${offline}`));
  }
  box.hidden = false;
}

async function loadHealth() {
  const s = await api("/devices/status");
  $("online-rate").textContent = s.online_rate === null ? "—" : `${(s.online_rate * 100).toFixed(1)}%`;
  $("online-rate").dataset.online = String(s.online);
  $("online-rate").dataset.total = String(s.total);
  const families = $("families");
  families.replaceChildren();
  for (const f of s.by_family) {
    const row = el("div");
    const rate = f.online_rate === null ? "—" : `${(f.online_rate * 100).toFixed(1)}%`;
    row.append(el("span", FAMILIES[f.key] || f.key), el("span", `${rate}（${f.online}/${f.total}）`));
    families.append(row);
  }
  const offline = $("offline");
  offline.replaceChildren();
  for (const d of s.offline_that_matter.slice(0, 12)) {
    offline.append(el("li", `${FAMILIES[d.family] || d.family} ${d.id} · ${placeName(d.place)}`));
  }
}

function lineChart(id, title, cells, unit) {
  const byTime = {};
  let suppressed = 0;
  for (const c of cells) {
    if (c.suppressed) suppressed += 1;
    byTime[c.time] = (byTime[c.time] || 0) + (c.value || 0);
  }
  const times = Object.keys(byTime).sort();
  state.charts[id].setOption({
    title: { text: title, subtext: suppressed ? `${suppressed} 个单元格人数不足 k 人，已隐去` : "",
             textStyle: { color: "#7fc4ff", fontSize: 14 }, subtextStyle: { color: "#8ba3bf" } },
    tooltip: { trigger: "axis" },
    grid: { left: 40, right: 10, top: 50, bottom: 25 },
    xAxis: { type: "category", data: times.map((t) => new Date(t).getHours() + "时"),
             axisLabel: { color: "#8ba3bf" } },
    yAxis: { type: "value", name: unit, axisLabel: { color: "#8ba3bf" } },
    series: [{ type: "bar", data: times.map((t) => byTime[t]), itemStyle: { color: "#1f6feb" } }],
  });
}

async function loadCharts() {
  const [energy, water, entries, summary] = await Promise.all([
    api("/readings?measurement=meter&field=power_kw&fn=sum&window=1h"),
    api("/readings?measurement=meter&field=flow_m3h&fn=sum&window=1h"),
    api("/aggregates/entries?window=1h&group_by=building"),
    api("/alerts/summary"),
  ]);
  lineChart("chart-energy", "用电（每小时，kW 合计）", energy.data, "kW");
  lineChart("chart-water", "用水（每小时，m³/h 合计）", water.data, "m³/h");
  lineChart("chart-entries", "进出（每小时）", entries.data, "次");
  state.charts["chart-alerts"].setOption({
    title: { text: `今日告警 ${summary.total}`, textStyle: { color: "#7fc4ff", fontSize: 14 } },
    tooltip: {},
    series: [
      { type: "pie", radius: ["30%", "50%"], center: ["50%", "60%"], stillShowZeroSum: false,
        data: SEVERITIES.map((s) => ({ name: `${s}级`, value: summary.by_severity[s],
                                       itemStyle: { color: COLOURS[s] } })),
        label: { color: "#d8e6f5" } },
      { type: "pie", radius: ["0%", "25%"], center: ["50%", "60%"],
        data: Object.entries(summary.by_state).filter(([, n]) => n)
          .map(([s, n]) => ({ name: STATES[s] || s, value: n })), label: { show: false } },
    ],
  });
  $("ack-mean").textContent = summary.mean_ack_s === null
    ? "平均接收时长：—"
    : `平均接收时长：${duration(summary.mean_ack_s)}（${summary.acknowledged} 条）`;
}

function alarm() {
  if (state.muted) return;
  try {
    const ctx = new (window.AudioContext || window.webkitAudioContext)();
    const osc = ctx.createOscillator();
    osc.frequency.value = 880;
    osc.connect(ctx.destination);
    osc.start();
    osc.stop(ctx.currentTime + 0.6);
  } catch (e) {
    // no audio device: the flashing row still shows it
  }
}

function setFresh(live) {
  const mark = $("fresh");
  mark.className = live ? "fresh live" : "fresh stale";
  mark.textContent = live ? "● 实时" : "○ 实时连接中断，数据可能已过期，正在重连…";
}

function scheduleRefresh() {
  if (state.refreshTimer) return;
  state.refreshTimer = setTimeout(() => {
    state.refreshTimer = null;
    loadAlerts().catch(() => {});
  }, 150);
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const url = `${scheme}://${location.host}${API}/ws/alerts?token=${encodeURIComponent(state.credential)}`;
  const socket = new WebSocket(url);
  state.socket = socket;
  socket.onopen = () => {
    state.retry = 1000;
    setFresh(true);
    scheduleRefresh(); // whatever changed while it was down
  };
  socket.onmessage = (event) => {
    if (JSON.parse(event.data).type === "alert") scheduleRefresh();
  };
  socket.onclose = (event) => {
    setFresh(false);
    if (event.code === 4401) return signOut();
    if (!state.credential) return;
    setTimeout(connect, state.retry);
    state.retry = Math.min(state.retry * 2, 15000);
  };
}

$("login").addEventListener("submit", (e) => signIn(e).catch((err) => ($("login-error").textContent = err.message)));
$("mute").addEventListener("click", () => {
  state.muted = !state.muted;
  $("mute").textContent = state.muted ? "声音：已静音" : "声音：开";
});
if (state.credential) start().catch(signOut);
