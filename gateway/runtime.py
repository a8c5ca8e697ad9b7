"""`Gateway`: the one object that builds, starts and stops every long-lived part of a running
gateway, and holds them as attributes so that the CLI, the API and tests share one handle.

    async with Gateway(settings) as gw:      # policy, keys, stores, registry, snapshot, …
        await gw.run(stop, ready)            # InfluxDB schema, MQTT source, pipeline, loops

Entering builds what needs no network (privacy first: no key or a bad policy and the gateway
does not start at all); `run` waits for InfluxDB, subscribes, and runs the pipeline and its
background loops until `stop` is set; leaving flushes liveness to the registry and closes the
stores. Everything is built here and nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

from adapters.registry import AdapterRegistry, default_registry
from devices.errors import ConfigError, StorageError
from gateway.alerts.model import Condition
from gateway.alerts.service import AlertConfig, AlertService, spool_full_condition
from gateway.audit.store import AuditStore
from gateway.mqtt.source import PahoSource
from gateway.mqtt.tls import MqttTls
from gateway.pipeline.backoff import Backoff
from gateway.pipeline.core import Pipeline, PipelineConfig
from gateway.pipeline.deadletter import DeadLetterStore
from gateway.pipeline.directory import DeviceSnapshot
from gateway.pipeline.liveness import LivenessTracker
from gateway.pipeline.metrics import GatewayMetrics
from gateway.push.server import PushListener
from gateway.push.source import MergedSource, PushSource
from gateway.registry import ConsentCache, RegisteredVehicles, Registry, ResidentNumbers
from gateway.settings import Settings, environment
from gateway.storage.influx_v1 import InfluxV1Client
from gateway.storage.influx_v2 import InfluxV2Client
from gateway.storage.retention import rp_name
from gateway.storage.spool import Spool
from gateway.storage.store import InfluxStore
from privacy.deidentify import Deidentifier
from privacy.keys import KeyRing
from privacy.operators import IdentifierKind, pseudonymise
from privacy.policy import Policy, load_policy

log = logging.getLogger(__name__)

LIVENESS_CHUNK = 500  # devices per registry transaction


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
        spool_probe_s=settings.spool_probe_s,
    )


def spool_dir(settings: Settings) -> Path:
    """The gateway's spool: one per client id (the broker session whose acks it stands for)."""
    if settings.spool_dir is not None:
        return settings.spool_dir
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in settings.mqtt_client_id)
    return Path(".run/gridgate/spool") / safe


def registry_resolver(registry: Registry, keyring: KeyRing) -> Callable[[str, str], str | None]:
    """Privacy's ``resolve``: a terminal's employee number → the resident's pseudonym; a plate
    → its pseudonym when it is a resident's registered vehicle (see the privacy policy)."""
    residents = ResidentNumbers(registry, keyring.current)
    vehicles = RegisteredVehicles(registry, keyring)

    def resolve(field: str, value: str) -> str | None:
        return vehicles(value) if field == "plate" else residents(value)

    return resolve


def subscriptions(settings: Settings, adapters: AdapterRegistry) -> list[str]:
    group = settings.mqtt_shared_group
    return [f"$share/{group}/{f}" if group else f for f in adapters.subscriptions()]


def influx_ca(settings: Settings) -> Path | None:
    """The InfluxDB CA file, checked at start so that a typo is named, not a TLS failure."""
    ca = settings.influx_tls_ca_file
    if ca is not None and not ca.is_file():
        raise ConfigError(f"GRIDGATE_INFLUX_TLS_CA_FILE={ca}: no such file")
    return ca


def mqtt_tls(settings: Settings) -> MqttTls | None:
    return MqttTls.from_settings(
        settings.mqtt_tls,
        settings.mqtt_tls_ca_file,
        settings.mqtt_tls_cert_file,
        settings.mqtt_tls_key_file,
    )


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


def retention_policies(policy: Policy, settings: Settings) -> dict[str, str]:
    """retention policy name → InfluxDB duration, for the schema."""
    if not settings.influx_retention:
        return {}
    return {rp_name(m): retention.influx for m, retention in policy.retention.items()}


def influx_client(policy: Policy, settings: Settings) -> InfluxV1Client | InfluxV2Client:
    """The InfluxDB client of `GRIDGATE_INFLUX_API`: v1 (database and retention policies) or
    v2 (a bucket per retention policy, its retention the bucket's)."""
    if settings.influx_api == "v2":
        token = settings.influx_token
        buckets = {
            rp_name(m): (f"{settings.influx_bucket}_{m}", retention.seconds)
            for m, retention in policy.retention.items()
        }
        return InfluxV2Client(
            settings.influx_url,
            org=settings.influx_org,
            bucket=settings.influx_bucket,
            token=token.get_secret_value() if token else None,
            buckets=buckets if settings.influx_retention else None,
            timeout_s=settings.influx_timeout_s,
            ca_file=influx_ca(settings),
        )
    password = settings.influx_password
    return InfluxV1Client(
        settings.influx_url,
        settings.influx_database,
        username=settings.influx_username,
        password=password.get_secret_value() if password else None,
        timeout_s=settings.influx_timeout_s,
        retention_policies=retention_policies(policy, settings),
        ca_file=influx_ca(settings),
    )


