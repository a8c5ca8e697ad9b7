"""TLS for gridgate's MQTT clients (GRIDGATE_MQTT_TLS*): the broker's certificate checked
against the operator's CA (or the system's), optionally a client certificate. Problems with
the files are found at start, naming the variable, not at the first failed handshake."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt

from devices.errors import ConfigError

CA_VARIABLE = "GRIDGATE_MQTT_TLS_CA_FILE"


@dataclass(frozen=True, slots=True)
class MqttTls:
    ca_file: Path | None = None  # None: the system's trusted CAs
    cert_file: Path | None = None
    key_file: Path | None = None

    @classmethod
    def from_settings(
        cls, enabled: bool, ca_file: Path | None, cert_file: Path | None, key_file: Path | None
    ) -> MqttTls | None:
        """None when TLS is off (no flag and no file given); ConfigError naming the variable
        of a file that cannot be read, or a certificate without its key."""
        if not (enabled or ca_file or cert_file):
            return None
        for path, variable in (
            (ca_file, CA_VARIABLE),
            (cert_file, "GRIDGATE_MQTT_TLS_CERT_FILE"),
            (key_file, "GRIDGATE_MQTT_TLS_KEY_FILE"),
        ):
            if path is not None and not path.is_file():
                raise ConfigError(f"{variable}={path}: no such file")
        if (cert_file is None) != (key_file is None):
            raise ConfigError(
                "GRIDGATE_MQTT_TLS_CERT_FILE and GRIDGATE_MQTT_TLS_KEY_FILE go together"
            )
        return cls(ca_file, cert_file, key_file)

    def apply(self, client: mqtt.Client) -> None:
        """Before connecting: verify the broker's certificate and host name (never off)."""
        try:
            client.tls_set(
                ca_certs=str(self.ca_file) if self.ca_file else None,
                certfile=str(self.cert_file) if self.cert_file else None,
                keyfile=str(self.key_file) if self.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(f"MQTT TLS files could not be loaded: {describe(exc)}") from exc


def describe(exc: BaseException) -> str:
    """A TLS failure in words that say what to check."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = exc.verify_message or exc.reason or "not trusted"
        return f"TLS: the broker's certificate is not trusted ({reason}; check {CA_VARIABLE})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed ({exc.reason or exc}; is this a TLS listener?)"
    return str(exc)


__all__ = ["CA_VARIABLE", "MqttTls", "describe"]
