"""Where the integration tests' real services listen (tests/integration/conftest starts them)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Services:
    mqtt_host: str
    mqtt_port: int
    influx_url: str
