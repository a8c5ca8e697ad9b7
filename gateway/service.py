"""Wires settings to the running gateway: InfluxDB, dead-letter store, MQTT source, pipeline."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from adapters.registry import AdapterRegistry, default_registry
from devices.errors import ConfigError, StorageError
from gateway.alerts.service import AlertConfig, AlertService
from gateway.audit_store import AuditStore
from gateway.deadletter import DeadLetterStore
from gateway.directory import DeviceSnapshot
from gateway.ingest import PahoSource
from gateway.liveness import LivenessTracker
from gateway.metrics import GatewayMetrics
from gateway.pipeline import Pipeline, PipelineConfig
from gateway.registry import ConsentCache, Registry
from gateway.settings import Settings
from gateway.storage.influx_v1 import InfluxV1Client
from gateway.storage.retention import rp_name
from privacy.deidentify import Deidentifier
from privacy.keys import KeyRing
from privacy.operators import IdentifierKind, pseudonymise
from privacy.policy import Policy, load_policy

log = logging.getLogger(__name__)


def pipeline_config(settings: Settings) -> PipelineConfig:
    return PipelineConfig(
        batch_size=settings.batch_size,
        linger_s=settings.linger_ms / 1000,
        write_queue=settings.write_queue,
        writers=settings.writers,
        retry_max_s=settings.retry_max_s,
        require_registration=settings.require_registration,
        liveness_sweep_s=settings.liveness_sweep_s,
        shutdown_grace_s=settings.shutdown_grace_s,
        max_past_s=settings.max_past_s,
        max_future_s=settings.max_future_s,
    )


def subscriptions(settings: Settings, adapters: AdapterRegistry) -> list[str]:
    group = settings.mqtt_shared_group
    return [f"$share/{group}/{f}" if group else f for f in adapters.subscriptions()]


def load_keyring(settings: Settings) -> KeyRing:
    """The pseudonymisation keys; ConfigError (the gateway refuses to start) if none."""
    if settings.pseudonym_keys is not None:
        return KeyRing.from_env_value(settings.pseudonym_keys.get_secret_value())
    if not settings.pseudonym_key_file.exists():
        raise ConfigError(
            f"no pseudonymisation key: {settings.pseudonym_key_file} does not exist. Create one"
            f" with `python -m privacy.keys ensure {settings.pseudonym_key_file}` (make demo and"
            " make test do), or set GRIDGATE_PSEUDONYM_KEYS / GRIDGATE_PSEUDONYM_KEY_FILE"
        )
    return KeyRing.from_file(settings.pseudonym_key_file)


def retention_plan(policy: Policy, settings: Settings) -> dict[str, str] | None:
    """measurement → retention policy name, or None to use the database's default."""
    if not settings.influx_retention:
        return None
    return {measurement: rp_name(measurement) for measurement in policy.retention}


async def setup_schema(influx: InfluxV1Client, policy: Policy, settings: Settings) -> None:
    await influx.ensure_database()
    if settings.influx_retention:
        for measurement, retention in policy.retention.items():
            await influx.ensure_retention_policy(rp_name(measurement), retention.influx)


async def ensure_database(
    influx: InfluxV1Client, policy: Policy, settings: Settings, stop: asyncio.Event
) -> bool:
    """Create database and retention policies, waiting for InfluxDB to come up; False if
    stopped first."""
    delay = 0.5
    while not stop.is_set():
        try:
            await setup_schema(influx, policy, settings)
            return True
        except StorageError as exc:
            if not exc.retryable:
                raise
            log.warning("InfluxDB not reachable (%s); retrying in %.1f s", exc, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, 10.0)
    return False


