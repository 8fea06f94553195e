"""Counted, rate-limited logging of rejected input: never a crash, never silent."""

from __future__ import annotations

import logging
import threading
import time

from prometheus_client import Counter

log = logging.getLogger("meterd.rejects")

REJECTED = Counter("meterd_rejected_total", "Readings or messages rejected, by source and reason",
                   ["source", "reason"])


class RejectLog:
    """Counts every rejection and logs at most one line per (source, reason) per ``interval_s``."""

    def __init__(self, interval_s: float = 60.0) -> None:
        self.interval_s = interval_s
        self.counts: dict[tuple[str, str], int] = {}
        self._last_logged: dict[tuple[str, str], float] = {}
        self._suppressed: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def reject(self, source: str, reason: str, detail: str) -> None:
        key = (source, reason)
        REJECTED.labels(source, reason).inc()
        now = time.monotonic()
        with self._lock:
            self.counts[key] = self.counts.get(key, 0) + 1
            if now - self._last_logged.get(key, -1e18) < self.interval_s:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return
            self._last_logged[key] = now
            suppressed = self._suppressed.pop(key, 0)
        more = f" (+{suppressed} similar suppressed)" if suppressed else ""
        log.warning("rejected from %s: %s: %s%s", source, reason, detail[:200], more)

    def total(self, reason: str | None = None) -> int:
        with self._lock:
            return sum(n for (_, r), n in self.counts.items() if reason is None or r == reason)


REJECTS = RejectLog()