class Gateway:
    """Every long-lived part of one gateway process. Attributes are set on entering (`influx`,
    `deadletters`, `audit`, `registry`, `directory`, `liveness`, `privacy`, `alerts`) and
    while running (`source`, `pipeline`); `metrics` from the start."""

    def __init__(
        self,
        settings: Settings,
        *,
        metrics: GatewayMetrics | None = None,
        adapters: AdapterRegistry | None = None,
        alert_clock_ns: Callable[[], int] = time.time_ns,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        """`alert_clock_ns` is the alerts' wall clock (deadlines, escalation, delivery
        retries): tests pass a fake one to see an hour of escalation in a second. `environ`
        adds to the GRIDGATE_* variables the routing policy and webhook secrets read (the
        demo's stand-in webhook)."""
        self.settings = settings
        self.environ = {**environment(), **(environ or {})}
        self.metrics = metrics or GatewayMetrics()
        self.adapters = adapters or default_registry(settings.community)
        self.alert_clock_ns = alert_clock_ns
        self.source: PahoSource | None = None
        self.pipeline: Pipeline | None = None
        self._stack = contextlib.AsyncExitStack()
        self._background: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Self:
        settings = self.settings
        self.policy = load_policy(settings.privacy_policy)
        self.keyring = load_keyring(settings)
        if missing := self.policy.missing_fields():
            log.warning("privacy policy does not name %s: those fields are dropped", missing)
        stack = self._stack
        try:
            self.influx: InfluxStore = influx_client(self.policy, settings)
            stack.push_async_callback(self.influx.aclose)
            self.deadletters = DeadLetterStore(
                settings.deadletter_path, settings.deadletter_max_rows, keyring=self.keyring
            )
            stack.callback(self.deadletters.close)
            self.spool = None
            if settings.spool:
                self.spool = Spool(spool_dir(settings), settings.spool_max_mb * 1024 * 1024)
                await asyncio.to_thread(
                    self.spool.open
                )  # checks every record: a large one takes seconds
                stack.callback(self.spool.close)
            self.audit = AuditStore(settings.audit_path)
            stack.callback(self.audit.close)
            self.registry = Registry.open(settings.registry_url, audit=self.audit)
            stack.callback(self.registry.close)
            self.directory = DeviceSnapshot(self.registry.all_devices)
            self.liveness = LivenessTracker(
                time.time_ns(),
                {
                    "mains": settings.offline_after_mains_s,
                    "battery": settings.offline_after_battery_s,
                },
            )
            self.directory.on_reload.append(self.liveness.register_all)
            # Consent per face event from a cache the registry updates on every change made in
            # this process (at once) and reloads for changes made elsewhere.
            self.privacy = Deidentifier(
                self.policy,
                self.keyring,
                face_consent=ConsentCache(self.registry),
                resolve=registry_resolver(self.registry, self.keyring),
                counts=self.metrics.dropped_fields,
            )
            log.info("registry: %d devices", self.directory.reload())
            self.alerts = self.build_alert_service() if settings.alerts else None
        except BaseException:
            await stack.aclose()
            raise
        return self

    def build_alert_service(self) -> AlertService:
        settings, keyring = self.settings, self.keyring
        username = settings.alert_mqtt_username or settings.mqtt_username
        password = settings.alert_mqtt_password or settings.mqtt_password
        alerts = AlertService(
            self.registry,
            self.audit,
            AlertConfig(
                rules_path=settings.alert_rules,
                routing_path=settings.routing_policy,
                mqtt_host=settings.alert_mqtt_host or settings.mqtt_host,
                mqtt_port=settings.alert_mqtt_port or settings.mqtt_port,
                mqtt_client_id=f"{settings.mqtt_client_id}-alerts",
                mqtt_username=username,
                mqtt_password=password.get_secret_value() if password else None,
                mqtt_tls=mqtt_tls(settings),
                escalation_s=settings.escalation_check_s,
                clock_ns=self.alert_clock_ns,
                environ=self.environ,
                public_url=settings.public_url,
            ),
            household_ref=lambda h: pseudonymise(h, IdentifierKind.HOUSEHOLD_REF, keyring),
        )
        alerts.refresh_households(self.registry.all_devices())
        self.directory.on_reload_blocking.append(alerts.refresh_households)
        return alerts

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        """Until `stop` is set: subscribe, run the pipeline and the loops around it; then flush
        the pipeline and the liveness state. Without a spool it first waits for InfluxDB; with
        one it starts at once and spools until InfluxDB answers. `ready` is set once
        subscribed."""
        settings = self.settings
        if self.spool is None:
            if not await self._wait_for_influx(stop):
                return
            influx_ready = True
        else:  # no waiting: what arrives meanwhile is spooled
            influx_ready = await self._influx_schema_now()
        password = settings.mqtt_password
        async with PahoSource(
            settings.mqtt_host,
            settings.mqtt_port,
            subscriptions(settings, self.adapters),
            client_id=settings.mqtt_client_id,
            username=settings.mqtt_username,
            password=password.get_secret_value() if password else None,
            keepalive_s=settings.mqtt_keepalive_s,
            bulk=settings.mqtt_bulk_client,
            tls=mqtt_tls(settings),
            max_held_bytes=settings.mqtt_max_held_mb * 1024 * 1024,
        ) as source:
            self.source = source
            alerts = self.alerts
            pushed = PushSource(settings.push_max_pending) if settings.push_port else None
            listener = sock = None
            if pushed is not None:
                listener = PushListener(settings, pushed, self.directory, self.metrics)
                sock = listener.bind()
            self.pipeline = Pipeline(
                source if pushed is None else MergedSource(source, pushed),
                self.influx,
                self.deadletters,
                adapters=self.adapters,
                privacy=self.privacy,
                config=pipeline_config(settings),
                metrics=self.metrics,
                directory=self.directory,
                liveness=self.liveness,
                retention=retention_plan(self.policy, settings),
                rules=alerts.rules if alerts else None,
                alert_sink=alerts.accept if alerts else None,
                spool=self.spool,
                probe=self.influx.ping,
                prepare=self.influx.ensure_schema,
                on_spool_full=self._spool_full,
                # several processes share the traffic: silent to this one is not silent
                last_seen_elsewhere=self.registry.last_seen if settings.mqtt_shared_group else None,
            )
            if not influx_ready and self.pipeline.spooler is not None:
                self.pipeline.spooler.mark_down()
            async with asyncio.TaskGroup() as tg:
                if ready is not None:
                    tg.create_task(self._signal_ready(source, stop, ready), name="ready")
                tg.create_task(
                    self.directory.keep_fresh(stop, settings.registry_refresh_s),
                    name="registry-refresh",
                )
                tg.create_task(self._flush_liveness(stop), name="liveness-flush")
                if listener is not None and sock is not None:
                    tg.create_task(listener.serve(stop, sock), name="push-listener")
                if alerts is not None:
                    tg.create_task(alerts.run(stop), name="alerts")
                await self.pipeline.run(stop)
                stop.set()
            await asyncio.to_thread(self.registry.set_liveness, self.liveness.take_dirty())

    async def _wait_for_influx(self, stop: asyncio.Event) -> bool:
        """Create the database and retention policies, waiting for InfluxDB to come up;
        False if stopped first. A refusal that retrying cannot cure is raised."""
        backoff = Backoff(max_s=10.0)
        while not stop.is_set():
            if await self._influx_schema_now(f"retrying in {backoff.delay:.1f} s"):
                return True
            await backoff.wait(stop)
        return False

    async def _influx_schema_now(self, meanwhile: str = "spooling until it answers") -> bool:
        """Create the schema if InfluxDB answers now; False (and a warning saying what happens
        `meanwhile`) if it does not. A refusal that retrying cannot cure is raised."""
        try:
            await self.influx.ensure_schema()
            return True
        except StorageError as exc:
            if not exc.retryable:
                raise
            log.warning("InfluxDB not reachable (%s); %s", exc, meanwhile)
            return False

    def _spool_full(self, full: bool) -> None:
        """Raise (or clear) the spool-full alert at every community this gateway serves."""
        alerts, spool = self.alerts, self.spool
        if alerts is None or spool is None:
            return
        detail: dict[str, object] = {
            "spool_bytes": spool.stats.bytes,
            "limit_bytes": spool.max_bytes,
        }
        now = self.alert_clock_ns()
        conditions = [
            spool_full_condition(community, full, now, detail)
            for community in self.directory.communities()
        ]
        if conditions:
            task = asyncio.get_running_loop().create_task(self._raise(alerts, conditions))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    @staticmethod
    async def _raise(alerts: AlertService, conditions: list[Condition]) -> None:
        try:
            await alerts.accept(conditions)
        except StorageError as exc:  # the alert store is down too: the log and metrics say it
            log.error("the spool-full alert could not be recorded: %s", exc)

    async def _flush_liveness(self, stop: asyncio.Event) -> None:
        """Write last-seen and online state to the registry in bulk, not per reading."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.liveness_flush_s)
            updates = self.liveness.take_dirty()
            try:
                # in short transactions: one over 12,000 devices held the database's write
                # lock ~65 ms, and a level-I alert's transaction waited behind it
                for start in range(0, len(updates), LIVENESS_CHUNK):
                    chunk = updates[start : start + LIVENESS_CHUNK]
                    await asyncio.to_thread(self.registry.set_liveness, chunk)
            except Exception as exc:  # the next flush carries newer state anyway
                log.error("registry liveness update failed: %s", exc)

    @staticmethod
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
    """A `Gateway` run until `stop` is set; returns the final counters."""
    async with Gateway(
        settings, metrics=metrics, adapters=adapters, alert_clock_ns=alert_clock_ns
    ) as gateway:
        await gateway.run(stop, ready)
    return gateway.metrics


__all__ = [
    "Gateway",
    "load_keyring",
    "pipeline_config",
    "retention_plan",
    "run_gateway",
    "subscriptions",
]
