"""`gridgate decode`: one message through an adapter and the privacy policy, printed as
the canonical readings that would be stored — positions and counts, never device-supplied
identifiers."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING, Any

from adapters.registry import ADAPTERS
from devices.errors import ConfigError, RejectedInput
from devices.reading import RECEIVE_TIME
from devices.validation import stamp_and_check
from gateway.settings import Settings

# -- decode -------------------------------------------------------------------------------


if TYPE_CHECKING:
    from devices.reading import Reading
    from privacy.policy import Policy


def _decoded(
    reading: Reading, kept: Reading, policy: Policy, *, device_clock: bool = True
) -> dict[str, Any]:
    """What `decode` prints for one reading: positions, counts and canonical names, never text
    the device chose. Its id and place codes are printed only when they are ids the registry
    would take (`gateway.registry.identifiers.shown_id`: topic-safe, no phone or ID number),
    else ``<redacted>``; dropped fields are named only when the privacy policy names them (the
    rest, keys the payload made up, are counted). The time is also printed readable (UTC),
    with where it came from: the device's clock, or the receive time for a device without
    one (a DL/T 645 meter whose clock was not read along)."""
    from devices.families import Channel
    from gateway.registry.identifiers import shown_id
    from privacy.policy import STATUS

    table = STATUS if reading.channel is Channel.STATUS else reading.family.value
    canonical = policy.families[table].fields
    dropped = set(reading.values) - set(kept.values)
    named = sorted(k for k in dropped if isinstance(k, str) and k in canonical)
    loc = kept.location
    return {
        "device_id": shown_id(kept.device_id),
        "family": kept.family.value,
        "channel": kept.channel.value,
        "kind": kept.kind,
        "time_ns": kept.time_ns,
        "time": _utc_text(kept.time_ns),
        "time_source": "device" if device_clock else "received",
        "location": {
            level: shown_id(code) if code else ""
            for level, code in (
                ("community", loc.community),
                ("grid", loc.grid),
                ("building", loc.building),
                ("unit", loc.unit),
                ("room", loc.room),
            )
        },
        "values": dict(kept.values),
        "dropped_fields": named,
        "dropped_unknown_fields": len(dropped) - len(named),
    }


def _utc_text(time_ns: int) -> str:
    """``2026-12-04T06:30:00Z``, with the fraction of a second when there is one."""
    from datetime import UTC, datetime

    seconds, ns = divmod(time_ns, 1_000_000_000)
    text = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if ns:
        text += f".{ns:09d}".rstrip("0")
    return text + "Z"


def _rejection_text(reason: str, detail: str) -> str:
    """``rejected: reason: detail``. The detail names fields, and a field may be a key the
    payload made up (``loc.<name>``): a detail that may hold an identifier is withheld."""
    from privacy.identifiers import looks_personal

    if detail and (looks_personal(detail) or looks_personal(detail, loose=True)):
        detail = "(detail withheld: it may quote the payload's own text)"
    return f"rejected: {reason}: {detail}"


def received_at_ns(text: str) -> int:
    """``--received-at``: epoch milliseconds, or ISO 8601 where no offset means UTC+8 (as in
    the gateway's own payloads)."""
    from datetime import datetime, timedelta, timezone

    text = text.strip()
    if text.isdigit():
        return int(text) * 1_000_000
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"--received-at {text!r}: use ISO 8601 (2026-12-04T14:30:00+08:00) or epoch ms"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone(timedelta(hours=8)))
    return int(when.timestamp()) * 1_000_000_000 + when.microsecond * 1000


def decode_command(args: argparse.Namespace, settings: Settings) -> int:
    import time

    from gateway.runtime import load_keyring
    from privacy.deidentify import Deidentifier
    from privacy.keys import KeyRing
    from privacy.policy import load_policy

    adapter = ADAPTERS.get(args.adapter)
    if adapter is None:
        print(f"unknown adapter {args.adapter!r}; known: {', '.join(ADAPTERS)}", file=sys.stderr)
        return 2
    payload: bytes
    if args.hex is not None:
        try:
            payload = bytes.fromhex(args.hex)
        except ValueError:
            print("rejected: not_hex: --hex is not hexadecimal text", file=sys.stderr)
            return 1
    elif args.payload is not None:
        payload = args.payload.encode()
    else:
        payload = sys.stdin.buffer.read()
    try:
        now = time.time_ns() if args.received_at is None else received_at_ns(args.received_at)
    except ValueError as exc:
        print(f"decode: {exc}", file=sys.stderr)
        return 2
    try:
        decoded = adapter.decode(args.topic, payload)
        device_clock = [r.time_ns != RECEIVE_TIME for r in decoded]
        readings = [
            stamp_and_check(r, now, now, settings.max_past_s, settings.max_future_s)
            for r in decoded
        ]
    except RejectedInput as exc:
        print(_rejection_text(exc.reason, exc.detail), file=sys.stderr)
        return 1
    try:
        keyring = load_keyring(settings)
    except ConfigError:
        keyring = KeyRing([("tmp", os.urandom(32))])
        print("decode: no pseudonymisation key configured; pseudonyms below use a throwaway key",
              file=sys.stderr)  # fmt: skip
    policy = load_policy(settings.privacy_policy)
    privacy = Deidentifier(policy, keyring)
    out = [
        _decoded(reading, privacy.apply(reading), policy, device_clock=clocked)
        for reading, clocked in zip(readings, device_clock, strict=True)
    ]
    print(json.dumps(out, ensure_ascii=False, indent=2, default=str))
    return 0
