"""``meterd run``: compose sources, ingest, spool, writer and scheduled jobs; SIGTERM flushes and exits 0."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meterd.config import Config, ConfigError, InfluxConfig, load_config

if TYPE_CHECKING:
    from datetime import datetime

    from meterd.leaks.job import LeakJob

log = logging.getLogger("meterd.daemon")

# How long SIGTERM waits for the writer to drain the spool before leaving the rest on disk for next time.
FLUSH_TIMEOUT_S = 10.0


def build_sink(cfg: InfluxConfig) -> Any:
    if cfg.api == "v2":
        from meterd.sinks.influx.v2 import V2Sink

        return V2Sink(cfg)
    from meterd.sinks.influx.v1 import V1Sink

    return V1Sink(cfg)


async def _every(interval_s: float, stop: asyncio.Event, job: Callable[[], Awaitable[None]],
                 name: str, first_delay_s: float = 60.0) -> None:
    """Run ``job`` after ``first_delay_s`` and then every ``interval_s`` until ``stop``.

    A failing run (InfluxDB down, database not created yet) is logged in one line and retried at the
    next tick; it never stops the daemon. The first run waits so the writer can create the database.
    """
    delay = first_delay_s
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        if stop.is_set():
            return
        delay = interval_s
        try:
            await job()
        except Exception as exc:
            log.warning("%s failed, next try in %.0f s: %s", name, interval_s, exc)
            log.debug("%s failure", name, exc_info=True)


def _leak_task(cfg: Config, ingest: Any, stop: asyncio.Event) -> Awaitable[None] | None:
    from meterd.leaks.config import leaks_config

    settings = leaks_config(cfg)
    if not settings.enabled or not any(m.kind == "water" for m in cfg.meters):
        return None
    from datetime import UTC, datetime

    from meterd.leaks.job import LeakJob
    from meterd.sinks.influx.query import InfluxQL

    job = LeakJob(cfg, InfluxQL(cfg.influxdb).query, ingest.write_lines, cfg.spool.dir / "leaks")
    return _every(settings.interval_s, stop, leak_run(job, lambda: datetime.now(UTC)),
                  "leak detection")


def leak_run(job: LeakJob, clock: Callable[[], datetime]) -> Callable[[], Awaitable[None]]:
    """One scheduled leak detection: ``job.run_once(clock())`` in a worker thread, so detection
    over thousands of meters never blocks ingest on the event loop."""

    async def run() -> None:
        changed = await asyncio.to_thread(job.run_once, clock())
        log.info("leak detection ran: %d incidents opened or closed, %d open", len(changed),
                 len(job.open_incidents()))

    return run


async def run_daemon(cfg: Config, stop: asyncio.Event | None = None) -> int:
    from meterd.pipeline import Ingest
    from meterd.sinks.influx.writer import SpoolWriter
    from meterd.spool import Spool

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)

    cfg.spool.dir.mkdir(parents=True, exist_ok=True)
    spool = Spool(cfg.spool.dir, cfg.spool.max_bytes, cfg.spool.on_full)
    ic = cfg.influxdb
    writer = SpoolWriter(spool, build_sink(ic), ic.batch_size, ic.flush_interval_s, ic.max_backoff_s)
    writer.start()
    ingest = Ingest(cfg, spool)
    _start_metrics(cfg)

    mqtt = None
    if any(m.mqtt_topic for m in cfg.meters):
        from meterd.sources.mqtt.client import MqttSource

        mqtt = MqttSource(cfg, ingest.submit)
        mqtt.start()
    tasks = []
    if any(m.link for m in cfg.meters):
        from meterd.sources.modbus.poller import ModbusPoller

        tasks.append(asyncio.create_task(ModbusPoller(cfg, ingest.submit).run(stop)))
    leak = _leak_task(cfg, ingest, stop)
    if leak is not None:
        tasks.append(asyncio.ensure_future(leak))
    log.info("meterd running: %d meters, %d links, spool %s", len(cfg.meters), len(cfg.links),
             cfg.spool.dir)

    await stop.wait()
    log.info("stopping: sources first, then flushing the spool")
    await asyncio.gather(*tasks, return_exceptions=True)
    if mqtt is not None:
        await asyncio.to_thread(mqtt.stop)
    await asyncio.to_thread(writer.stop, True, FLUSH_TIMEOUT_S)
    left = spool.pending()
    spool.close()
    if left:
        log.warning("%d readings stay in the spool and are written on the next start", left)
    return 0


def _start_metrics(cfg: Config) -> None:
    if not cfg.metrics.enabled:
        return
    from prometheus_client import start_http_server

    start_http_server(cfg.metrics.port, addr=cfg.metrics.host)
    log.info("Prometheus metrics on http://%s:%d/metrics", cfg.metrics.host, cfg.metrics.port)


def load_daemon_config(path: Path) -> Config:
    """The config plus the sections owned by features (``[leaks]``), so a typo stops start-up, not a job."""
    from meterd.leaks.config import leaks_config

    cfg = load_config(path)
    leaks_config(cfg)
    return cfg


def cmd_run(args: argparse.Namespace) -> int:
    try:
        cfg = load_daemon_config(args.config)
    except ConfigError as exc:
        print(f"meterd: {exc}")
        return 2
    if args.spool_dir:
        cfg.spool.dir = args.spool_dir
    if not logging.getLogger().handlers or args.verbose == 0:
        logging.getLogger().setLevel(logging.INFO)
    return asyncio.run(run_daemon(cfg))


def register(sub: Any) -> None:
    p = sub.add_parser("run", help="run the daemon: poll meters, spool, write to InfluxDB, detect",
                       description="Run meterd in the foreground. SIGTERM (or Ctrl-C) stops the "
                                   "sources, flushes the spool to InfluxDB for up to "
                                   f"{FLUSH_TIMEOUT_S:.0f} s and exits 0; anything left stays "
                                   "durable in the spool for the next start.")
    p.add_argument("-c", "--config", required=True, type=Path, help="meterd TOML config file")
    p.add_argument("--spool-dir", type=Path, help="override [spool] dir")
    p.set_defaults(func=cmd_run)
