"""What the API's handlers use: the running `Gateway`'s parts, plus the API's own (accounts,
re-identification, live feeds, request metrics). Built once by the app's lifespan.

Everything a handler reads comes from the shared databases (registry, alerts, audit, dead
letters) or InfluxDB, so any number of API and gateway processes answer alike; the only
process-local state is the feeds' fan-out, which itself polls the shared database.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from devices.location import Location
from devices.places import location_key
from gateway.alerts.lifecycle import Lifecycle
from gateway.alerts.model import OPEN_STATES, Severity
from gateway.alerts.service import AlertService
from gateway.alerts.store import AlertStore
from gateway.api.accounts import Accounts, LoginLimits
from gateway.api.metrics import ApiMetrics
from gateway.audit.store import AuditStore
from gateway.pipeline.deadletter import DeadLetterStore
from gateway.registry import Registry
from gateway.registry.reident import ReidentService
from gateway.runtime import Gateway
from gateway.settings import Settings
from gateway.storage.store import InfluxStore


@dataclass
class ApiContext:
    settings: Settings
    gateway: Gateway
    accounts: Accounts
    reident: ReidentService
    clock_ns: Callable[[], int]
    api_metrics: ApiMetrics

    @property
    def registry(self) -> Registry:
        return self.gateway.registry

    @property
    def audit(self) -> AuditStore:
        return self.gateway.audit

    @property
    def influx(self) -> InfluxStore:
        return self.gateway.influx

    @property
    def deadletters(self) -> DeadLetterStore:
        return self.gateway.deadletters

    @property
    def alert_service(self) -> AlertService:
        service = self.gateway.alerts
        assert service is not None  # build() makes sure
        return service

    @property
    def alerts(self) -> AlertStore:
        return self.alert_service.engine.store

    @property
    def lifecycle(self) -> Lifecycle:
        return self.alert_service.lifecycle


def build(gateway: Gateway, *, clock_ns: Callable[[], int] | None = None) -> ApiContext:
    """The API's parts over an entered `Gateway` (its alert side is built if it runs without
    alerts: people still act on the alerts other processes raised)."""
    settings = gateway.settings
    clock = clock_ns or gateway.alert_clock_ns
    if gateway.alerts is None:
        gateway.alerts = gateway.build_alert_service()
    accounts = Accounts(
        gateway.registry,
        gateway.audit,
        limits=LoginLimits(
            window_s=settings.api_login_window_s,
            per_account=settings.api_login_max_failures,
            per_client=settings.api_login_max_failures_per_client,
            token_ttl_s=settings.api_token_ttl_s,
        ),
        clock_ns=clock,
    )
    store = gateway.alerts.engine.store

    def emergency(place: Location) -> bool:
        """An open level-I or II alert at the place, around it or inside it (R3.5)."""
        key = location_key(place)
        if not key:
            return False
        for alert in store.open_alerts(limit=10_000):
            if alert.severity > Severity.II or alert.state not in OPEN_STATES:
                continue
            if key == alert.place or key.startswith(alert.place + "/"):
                return True
            if alert.place.startswith(key + "/"):
                return True
        return False

    reident = ReidentService(
        gateway.registry,
        gateway.audit,
        clock_ns=clock,
        emergency=emergency,
        grant_ttl_s=settings.reident_grant_ttl_s,
    )
    api_metrics = ApiMetrics()
    api_metrics.attach(lambda: gateway.metrics, lambda: gateway.registry)
    return ApiContext(settings, gateway, accounts, reident, clock, api_metrics)


__all__ = ["ApiContext", "build"]
