"""Gateway settings from the environment (prefix GRIDGATE_), documented in the README."""

from __future__ import annotations

import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import annotated_types
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

from devices.errors import ConfigError

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
INFLUX_PORT_VARIABLE = "GRIDGATE_INFLUX_PORT"  # the services script's port for InfluxDB


def local_influx_url(environ: Mapping[str, str]) -> str:
    """The InfluxDB the project's scripts start on loopback: GRIDGATE_INFLUX_PORT (a bad one
    falls back to the default and the services script names it), else 18086."""
    port = environ.get(INFLUX_PORT_VARIABLE, "").strip()
    return f"http://127.0.0.1:{port if port.isdigit() else 18086}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GRIDGATE_", extra="forbid")

    # MQTT broker
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = Field(default=18830, ge=1, le=65535)
    mqtt_client_id: str = "gridgate-gateway"
    mqtt_username: str | None = None
    mqtt_password: SecretStr | None = None
    mqtt_keepalive_s: int = Field(default=30, ge=5)
    # paho with bulk receive/ack (gateway/mqtt/paho_fast.py); false = the stock paho client.
    mqtt_bulk_client: bool = True
    # Received but not yet acked: past this nothing more is read from the socket (the broker
    # keeps the rest), so a backlog or a junk burst cannot grow the gateway's memory.
    mqtt_max_held_mb: int = Field(default=16, ge=1, le=4096)
    # Which community's topics to subscribe to ("+" = every community on the broker).
    community: str = Field(default="+", pattern=r"^(\+|[A-Za-z0-9][A-Za-z0-9_.:-]{0,63})$")
    # TLS to the broker (and the members' broker): the broker's certificate checked against
    # this CA (default: the system's); a client certificate if the broker asks for one.
    mqtt_tls: bool = False  # implied by a CA or client certificate file
    mqtt_tls_ca_file: Path | None = None
    mqtt_tls_cert_file: Path | None = None
    mqtt_tls_key_file: Path | None = None
    # "$share/<group>/" prefix for scale-out over MQTT v5 shared subscriptions; empty = none.
    mqtt_shared_group: str = ""

    # InfluxDB: the v1 HTTP API (1.x, and 2.x/3.x through their compatibility API), or 2.x
    # native (token, org, buckets; gateway/storage/influx_v2.py)
    influx_api: Literal["v1", "v2"] = "v1"
    influx_token: SecretStr | None = None  # v2
    influx_org: str = "gridgate"  # v2
    influx_bucket: str = "gridgate"  # v2: with retention on, one bucket per measurement
    # Default: the local InfluxDB that scripts/services.sh starts, on GRIDGATE_INFLUX_PORT —
    # so `make demo GRIDGATE_INFLUX_PORT=…` and the gateway agree without a second variable.
    influx_url: str = Field(default_factory=lambda: local_influx_url(os.environ))
    influx_database: str = "gridgate"
    influx_username: str | None = None
    influx_password: SecretStr | None = None
    influx_timeout_s: float = Field(default=10.0, gt=0)
    # An https InfluxDB's certificate is checked against this CA (default: the system's).
    influx_tls_ca_file: Path | None = None
    # One retention policy per measurement, created on start (InfluxDB 1.x); false = write to
    # the database's default policy (e.g. InfluxDB 2.x/3.x through the v1 API).
    influx_retention: bool = True

    # Pipeline. The broker's in-flight window bounds unacknowledged messages, so it must be at
    # least batch_size (Mosquitto: max_inflight_messages; the generated config sets 10000).
    batch_size: int = Field(default=5000, ge=1, le=100_000)
    linger_ms: int = Field(default=200, ge=0, le=60_000)
    write_queue: int = Field(default=2, ge=1, le=64, description="batches waiting to be written")
    writers: int = Field(default=2, ge=1, le=8, description="concurrent InfluxDB writes")
    retry_max_s: float = Field(default=30.0, gt=0, description="longest pause between retries")
    shutdown_grace_s: float = Field(default=15.0, ge=0, description="flush time on stop")

    # Disk spool (gateway/storage/spool.py): while InfluxDB is down, batches are kept here
    # (fsync'ed, then acked to the broker) and replayed when it answers. Default directory:
    # .run/gridgate/spool/<mqtt_client_id>, one per gateway identity like its broker session.
    spool: bool = True
    spool_dir: Path | None = None
    spool_max_mb: int = Field(default=1024, ge=1, description="past it the broker holds the rest")
    spool_probe_s: float = Field(default=1.0, gt=0, description="InfluxDB ping while it is down")

    # Validation
    max_past_s: float = Field(default=30 * 86400, gt=0)
    max_future_s: float = Field(default=300, ge=0)

    # Privacy: the per-field policy file (default: the shipped privacy/policy.yaml) and the
    # pseudonymisation keys — "k2:<hex>,k1:<hex>" (first is current) or a key file. The gateway
    # refuses to start without a real key: `python -m privacy.keys ensure FILE` makes one.
    privacy_policy: Path | None = None
    pseudonym_keys: SecretStr | None = None
    pseudonym_key_file: Path = Path(".run/gridgate/pseudonym.key")

    # Alerts (R5): rules and routing policy files (default: the shipped ones)
    alerts: bool = True
    alert_rules: Path | None = None
    routing_policy: Path | None = None
    escalation_check_s: float = Field(default=5.0, gt=0)
    # The broker the members' apps listen on (default: the ingest broker). Ingestion does not
    # wait for it: while it is down alerts wait in the outbox, across restarts too.
    alert_mqtt_host: str | None = None
    alert_mqtt_port: int | None = Field(default=None, ge=1, le=65535)
    # Its own account where the broker binds client ids to user names (`gridgate
    # broker-config`: gridgate-gateway-alerts); default: the ingest account.
    alert_mqtt_username: str | None = None
    alert_mqtt_password: SecretStr | None = None

    # Device registry (SQLAlchemy URL; PostgreSQL for several gateway processes)
    registry_url: str = "sqlite:///.run/gridgate/registry.sqlite3"
    require_registration: bool = True  # dead-letter readings of devices not in the registry
    registry_refresh_s: float = Field(default=30.0, gt=0)

    # Liveness: offline after this much silence, per power class
    offline_after_mains_s: float = Field(default=600.0, gt=0)
    offline_after_battery_s: float = Field(default=4 * 3600.0, gt=0)
    liveness_sweep_s: float = Field(default=5.0, gt=0)
    liveness_flush_s: float = Field(default=10.0, gt=0, description="registry last-seen writes")

    # HTTP API (gateway/api): loopback by default; put a TLS proxy in front to serve further.
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=18000, ge=1, le=65535)
    api_token_ttl_s: float = Field(default=8 * 3600.0, gt=0, description="bearer token life")
    api_login_window_s: float = Field(default=900.0, gt=0)
    api_login_max_failures: int = Field(default=5, ge=1, description="per account per window")
    api_login_max_failures_per_client: int = Field(default=20, ge=1)
    api_k_anonymity: int = Field(default=5, ge=2, description="smallest group a cell may show")
    api_feed_poll_s: float = Field(default=0.5, gt=0, description="live feeds' database poll")
    api_feed_queue: int = Field(default=256, ge=1, description="messages a slow client may lag")
    api_max_range_s: float = Field(default=31 * 86400.0, gt=0, description="readings history")
    api_max_points: int = Field(default=10_000, ge=1, description="readings history cells")
    reident_grant_ttl_s: float = Field(default=3600.0, gt=0)

    # Carrier-platform push (gateway/push): an HTTP listener in the ingest process, because a
    # push is answered 200 only after its durable hand-off. Off unless a port is given.
    push_port: int | None = Field(default=None, ge=1, le=65535)
    push_host: str = "127.0.0.1"
    onenet_token: SecretStr | None = None  # the token set in OneNET's push configuration
    ctwing_token: SecretStr | None = None  # the last path segment of the CTWing push URL
    # Where members open the API's member page (https://gw.example.cn): group robots' alert
    # messages link to it. Unset: no link.
    public_url: str | None = None
    # Hikvision terminals' push URLs carry a token derived from this (`gridgate push-url`)
    hikvision_secret: SecretStr | None = None
    push_answer_s: float = Field(default=8.0, gt=0, description="durable hand-off, else 503")
    push_max_pending: int = Field(default=10_000, ge=1, description="messages awaiting hand-off")

    audit_path: Path = Path(".run/gridgate/audit.sqlite3")  # hash-chained, append-only
    deadletter_path: Path = Path(".run/gridgate/deadletter.sqlite3")
    deadletter_max_rows: int = Field(default=1_000_000, ge=1, description="oldest pruned")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("log_level", mode="before")
    @classmethod
    def _any_case(cls, value: object) -> object:
        """`debug` is what people type: the level names are not case-sensitive."""
        if isinstance(value, str) and value.strip().upper() in LOG_LEVELS:
            return value.strip().upper()
        return value  # refused as typed, so the message quotes what the operator wrote

    @classmethod
    def from_env(cls) -> Settings:
        """The settings from the environment, or SettingsError naming every bad GRIDGATE_*
        variable and what it expects: a new operator should read the fix, not a pydantic
        dump (`settings_problems`)."""
        try:
            return cls()
        except ValidationError as exc:
            raise SettingsError(settings_problems(exc)) from None


