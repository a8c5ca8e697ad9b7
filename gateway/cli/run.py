"""`gridgate run` (and `gridgate api`): the gateway in this process until a signal."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from devices.errors import StorageError
from gateway.cli.progress import report_progress
from gateway.pipeline.metrics import GatewayMetrics
from gateway.settings import Settings

if TYPE_CHECKING:
    from gateway.runtime import Gateway

log = logging.getLogger("gridgate")


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):  # Debian only: the loop supports signals
        loop.add_signal_handler(sig, stop.set)


# -- run ----------------------------------------------------------------------------------


async def run_command(settings: Settings, progress: bool, api: bool = False) -> int:
    stop = asyncio.Event()
    _stop_on_signals(stop)
    metrics = GatewayMetrics()
    reporter = None
    if progress:
        reporter = asyncio.create_task(
            report_progress(metrics, stop, interval_s=10.0), name="progress"
        )
    status = 0
    try:
        await run_with_api(settings, stop, metrics, api=api)
    except* StorageError as group:  # refused for good (an account, a schema): the fix is named
        for exc in group.exceptions:
            log.error("gridgate run: %s", exc)
        status = 1
    stop.set()
    if reporter:
        await reporter
    log.info("stopped: %s", json.dumps(metrics.snapshot(), ensure_ascii=False))
    return status


async def run_with_api(
    settings: Settings,
    stop: asyncio.Event,
    metrics: GatewayMetrics,
    *,
    api: bool,
    ready: asyncio.Event | None = None,
    on_start: Callable[[Gateway], object] | None = None,
    announce_api: bool = True,
    environ: Mapping[str, str] | None = None,
) -> None:
    """The gateway until `stop`, and with `api` the HTTP API on the same parts; `on_start`
    gets the gateway once its parts are open (the demo reads its registry)."""
    from gateway.cli.api import serve_api
    from gateway.runtime import Gateway

    async with (
        Gateway(settings, metrics=metrics, environ=environ) as gateway,
        asyncio.TaskGroup() as tg,
    ):
        if on_start is not None:
            on_start(gateway)
        if api:
            tg.create_task(serve_api(settings, stop, gateway, announce=announce_api), name="api")
        await gateway.run(stop, ready)
        stop.set()


async def api_only_command(settings: Settings) -> int:
    """`gridgate api`: the HTTP API over the shared databases, no ingestion."""
    from gateway.cli.api import api_command

    stop = asyncio.Event()
    _stop_on_signals(stop)
    return await api_command(settings, stop)
