"""Gateway settings from the environment (prefix GRIDGATE_), documented in the README."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    # Which community's topics to subscribe to ("+" = every community on the broker).
    community: str = Field(default="+", pattern=r"^(\+|[A-Za-z0-9][A-Za-z0-9_.:-]{0,63})$")
    # "$share/<group>/" prefix for scale-out over MQTT v5 shared subscriptions; empty = none.
    mqtt_shared_group: str = ""

    # InfluxDB (v1 HTTP API)
    influx_url: str = "http://127.0.0.1:18086"
    influx_database: str = "gridgate"
    influx_username: str | None = None
    influx_password: SecretStr | None = None
    influx_timeout_s: float = Field(default=10.0, gt=0)
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

    audit_path: Path = Path(".run/gridgate/audit.sqlite3")  # hash-chained, append-only
    deadletter_path: Path = Path(".run/gridgate/deadletter.sqlite3")
    deadletter_max_rows: int = Field(default=1_000_000, ge=1, description="oldest pruned")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


# GRIDGATE_* variables that are not fields: read by scripts/services.sh and the Makefile, or
# handed over by `environment()` to the webhook sender (secrets) and the routing policy (the
# webhook URL variables it names).
OTHER_VARIABLES = frozenset(
    {
        "GRIDGATE_INFLUX_PORT",
        "GRIDGATE_INFLUX_RPC_PORT",
        "GRIDGATE_RUN_DIR",
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


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """GRIDGATE_* variables nothing reads — most likely typos (GRIDGATE_MQTT_PROT)."""
    known = {f"GRIDGATE_{name.upper()}" for name in Settings.model_fields} | OTHER_VARIABLES
    return sorted(k for k in environ if k.startswith("GRIDGATE_") and k not in known)
