"""`gridgate api` (the HTTP API alone), the API beside `gridgate run --api`, and the account
commands `gridgate users` and `gridgate apikey`."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import sys

import uvicorn

from gateway.api import create_app
from gateway.api.accounts import API_ROLES, AccountError, Accounts, StaffRole
from gateway.audit.store import AuditStore
from gateway.registry import Registry
from gateway.runtime import Gateway
from gateway.serving import serve_until
from gateway.settings import Settings

log = logging.getLogger("gridgate")
CLI_ACTOR = "cli"


def api_url(settings: Settings) -> str:
    host = f"[{settings.api_host}]" if ":" in settings.api_host else settings.api_host
    return f"http://{host}:{settings.api_port}"


async def serve_api(
    settings: Settings,
    stop: asyncio.Event,
    gateway: Gateway | None = None,
    *,
    announce: bool = True,
) -> None:
    """Serve until `stop` is set; with `gateway`, on that running gateway's parts."""
    app = create_app(
        settings, gateway=gateway, clock_ns=gateway.alert_clock_ns if gateway else None
    )
    config = uvicorn.Config(
        app,
        host=settings.api_host,
        port=settings.api_port,
        log_level="warning",
        access_log=False,  # a query string may carry a WebSocket token
        lifespan="on",
        ws="websockets-sansio",
    )
    if announce:
        print(f"gridgate: API on {api_url(settings)}  (docs: {api_url(settings)}/docs)",
              file=sys.stderr)  # fmt: skip
    if not await serve_until(config, stop):
        raise SystemExit(f"gridgate: the API could not listen on {api_url(settings)}")


async def api_command(settings: Settings, stop: asyncio.Event) -> int:
    await serve_api(settings, stop)
    return 0


# -- accounts -----------------------------------------------------------------------------


def add_arguments(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sub.add_parser("api", help="serve the HTTP API (GRIDGATE_API_HOST/PORT)")
    users = sub.add_parser("users", help="API accounts of grid members and staff")
    verbs = users.add_subparsers(dest="verb", required=True)
    add = verbs.add_parser("add", help="an account for MEMBER (or a staff id with --role/--scope)")
    add.add_argument("user")
    add.add_argument("--role", choices=[r.value for r in StaffRole])
    add.add_argument("--scope", help="staff only: the place key they see (e.g. xf or xf/g01)")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    passwd = verbs.add_parser("passwd", help="set a new password (ends its sessions)")
    passwd.add_argument("user")
    passwd.add_argument("--password-stdin", action="store_true")
    disable = verbs.add_parser("disable", help="disable an account (ends its sessions)")
    disable.add_argument("user")
    verbs.add_parser("list", help="the accounts")

    keys = sub.add_parser("apikey", help="API keys for machines (screens, dispatch)")
    kverbs = keys.add_subparsers(dest="verb", required=True)
    create = kverbs.add_parser("create", help="a new key, printed once")
    key_roles = [r for r in API_ROLES if r in {s.value for s in StaffRole}]
    create.add_argument("--role", required=True, choices=key_roles)
    create.add_argument("--scope", required=True, help="the place key it sees")
    create.add_argument("--name", default="")
    kverbs.add_parser("list", help="the keys (never their secrets)")
    revoke = kverbs.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise AccountError("the passwords differ")
    return first


def accounts_command(args: argparse.Namespace, settings: Settings) -> int:
    audit = AuditStore(settings.audit_path)
    try:
        with Registry.open(settings.registry_url, audit=audit) as registry:
            accounts = Accounts(registry, audit)
            return _accounts(args, accounts)
    except AccountError as exc:
        print(f"gridgate {args.command}: {exc}", file=sys.stderr)
        return 2
    finally:
        audit.close()


def _accounts(args: argparse.Namespace, accounts: Accounts) -> int:
    if args.command == "users":
        if args.verb == "add":
            made = accounts.add_user(args.user, _password(args), role=args.role,
                                     scope=args.scope, actor=CLI_ACTOR)  # fmt: skip
            kind = "member" if made.member else f"staff ({made.role} of {made.scope})"
            print(f"account {made.user_id} added: {kind}")
        elif args.verb == "passwd":
            accounts.set_password(args.user, _password(args), actor=CLI_ACTOR)
            print(f"password of {args.user} changed; its sessions ended")
        elif args.verb == "disable":
            accounts.disable(args.user, actor=CLI_ACTOR)
            print(f"account {args.user} disabled; its sessions ended")
        else:
            for a in accounts.accounts():
                kind = "member" if a.member else "staff"
                extra = " ".join(x for x in (a.role or "", a.scope or "") if x)
                print(
                    f"{a.user_id:<24} {kind:<6} {'active' if a.active else 'disabled':<8} {extra}"
                )
        return 0
    if args.verb == "create":
        text, info = accounts.create_key(args.role, args.scope, name=args.name, actor=CLI_ACTOR)
        print(f"API key {info.id} ({info.role} of {info.scope}); shown once, keep it safe:",
              file=sys.stderr)  # fmt: skip
        print(text)
    elif args.verb == "revoke":
        accounts.revoke_key(args.key_id, actor=CLI_ACTOR)
        print(f"API key {args.key_id} revoked")
    else:
        for k in accounts.api_keys():
            state = "revoked" if k.revoked_ns else "active"
            print(f"{k.id}  {k.name:<20} {k.role:<9} {k.scope:<20} {state}")
    return 0


__all__ = ["accounts_command", "add_arguments", "api_command", "api_url", "serve_api"]
