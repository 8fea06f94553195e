"""The ingest stage: validated readings -> derived consumption -> one durable spool append."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from prometheus_client import Counter

from meterd.config import Config
from meterd.normalise.consumption import ConsumptionDeriver
from meterd.reading import Reading
from meterd.sinks.influx.lineprotocol import encode
from meterd.spool import Spool

RECEIVED = Counter("meterd_readings_received_total", "Readings durable in the spool", ["measurement"])


class Ingest:
    """What every source calls: :meth:`submit` returns only once the batch is durable on disk."""

    def __init__(self, cfg: Config, spool: Spool) -> None:
        self.cfg = cfg
        self.spool = spool
        self._lock = threading.Lock()
        self._deriver = ConsumptionDeriver(cfg, spool.load_state())

    def submit(self, readings: Sequence[Reading]) -> None:
        if not readings:
            return
        with self._lock:
            derived, state = self._deriver.derive(readings)
            lines = [encode(r) for r in readings]
            lines += [encode(r) for r in derived]
            try:
                self.spool.append(lines, state)
            except BaseException:
                # The deriver advanced in memory but nothing was committed: go back to the disk's state.
                self._deriver = ConsumptionDeriver(self.cfg, self.spool.load_state())
                raise
        for r in readings:
            RECEIVED.labels(r.measurement).inc()

    def write_lines(self, lines: Sequence[str]) -> None:
        """Spool pre-encoded points (e.g. incidents from a scheduled job) durably."""
        with self._lock:
            self.spool.append(list(lines))
