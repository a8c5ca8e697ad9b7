"""`gridgate run --workers N`: N ingest processes on one host sharing the broker's traffic.

Each worker is a whole `gridgate run` with its own broker session (client id `<id>-w<k>`), its
own spool and its own acks, subscribed through one MQTT shared subscription
(`$share/<group>/…`): the broker hands each message to one member. What they share is the
registry's database (alerts, outbox, liveness; SQLite in WAL mode on one host, PostgreSQL
across hosts), where one open alert per place and key is a unique index, so two workers that
see the same condition raise one alert.

The supervisor ingests nothing. It passes SIGINT/SIGTERM on, and restarts a worker that died
(a signal, a crash): its persistent session kept its messages at the broker, so they arrive
when it is back. A worker that exits 1 or 2 was refused something retrying cannot cure (a key,
a setting, an InfluxDB account): every worker is stopped and the supervisor exits with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping

from gateway.pipeline.backoff import Backoff
from gateway.settings import Settings, process_environment

log = logging.getLogger("gridgate")

DEFAULT_GROUP = "gridgate"
FATAL_EXIT = (1, 2)  # a refusal (StorageError, ConfigError): the same again on every restart
STEADY_S = 60.0  # a worker that ran this long before dying restarts without waiting
STOP_WAIT_S = 60.0  # a stopping worker flushes its batches; past this it is killed


def default_workers() -> int:
    """Cores − 1, at least 1: one core is left for the broker, InfluxDB and the supervisor."""
    return max(1, (os.cpu_count() or 1) - 1)


def worker_environment(settings: Settings, index: int) -> dict[str, str]:
    """What makes worker `index` a member of the group and no one else's session or spool."""
    env = {
        "GRIDGATE_MQTT_CLIENT_ID": f"{settings.mqtt_client_id}-w{index}",
        "GRIDGATE_MQTT_SHARED_GROUP": settings.mqtt_shared_group or DEFAULT_GROUP,
    }
    if settings.spool_dir is not None:  # the default directory is per client id already
        env["GRIDGATE_SPOOL_DIR"] = str(settings.spool_dir / f"w{index}")
    return env


class _Worker:
    def __init__(self, index: int, argv: list[str], env: Mapping[str, str]) -> None:
        self.index = index
        self.argv = argv
        self.env = env
        self.proc: asyncio.subprocess.Process | None = None
        self.started = 0.0
        self.backoff = Backoff(first_s=1.0, max_s=30.0)

    async def start(self) -> None:
        env = {**process_environment(), **self.env}
        self.proc = await asyncio.create_subprocess_exec(*self.argv, env=env)
        self.started = time.monotonic()
        log.info("worker w%d started (pid %d)", self.index, self.proc.pid)

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)


async def run_workers(settings: Settings, count: int, *, progress: bool) -> int:
    """Until SIGINT/SIGTERM (or a fatal refusal): `count` workers, restarted when they die."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # Opened once here first: a bad key or policy is said once, and the shared databases'
    # tables exist before two workers race to create them.
    from gateway.runtime import Gateway

    async with Gateway(settings.model_copy(update={"spool": False})):
        pass
    group = settings.mqtt_shared_group or DEFAULT_GROUP
    log.info("%d workers sharing $share/%s/… on %s", count, group, settings.mqtt_host)
    workers = []
    for index in range(1, count + 1):
        argv = [sys.executable, "-m", "gateway.cli", "run", "--workers", "1"]
        argv += ["--worker-tag", f"w{index}"] + ([] if progress else ["--no-progress"])
        workers.append(_Worker(index, argv, worker_environment(settings, index)))
    for worker in workers:
        await worker.start()
    status = 0
    async with asyncio.TaskGroup() as tg:
        for worker in workers:
            tg.create_task(_supervise(worker, stop), name=f"worker-w{worker.index}")
        await stop.wait()
    for worker in workers:
        if worker.proc is not None and worker.proc.returncode in FATAL_EXIT:
            status = worker.proc.returncode
    log.info("all workers stopped")
    return status


async def _supervise(worker: _Worker, stop: asyncio.Event) -> None:
    """Keep one worker running until `stop`; then stop it and wait for its flush."""
    while True:
        assert worker.proc is not None
        waiting = asyncio.create_task(worker.proc.wait())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            stopping.cancel()
            worker.signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(waiting, STOP_WAIT_S)
            except TimeoutError:
                log.error("worker w%d did not stop in %.0f s; killed", worker.index, STOP_WAIT_S)
                worker.signal(signal.SIGKILL)
                await worker.proc.wait()
            return
        stopping.cancel()
        code = worker.proc.returncode
        if code in FATAL_EXIT:
            log.error("worker w%d exited %d (its lines say why); stopping all", worker.index, code)
            stop.set()
            return
        ran_s = time.monotonic() - worker.started
        if ran_s >= STEADY_S:  # not a crash loop: the next restart waits a second again
            worker.backoff = Backoff(first_s=1.0, max_s=30.0)
        how = f"signal {-code}" if code is not None and code < 0 else f"status {code}"
        log.warning(
            "worker w%d died (%s) after %.1f s; restarting in %.1f s",
            worker.index,
            how,
            ran_s,
            worker.backoff.delay,
        )
        await worker.backoff.wait(stop)
        if stop.is_set():  # stopped while waiting: nothing left to stop
            return
        await worker.start()