# GRIDGATE_* variables that are not fields: read by scripts/services.sh and the Makefile, or
# handed over by `environment()` to the webhook sender (secrets) and the routing policy (the
# webhook URL variables it names).
OTHER_VARIABLES = frozenset(
    {
        "GRIDGATE_INFLUX_PORT",
        "GRIDGATE_INFLUX_RPC_PORT",
        "GRIDGATE_RUN_DIR",
        "GRIDGATE_BROKER_AUTH_CONF",
        "GRIDGATE_SERVICES_WAIT",
        "GRIDGATE_WEBHOOK_SECRETS",
        "GRIDGATE_WEBHOOK_SECRETS_FILE",
        "GRIDGATE_EMERGENCY_WEBHOOK_URL",
    }
)


def environment() -> dict[str, str]:
    """The GRIDGATE_* variables as they are now. Settings are read here and nowhere else; this
    is for the few whose names a policy file chooses (a webhook's URL variable) and for the
    commands' own defaults (the audit path of a standalone registry command)."""
    return {k: v for k, v in os.environ.items() if k.startswith("GRIDGATE_")}


def process_environment() -> dict[str, str]:
    """The whole environment, for what is handed on or is not gridgate's: the workers of
    `gridgate run --workers` inherit it, and glibc's MALLOC_ARENA_MAX is respected."""
    return dict(os.environ)


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """GRIDGATE_* variables nothing reads — most likely typos (GRIDGATE_MQTT_PROT)."""
    known = {f"GRIDGATE_{name.upper()}" for name in Settings.model_fields} | OTHER_VARIABLES
    return sorted(k for k in environ if k.startswith("GRIDGATE_") and k not in known)


