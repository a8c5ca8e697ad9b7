"""`/metrics` in the Prometheus exposition format (prometheus_client), one registry per app.

Three sources, each read at scrape time:
* this process's gateway counters (`GatewayMetrics`: received, written, dead-lettered by
  reason, backlog, dropped fields by action, batch write latency) — per process, as
  Prometheus expects: scrape every gateway process;
* the shared alert database: alerts raised by kind and severity, notifications by channel and
  outcome, escalations — the same from whichever process answers;
* the API itself: requests and latencies by route, login failures, WebSocket clients.
Labels are codes (reasons, kinds, channels, route templates), never a value from a reading.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from gateway.alerts.delivery.outbox import alert_outbox
from gateway.alerts.store import AlertEventRow, AlertRow
from gateway.pipeline.metrics import GatewayMetrics
from gateway.registry import Registry


class GatewayCollector(Collector):
    def __init__(self, metrics: Callable[[], GatewayMetrics]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self._metrics()
        for name, value, doc in (
            ("received", m.received, "MQTT messages handed to the pipeline"),
            ("acked", m.acked, "messages acknowledged to the broker after a durable hand-off"),
            ("readings", m.readings, "canonical readings accepted"),
            ("written", m.written, "points confirmed written to InfluxDB"),
            ("dead_lettered", m.dead_lettered, "messages stored as dead letters"),
            ("batches", m.batches, "batches handled"),
            ("write_retries", m.write_retries, "InfluxDB writes retried"),
            ("liveness_changes", m.liveness_changes, "devices going online or offline"),
            ("conditions", m.conditions, "rule conditions handed to the alert engine"),
            ("rule_errors", m.rule_errors, "rule evaluations that raised"),
            ("alerts_refused", m.alerts_refused, "conditions the alert store refused"),
            ("spooled", m.spooled, "readings spooled to disk while InfluxDB was down"),
            ("replayed", m.replayed, "spooled readings written to InfluxDB since"),
        ):
            yield CounterMetricFamily(f"gridgate_{name}", doc, value=value)
        yield GaugeMetricFamily("gridgate_backlog", "received, not yet acknowledged", m.backlog)
        yield GaugeMetricFamily("gridgate_spool_bytes", "what the disk spool holds", m.spool_bytes)
        yield GaugeMetricFamily(
            "gridgate_spool_full", "1 while the spool refuses batches", m.spool_full
        )
        communities = CounterMetricFamily(
            "gridgate_community_readings", "readings accepted, by community code",
            labels=["community"],
        )  # fmt: skip
        for community, n in sorted(m.readings_by_community.items()):
            communities.add_metric([community], n)
        yield communities
        rejected = CounterMetricFamily(
            "gridgate_rejected", "messages rejected, by reason", labels=["reason"]
        )
        for reason, n in sorted(m.rejected.items()):
            rejected.add_metric([reason], n)
        yield rejected
        pushes = CounterMetricFamily(
            "gridgate_push_requests", "carrier and terminal pushes, by platform and answer",
            labels=["platform", "outcome"],
        )  # fmt: skip
        for (platform, outcome), n in sorted(m.push_requests.items()):
            pushes.add_metric([platform, outcome], n)
        yield pushes
        dropped = CounterMetricFamily(
            "gridgate_dropped_fields", "fields privacy dropped, by reason", labels=["reason"]
        )
        for reason, n in sorted(m.dropped_fields.items()):
            dropped.add_metric([reason], n)
        yield dropped
        h = m.write_seconds
        yield HistogramMetricFamily(
            "gridgate_write_seconds",
            "InfluxDB batch write latency",
            buckets=[(le, float(n)) for le, n in h.cumulative()],
            sum_value=h.total,
        )


class AlertCollector(Collector):
    """Counts from the shared alert tables (a few GROUP BYs per scrape)."""

    def __init__(self, registry: Callable[[], Registry | None]) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        registry = self._registry()
        if registry is None:
            return
        raised = CounterMetricFamily(
            "gridgate_alerts_raised", "alerts raised, by kind and severity",
            labels=["kind", "severity"],
        )  # fmt: skip
        notes = CounterMetricFamily(
            "gridgate_notifications", "notifications by channel and outcome",
            labels=["channel", "outcome"],
        )  # fmt: skip
        open_ = GaugeMetricFamily("gridgate_alerts_open", "open alerts, by severity",
                                  labels=["severity"])  # fmt: skip
        c = alert_outbox.c
        with registry.reading() as s:
            for kind, severity, n in s.execute(
                select(AlertRow.kind, AlertRow.severity, func.count()).group_by(
                    AlertRow.kind, AlertRow.severity
                )
            ):
                raised.add_metric([kind, _sev(severity)], n)
            for channel, state, n in s.execute(
                select(c.channel, c.state, func.count()).group_by(c.channel, c.state)
            ):
                notes.add_metric([channel, state], n)
            escalations = s.scalar(
                select(func.count())
                .select_from(AlertEventRow)
                .where(AlertEventRow.step == "escalated")
            )
            for severity, n in s.execute(
                select(AlertRow.severity, func.count())
                .where(AlertRow.state.in_(("raised", "notified", "acknowledged", "handling")))
                .group_by(AlertRow.severity)
            ):
                open_.add_metric([_sev(severity)], n)
        yield raised
        yield notes
        yield open_
        yield CounterMetricFamily(
            "gridgate_escalations", "alert escalations", value=escalations or 0
        )


def _sev(level: int) -> str:
    return ("I", "II", "III", "IV")[int(level) - 1]


class ApiMetrics:
    """The app's own registry: request metrics, login failures, feed clients."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "gridgate_api_requests", "API requests", ["method", "route", "status"],
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "gridgate_api_request_seconds", "API request latency", ["method", "route"],
            registry=self.registry,
        )  # fmt: skip
        self.login_failures = Counter(
            "gridgate_api_login_failures", "failed logins, by outcome", ["outcome"],
            registry=self.registry,
        )  # fmt: skip
        self.ws_clients = Gauge(
            "gridgate_api_websocket_clients", "connected live-feed clients", ["feed"],
            registry=self.registry,
        )  # fmt: skip
        self.ws_closed_slow = Counter(
            "gridgate_api_websocket_slow_closed", "feed clients closed for falling behind",
            ["feed"], registry=self.registry,
        )  # fmt: skip

    def attach(
        self, gateway: Callable[[], GatewayMetrics], registry: Callable[[], Registry | None]
    ) -> None:
        self.registry.register(GatewayCollector(gateway))
        self.registry.register(AlertCollector(registry))


__all__ = ["AlertCollector", "ApiMetrics", "GatewayCollector"]
