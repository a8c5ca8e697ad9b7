"""Where every stored field comes from: vendor field → canonical field → PIPL class → action.

`privacy` may not import `adapters` (pure packages, one import direction), so the vendor
side is written here from reading each adapter; `tests/unit/test_privacy_policy.py` checks
it against the adapters' own payload models so it cannot drift. `render_tables(policy)`
builds the generated part of docs/privacy.md; ``python -m privacy.fieldmap docs/privacy.md``
rewrites it, and a unit test fails when the document is stale or misses a canonical field.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from privacy.policy import FAMILY_KEYS, MEASUREMENTS, MODELS, FieldPolicy, Policy, load_policy

BEGIN = "<!-- BEGIN GENERATED FIELD TABLES (python -m privacy.fieldmap docs/privacy.md) -->"
END = "<!-- END GENERATED FIELD TABLES -->"

# Pseudo-targets: a vendor field that becomes part of the reading itself, not a value.
DEVICE_ID = "(device id)"
TIME = "(time)"
KIND = "(kind)"
ROOM = "(location room)"
STRUCTURAL = frozenset({DEVICE_ID, TIME, KIND, ROOM})
_STRUCTURAL_USE = {
    DEVICE_ID: "the reading's device (an equipment serial)",
    TIME: "the reading's time (policy `time`)",
    KIND: "the reading's kind",
    ROOM: "the reading's room (policy `location`)",
}


@dataclass(frozen=True, slots=True)
class VendorField:
    adapter: str  # the adapter module's `name`
    family: str  # the policy family key its values fall under
    vendor: str  # the vendor's field: JSON path (`data.total`, `samples[].hr`) or frame part
    canonical: tuple[str, ...]  # canonical field(s) or pseudo-targets it becomes
    note: str = ""  # conversion


def _v(adapter: str, family: str, vendor: str, *canonical: str, note: str = "") -> VendorField:
    return VendorField(adapter, family, vendor, canonical, note)


_ACS, _GAS, _MTR, _BAND = "vendor_access", "vendor_gas", "vendor_meter", "vendor_wearable"
VENDOR_FIELDS: tuple[VendorField, ...] = (
    # vendor_access: Chinese ACS platform events (face terminals, card readers, barriers)
    _v(_ACS, "access", "deviceSn", DEVICE_ID),
    _v(_ACS, "access", "eventTime", TIME, note="local time, UTC+8"),
    _v(_ACS, "access", "eventType", KIND, note="1-10 → entry_granted … fault"),
    _v(_ACS, "access", "openMode", "method", note="FACE → face, PWD → password …"),
    _v(_ACS, "access", "direction", "direction", note="IN/OUT → in/out"),
    _v(_ACS, "access", "passResult", "granted", note="1/0"),
    _v(_ACS, "access", "similarity", "similarity", note="percent → 0..1"),
    _v(_ACS, "access", "openDuration", "held_open_s"),
    _v(_ACS, "access", "doorName", "door"),
    _v(_ACS, "access", "personName", "person_name"),
    _v(_ACS, "access", "certNo", "id_number"),
    _v(_ACS, "access", "phone", "phone"),
    _v(_ACS, "access", "cardNo", "card_no"),
    _v(_ACS, "access", "plateNo", "plate"),
    _v(_ACS, "access", "faceImage", "face_image"),
    _v(_ACS, "access", "faceFeature", "face_feature"),
    # vendor_gas: NB-IoT household gas detector with a CO cell
    _v(_GAS, "safety", "imei", DEVICE_ID),
    _v(_GAS, "safety", "time", TIME, note="local time, UTC+8"),
    _v(_GAS, "safety", "status", KIND, "tamper", "self_test_ok", note="0-7; sets detector=gas"),
    _v(_GAS, "safety", "gas", "gas_lel_pct", note="ppm → %LEL (LEL per route)"),
    _v(_GAS, "safety", "co", "co_ppm", note="mg/m³ → ppm"),
    _v(_GAS, "safety", "temp", "temperature_c", note="0.1 °C"),
    _v(_GAS, "safety", "batV", "battery_pct", note="volts → % (curve per route)"),
    _v(_GAS, "safety", "faultCode", "fault_code"),
    # vendor_meter: NB-IoT/LoRa smart-meter head-end
    _v(_MTR, "meter", "meterNo", DEVICE_ID),
    _v(_MTR, "meter", "type", "meter_type", note="WATER/ELEC/GAS"),
    _v(_MTR, "meter", "ts", TIME, note="epoch seconds"),
    _v(_MTR, "meter", "data.total", "water_m3", "energy_kwh", "gas_m3", note="L/m3/Wh/kWh"),
    _v(_MTR, "meter", "data.flow", "flow_m3h", note="L/h or m3/h"),
    _v(_MTR, "meter", "data.voltage", "voltage_v"),
    _v(_MTR, "meter", "data.current", "current_a"),
    _v(_MTR, "meter", "data.power", "power_kw", note="W or kW"),
    _v(_MTR, "meter", "data.valve", "valve", note="OPEN/CLOSE/ERR"),
    _v(_MTR, "meter", "data.batteryV", "battery_low", note="below a threshold (3.3 V)"),
    _v(_MTR, "meter", "event", KIND, "battery_low", note="VALVE_OPEN … LOWBAT"),
    _v(_MTR, "meter", "errCode", "fault_code"),
    # vendor_wearable: 4G elder wristband uploading batches of samples
    _v(_BAND, "elder", "imei", DEVICE_ID),
    _v(_BAND, "elder", "samples[].t", TIME, note="local time, UTC+8"),
    _v(_BAND, "elder", "samples[].hr", "heart_rate_bpm", note="0 = not measured"),
    _v(_BAND, "elder", "samples[].spo2", "spo2_pct", note="0 = not measured"),
    _v(_BAND, "elder", "samples[].step", "steps"),
    _v(_BAND, "elder", "samples[].temp", "body_temp_c", note="0.1 °C"),
    _v(_BAND, "elder", "samples[].wear", "worn"),
    _v(_BAND, "elder", "alarm.type", KIND, note="SOS, FALL, …"),
    _v(_BAND, "elder", "alarm.t", TIME),
    _v(_BAND, "elder", "gps.lat", "latitude", note="(0, 0) = no fix"),
    _v(_BAND, "elder", "gps.lng", "longitude"),
    _v(_BAND, "elder", "bat", "battery_pct"),
    # dlt645: DL/T 645-2007 electricity meter replies forwarded by concentrators
    _v("dlt645", "meter", "address A0..A5", DEVICE_ID, note="12 BCD digits"),
    _v("dlt645", "meter", "DI 00010000", "energy_kwh", note="sets meter_type=electricity"),
    _v("dlt645", "meter", "DI 02010100", "voltage_v"),
    _v("dlt645", "meter", "DI 02020100", "current_a"),
    _v("dlt645", "meter", "DI 02030000", "power_kw"),
    _v("dlt645", "meter", "DI 0201FF00", "voltage_v", "voltage_b_v", "voltage_c_v"),
    _v("dlt645", "meter", "error byte (C=D1)", KIND, "fault_code", "fault"),
    # cjt188: CJ/T 188 water/gas/heat meter replies forwarded by concentrators
    _v("cjt188", "meter", "address A0..A6", DEVICE_ID, note="14 BCD digits"),
    _v("cjt188", "meter", "meter type T", "meter_type"),
    _v("cjt188", "meter", "current cumulative flow", "water_m3", "gas_m3", "energy_kwh"),
    _v("cjt188", "meter", "settlement-day flow", "settlement_m3"),
    _v("cjt188", "meter", "real time", TIME, note="all zeros = receive time"),
    _v("cjt188", "meter", "status ST", "valve", "battery_low", note="bit layout per route"),
    _v("cjt188", "meter", "abnormal reply (C=C1)", KIND, "fault_code", "fault"),
)
ADAPTERS = ("gridgate_json", _ACS, _GAS, _MTR, _BAND, "dlt645", "cjt188")
BINARY_ADAPTERS = frozenset({"dlt645", "cjt188"})


def _actions(spec: FieldPolicy | None) -> str:
    if spec is None:
        return "**drop** (not in the policy)"
    parts = []
    for action in spec.actions:
        if action.op == "keep" and spec.text is not None:
            parts.append(spec.text.describe())  # free text: "keep if it matches …, else drop"
        elif action.op in ("keep", "drop"):
            parts.append(action.op)
        elif action.op == "generalise":
            parts.append(f"generalise {action.to} → `{action.output}`")
        else:
            parts.append(f"{action.op} → `{action.output}`")
    return ", ".join(parts)


def _family_table(policy: Policy, key: str) -> list[str]:
    family = policy.families[key]
    model = MODELS[key]
    where = "status channel, every family" if key == "status" else f"`{model.__name__}`"
    lines = [
        f"#### {key} ({where}; location: {family.location}, time: {family.time})",
        "",
        "| canonical field | unit | PIPL class | action → stored as |",
        "|---|---|---|---|",
    ]
    for name, info in model.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        unit = str(extra.get("unit", ""))
        spec = family.fields.get(name)
        cls = spec.data_class.value if spec else str(extra.get("pii", "non_personal"))
        lines.append(f"| `{name}` | {unit} | {cls} | {_actions(spec)} |")
    lines.append(
        "| *any other key* (vendor extras, `vendor:<key>`) | | unknown | drop, counted `unknown` |"
    )
    return lines


def _adapter_table(policy: Policy, adapter: str) -> list[str]:
    lines = [
        f"#### {adapter}",
        "",
        "| vendor field | canonical field | PIPL class | action → stored as | note |",
        "|---|---|---|---|---|",
    ]
    if adapter == "gridgate_json":
        lines.append(
            "| `data.<field>` | the same name (all families and status) | see the family "
            "tables | see the family tables | canonical names on the wire |"
        )
        lines.append(
            "| `device_id`, `ts`, `kind` | (device id), (time), (kind) | | "
            "the reading's device, time and kind | |"
        )
        lines.append(f"| `loc.room` | {ROOM} | quasi_identifier | {_STRUCTURAL_USE[ROOM]} | |")
    for vf in VENDOR_FIELDS:
        if vf.adapter != adapter:
            continue
        family = policy.families[vf.family]
        targets = ", ".join(t if t in STRUCTURAL else f"`{t}`" for t in vf.canonical)
        fields = [family.fields.get(t) for t in vf.canonical if t not in STRUCTURAL]
        classes = ", ".join(sorted({f.data_class.value for f in fields if f is not None}))
        uses = sorted({_actions(f) for f in fields})
        uses += [_STRUCTURAL_USE[t] for t in vf.canonical if t in STRUCTURAL]
        actions = "; ".join(uses)
        lines.append(f"| `{vf.vendor}` | {targets} | {classes} | {actions} | {vf.note} |")
    if adapter not in BINARY_ADAPTERS:  # frames have no room for extra keys
        lines.append("| *any other key* | passed on as is or as `vendor:<key>` | unknown | "
                     "drop, counted `unknown` | |")  # fmt: skip
    return lines


def render_tables(policy: Policy) -> str:
    """The generated part of docs/privacy.md, for `policy`."""
    lines = [
        BEGIN,
        "",
        f"Generated from `{policy.source}`, `devices/models.py` and "
        "`privacy/fieldmap.py`. Do not edit by hand.",
        "",
        "### Canonical fields by family",
        "",
    ]
    for key in FAMILY_KEYS:
        lines += [*_family_table(policy, key), ""]
    lines += ["### Vendor fields by adapter", ""]
    for adapter in ADAPTERS:
        lines += [*_adapter_table(policy, adapter), ""]
    lines += [
        "### Retention by measurement",
        "",
        "| measurement | kept for | InfluxDB |",
        "|---|---|---|",
    ]
    for name in MEASUREMENTS:
        r = policy.retention[name]
        lines.append(f"| `{name}` | {r.text} | `{r.influx}` |")
    lines += ["", END]
    return "\n".join(lines)


def rewrite(document: Path, policy: Policy) -> bool:
    """Replace the generated block of `document`; True if it changed."""
    text = document.read_text(encoding="utf-8")
    head, begin, rest = text.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not begin or not end:
        raise ValueError(f"{document} has no {BEGIN} … {END} block")
    new = head + render_tables(policy) + tail
    if new == text:
        return False
    document.write_text(new, encoding="utf-8")
    return True


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (1, 2):
        print("usage: python -m privacy.fieldmap DOC.md [POLICY.yaml]", file=sys.stderr)
        return 2
    policy = load_policy(Path(args[1]) if len(args) == 2 else None)
    changed = rewrite(Path(args[0]), policy)
    print(f"{args[0]}: {'updated' if changed else 'up to date'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