# -- settings errors that name the fix ------------------------------------------------------

PREFIX = "GRIDGATE_"
HIDDEN = "<hidden>"
_SHOWN_MAX = 60  # a longer value is cut: the line must stay readable
# Where the type and its constraints say too little to a person.
_EXPECTED: dict[str, str] = {
    "community": "+ (every community) or one community's code: a letter or digit, then up to"
    " 63 of A-Z a-z 0-9 _ . : -",
}
_BOOL_FORMS = "true or false (also 1/0, yes/no, on/off)"
_UNITS = (("_ms", " (milliseconds)"), ("_s", " (seconds)"))  # by the name's suffix


class SettingsError(ConfigError):
    """The environment holds bad settings; `problems` has one line per bad variable (and
    so has the message, one per line)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def load_settings() -> Settings:
    """`Settings.from_env()`, by its usual name."""
    return Settings.from_env()


def settings_problems(exc: ValidationError) -> list[str]:
    """One line per bad variable, in the order the settings are declared:
    ``GRIDGATE_BATCH_SIZE='abc' is not valid: expected an integer from 1 to 100000``.
    Secret values (passwords, keys) are never shown."""
    fields = Settings.model_fields
    order = {name: i for i, name in enumerate(fields)}
    first: dict[str, dict[str, Any]] = {}
    others: list[str] = []
    for error in exc.errors(include_url=False):
        loc = error.get("loc") or ()
        name = loc[0] if loc else None
        if isinstance(name, str) and name in fields:
            first.setdefault(name, dict(error))
        else:  # not one field's value: pydantic's words, which hold no input value
            others.append(f"settings: {error.get('msg', 'invalid')}")
    lines = []
    for name in sorted(first, key=order.__getitem__):
        info = fields[name]
        value = HIDDEN if _is_secret(info) else _shown(first[name].get("input"))
        lines.append(f"{PREFIX}{name.upper()}={value} is not valid: expected {expected_form(name)}")
    return lines + others


def expected_form(name: str) -> str:
    """What field `name` accepts, in words, from its type and constraints."""
    info = Settings.model_fields[name]
    if name in _EXPECTED:
        return _EXPECTED[name]
    kinds = [t for t in _members(info.annotation) if t is not type(None)]
    optional = len(kinds) < len(_members(info.annotation))
    text = _form_of(kinds[0] if len(kinds) == 1 else None, info, name)
    return f"{text}, or leave it unset" if optional else text


def _members(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _form_of(kind: Any, info: FieldInfo, name: str) -> str:
    if typing.get_origin(kind) is Literal:
        return "one of " + ", ".join(str(v) for v in typing.get_args(kind))
    if kind is bool:
        return _BOOL_FORMS
    if kind in (int, float):
        noun = "an integer" if kind is int else "a number"
        unit = next((u for suffix, u in _UNITS if name.endswith(suffix)), "")
        return noun + _bounds(info) + unit
    if kind is Path:
        return "a file path"
    for item in info.metadata:
        pattern = getattr(item, "pattern", None)
        if pattern:
            return f"text matching {pattern}"
    return "text"


def _bounds(info: FieldInfo) -> str:
    low: object = None
    high: object = None
    low_open = high_open = False
    for item in info.metadata:
        if isinstance(item, annotated_types.Ge):
            low = item.ge
        elif isinstance(item, annotated_types.Gt):
            low, low_open = item.gt, True
        elif isinstance(item, annotated_types.Le):
            high = item.le
        elif isinstance(item, annotated_types.Lt):
            high, high_open = item.lt, True
    if low is not None and high is not None and not (low_open or high_open):
        return f" from {_number(low)} to {_number(high)}"
    parts = []
    if low is not None:
        parts.append(f"greater than {_number(low)}" if low_open else f"of at least {_number(low)}")
    if high is not None:
        parts.append(f"less than {_number(high)}" if high_open else f"of at most {_number(high)}")
    return " " + " and ".join(parts) if parts else ""


def _number(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _is_secret(info: FieldInfo) -> bool:
    return SecretStr in _members(info.annotation)


def _shown(value: Any) -> str:
    """The refused value as typed, quoted (control characters escaped), cut if long."""
    text = value if isinstance(value, str) else str(value)
    if len(text) > _SHOWN_MAX:
        text = text[:_SHOWN_MAX] + "…"
    return repr(text)
