"""`gridgate push-url DEVICE…`: the URL each Hikvision terminal is configured to push its
events to (its HTTP listening host), with the token derived from GRIDGATE_HIKVISION_SECRET."""

from __future__ import annotations

import argparse
import sys

from adapters.hikvision_isapi import terminal_token
from gateway.settings import Settings


def add_arguments(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cmd = sub.add_parser(
        "push-url", help="the push URL of Hikvision terminals (GRIDGATE_HIKVISION_SECRET)"
    )
    cmd.add_argument("devices", nargs="+", metavar="DEVICE", help="the terminals' registry ids")
    cmd.add_argument(
        "--base",
        default="",
        help="the URL the terminals reach the listener at, e.g. https://gw.example.cn "
        "(default: http://GRIDGATE_PUSH_HOST:GRIDGATE_PUSH_PORT)",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    if settings.hikvision_secret is None:
        print("gridgate push-url: set GRIDGATE_HIKVISION_SECRET first (a long random string)",
              file=sys.stderr)  # fmt: skip
        return 2
    base = args.base.rstrip("/")
    if not base:
        host = f"[{settings.push_host}]" if ":" in settings.push_host else settings.push_host
        base = f"http://{host}:{settings.push_port or 'PORT'}"
    secret = settings.hikvision_secret.get_secret_value()
    for device in args.devices:
        print(f"{device}\t{base}/push/hikvision/{device}/{terminal_token(secret, device)}")
    return 0
