"""The writer thread: drain the spool into a sink, oldest first, deleting only what the server took.

Transient failures (outage, 5xx, 429) back off exponentially with jitter, honouring Retry-After,
and keep every point in the spool: an outage of hours only grows the spool. A batch the server
rejects as bad (400) is bisected until the bad points are isolated; those are dropped and counted in
``meterd_rejected_total{source="influx"}`` and the good ones are written, so one bad point never
blocks the spool.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Protocol

from prometheus_client import Counter

from meterd.normalise.rejects import REJECTS
from meterd.sinks.influx import PermanentWriteError, TransientWriteError
from meterd.spool import Spool, SpoolError

log = logging.getLogger("meterd.sinks.influx.writer")

WRITTEN = Counter("meterd_influx_points_written_total", "Points acknowledged by InfluxDB")
WRITE_ERRORS = Counter("meterd_influx_write_errors_total", "Failed InfluxDB write requests", ["kind"])

MIN_BACKOFF_S = 0.5


class Sink(Protocol):
    def write(self, lines: list[str]) -> None: ...


Batch = list[tuple[int, str]]


def backoff_delay(failures: int, max_backoff_s: float, retry_after: float | None = None,
                  rng: random.Random | None = None) -> float:
    """Seconds to wait after the ``failures``-th consecutive transient failure.

    The server's Retry-After wins when given; otherwise exponential backoff from
    :data:`MIN_BACKOFF_S` with "equal jitter" (half fixed, half random) so that many daemons
    recovering from one outage do not retry in step. Never more than ``max_backoff_s``.

    References
    ----------
    M. Brooker, "Exponential Backoff And Jitter", AWS Architecture Blog, 2015.
    """
    if retry_after is not None:
        return min(retry_after, max_backoff_s)
    ceiling = min(max_backoff_s, MIN_BACKOFF_S * 2.0 ** min(failures - 1, 60))
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


class SpoolWriter:
    """Drain ``spool`` into ``sink`` on a background thread.

    Parameters
    ----------
    spool, sink
        Where points wait, and where they go (:class:`~meterd.sinks.influx.v1.V1Sink` or
        :class:`~meterd.sinks.influx.v2.V2Sink`).
    batch_size
        Points per write request.
    flush_interval_s
        After writing a partial batch, wait this long so the next request carries more points.
    max_backoff_s
        Longest wait between retries while the server is failing.
    """

    def __init__(self, spool: Spool, sink: Sink, batch_size: int = 5000,
                 flush_interval_s: float = 1.0, max_backoff_s: float = 300.0) -> None:
        self.spool = spool
        self.sink = sink
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.max_backoff_s = max_backoff_s
        self.failures = 0
        self._stopping = threading.Event()
        self._flush = True
        self._deadline = float("inf")
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("SpoolWriter already started")
        self._thread = threading.Thread(target=self._run, name="meterd-influx-writer", daemon=True)
        self._thread.start()

    def stop(self, flush: bool = True, timeout_s: float = 10.0) -> bool:
        """Stop the thread; with ``flush``, first keep writing for up to ``timeout_s``.

        Returns True when the spool was empty at the end. What is left stays durable in the spool.
        """
        self._flush = flush
        self._deadline = time.monotonic() + timeout_s
        self._stopping.set()
        if self._thread is not None:
            # A write in flight may take the sink's timeout beyond ours; don't hang on it for ever.
            self._thread.join(timeout_s + 30)
            if self._thread.is_alive():
                log.error("InfluxDB writer did not stop within %.0f s", timeout_s + 30)
                return False
        try:
            return self.spool.pending() == 0
        except SpoolError:
            return False

    def _run(self) -> None:
        while not self._should_exit():
            try:
                batch = self.spool.peek(self.batch_size)
            except SpoolError as exc:
                log.error("InfluxDB writer stops: %s", exc)
                return
            if not batch:
                if self._stopping.is_set():
                    return
                self._sleep(self.flush_interval_s)
                continue
            # A partial batch means we are caught up: wait so the next request carries more points.
            if (self._attempt(batch) and len(batch) < self.batch_size
                    and not self._stopping.is_set()):
                self._sleep(self.flush_interval_s)

    def _should_exit(self) -> bool:
        if not self._stopping.is_set():
            return False
        return not self._flush or time.monotonic() >= self._deadline

    def _attempt(self, batch: Batch) -> bool:
        """Write one batch; on failure back off and return False (the batch stays spooled)."""
        try:
            self._write(batch)
        except TransientWriteError as exc:
            self.failures += 1
            WRITE_ERRORS.labels("transient").inc()
            delay = backoff_delay(self.failures, self.max_backoff_s, exc.retry_after)
            log.warning("%s; %d points wait in the spool, retry %d in %.1f s", exc,
                        self.spool.pending(), self.failures, delay)
            self._sleep(delay)
            return False
        except Exception:
            # A bug must not kill the thread and silently stop all writes: log, back off, retry.
            self.failures += 1
            WRITE_ERRORS.labels("unexpected").inc()
            log.exception("unexpected error writing to InfluxDB; retrying")
            self._sleep(backoff_delay(self.failures, self.max_backoff_s))
            return False
        if self.failures:
            log.warning("InfluxDB writes recovered after %d failed attempts", self.failures)
            self.failures = 0
        return True

    def _write(self, batch: Batch) -> None:
        try:
            self.sink.write([line for _, line in batch])
        except PermanentWriteError as exc:
            WRITE_ERRORS.labels("permanent").inc()
            self._isolate(batch, exc)
            return
        self.spool.delete_upto(batch[-1][0])
        WRITTEN.inc(len(batch))

    def _isolate(self, batch: Batch, exc: PermanentWriteError) -> None:
        """Bisect a rejected batch: drop only the lines the server refuses on their own.

        Halves are written left first and each is deleted from the spool once done, so a transient
        error midway loses nothing and repeats only the undone part. InfluxDB 1.x keeps the good
        points of a partial write, so rewriting them is harmless (same series and time overwrite).
        """
        if len(batch) == 1:
            line_id, line = batch[0]
            REJECTS.reject("influx", "write_rejected", f"{line[:120]} -- {exc}")
            self.spool.delete_upto(line_id)
            return
        mid = len(batch) // 2
        self._write(batch[:mid])
        self._write(batch[mid:])

    def _sleep(self, delay: float) -> None:
        if self._stopping.is_set():
            # Flushing on stop: retry until the deadline, not past it.
            time.sleep(max(0.0, min(delay, self._deadline - time.monotonic())))
        else:
            self._stopping.wait(delay)
