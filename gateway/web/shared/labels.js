// Chinese labels both pages show for the API's codes (alert kinds and states). Loaded before
// each page's own script; plain globals, no build step.
"use strict";

const KINDS = {
  gas_leak: "燃气泄漏", fire: "火情", building_fire: "楼栋火情", co_poisoning: "一氧化碳",
  high_temperature: "高温", elder_fall: "老人跌倒", elder_sos: "老人呼救", elder_inactive: "老人久未活动",
  abnormal_heart_rate: "心率异常", low_spo2: "血氧偏低", vital_signs_critical: "生命体征危急",
  water_leak: "漏水", high_water_use: "用水异常", electrical_overload: "用电过载",
  device_offline: "设备离线", device_fault: "设备故障", door_forced: "门被强行打开",
  door_held_open: "门长时间未关", perimeter_breach: "周界入侵", tamper: "设备被拆",
  delivery_failed: "通知未送达", alert_refused: "告警无法记录",
};
const STATES = {
  raised: "新告警", notified: "已通知", acknowledged: "已接收", handling: "处置中",
  resolved: "已办结", closed: "已关闭", cleared: "已消除",
};