async def _flush_liveness(
    liveness: LivenessTracker, registry: Registry, stop: asyncio.Event, every_s: float
) -> None:
    """Write last-seen and online state to the registry in bulk, not per reading."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)
        updates = liveness.take_dirty()
        if updates:
            try:
                await asyncio.to_thread(registry.set_liveness, updates)
            except Exception as exc:  # the next flush carries newer state anyway
                log.error("registry liveness update failed: %s", exc)


async def _signal_ready(source: PahoSource, stop: asyncio.Event, ready: asyncio.Event) -> None:
    if await source.wait_subscribed(stop):
        ready.set()


async def run_gateway(
    settings: Settings,
    stop: asyncio.Event,
    metrics: GatewayMetrics | None = None,
    adapters: AdapterRegistry | None = None,
    ready: asyncio.Event | None = None,
    alert_clock_ns: Callable[[], int] = time.time_ns,
) -> GatewayMetrics:
    """Run until `stop` is set; returns the final counters. `ready` is set once subscribed.
    `alert_clock_ns` is the alerts' wall clock (deadlines, escalation, delivery retries):
    tests pass a fake one to see an hour of escalation in a second."""
    metrics = metrics or GatewayMetrics()
    adapters = adapters or default_registry(settings.community)
    # Privacy first: no key or a bad policy means the gateway does not start at all.
    policy = load_policy(settings.privacy_policy)
    keyring = load_keyring(settings)
    if missing := policy.missing_fields():
        log.warning("privacy policy does not name %s: those fields are dropped", missing)
    password = settings.influx_password.get_secret_value() if settings.influx_password else None
    async with InfluxV1Client(
        settings.influx_url,
        settings.influx_database,
        username=settings.influx_username,
        password=password,
        timeout_s=settings.influx_timeout_s,
    ) as influx:
        influx.setup_schema = lambda: setup_schema(influx, policy, settings)
        if not await ensure_database(influx, policy, settings, stop):
            return metrics
        deadletters = DeadLetterStore(
            settings.deadletter_path, settings.deadletter_max_rows, keyring=keyring
        )
        audit = AuditStore(settings.audit_path)
        registry = Registry.open(settings.registry_url, audit=audit)
        directory = DeviceSnapshot(registry.all_devices)
        liveness = LivenessTracker(
            time.time_ns(),
            {"mains": settings.offline_after_mains_s, "battery": settings.offline_after_battery_s},
        )
        directory.on_reload.append(liveness.register_all)
        # Consent per face event from a cache the registry updates on every change made in
        # this process (at once) and reloads for changes made elsewhere.
        privacy = Deidentifier(
            policy, keyring, face_consent=ConsentCache(registry), counts=metrics.dropped_fields
        )
        log.info("registry: %d devices", directory.reload())
        mqtt_password = (
            settings.mqtt_password.get_secret_value() if settings.mqtt_password else None
        )
        try:
            async with PahoSource(
                settings.mqtt_host,
                settings.mqtt_port,
                subscriptions(settings, adapters),
                client_id=settings.mqtt_client_id,
                username=settings.mqtt_username,
                password=mqtt_password,
                keepalive_s=settings.mqtt_keepalive_s,
                bulk=settings.mqtt_bulk_client,
            ) as source:
                if ready is not None:
                    asyncio.create_task(_signal_ready(source, stop, ready), name="ready")  # noqa: RUF006
                alerts = None
                if settings.alerts:
                    alerts = AlertService(
                        registry,
                        audit,
                        AlertConfig(
                            rules_path=settings.alert_rules,
                            routing_path=settings.routing_policy,
                            mqtt_host=settings.alert_mqtt_host or settings.mqtt_host,
                            mqtt_port=settings.alert_mqtt_port or settings.mqtt_port,
                            mqtt_client_id=f"{settings.mqtt_client_id}-alerts",
                            mqtt_username=settings.mqtt_username,
                            mqtt_password=mqtt_password,
                            escalation_s=settings.escalation_check_s,
                            clock_ns=alert_clock_ns,
                        ),
                        household_ref=lambda h: pseudonymise(
                            h, IdentifierKind.HOUSEHOLD_REF, keyring
                        ),
                    )
                    alerts.refresh_households(registry.all_devices())
                    directory.on_reload_blocking.append(alerts.refresh_households)
                pipeline = Pipeline(
                    source,
                    influx,
                    deadletters,
                    adapters=adapters,
                    privacy=privacy,
                    config=pipeline_config(settings),
                    metrics=metrics,
                    directory=directory,
                    liveness=liveness,
                    retention=retention_plan(policy, settings),
                    rules=alerts.rules if alerts else None,
                    alert_sink=alerts.accept if alerts else None,
                )
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(directory.keep_fresh(stop, settings.registry_refresh_s))
                    tg.create_task(
                        _flush_liveness(liveness, registry, stop, settings.liveness_flush_s)
                    )
                    if alerts is not None:
                        tg.create_task(alerts.run(stop), name="alerts")
                    await pipeline.run(stop)
                    stop.set()
                await asyncio.to_thread(registry.set_liveness, liveness.take_dirty())
        finally:
            deadletters.close()
            registry.close()
    return metrics
