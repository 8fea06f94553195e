"""The truth log: one JSON object per line for every served or published value and every fault.

Events (all carry ``wall``, the Unix time of writing, and ``event``):

- ``campus``: seed, origin, speed, meters, leaks, faults (written once at start).
- ``served``: ``ts`` (model epoch s), ``meter``, ``unit``, ``function``, ``address``, ``count``,
  ``fields`` (values as a correct client decodes them; non-finite values as ``null`` and
  ``"garbage": true``), and ``fault`` when a rollover/replacement/garbage shaped them.
- ``timeout`` / ``exception``: a request the unit did not answer, or answered with ``code``.
- ``published``: ``ts``, ``meter``, ``topic``, ``payload`` (the exact JSON object sent).
- ``stopped``: the simulator shut down.
"""

from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path
from typing import IO, Any


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_clean(x) for x in v]
    return v


class TruthLog:
    """Append-only JSONL writer, safe to share between the server loop and the MQTT thread."""

    def __init__(self, path: Path | None) -> None:
        self._fh: IO[str] | None = path.open("a", buffering=1) if path else None
        self._lock = threading.Lock()

    def write(self, event: str, **data: Any) -> None:
        if self._fh is None:
            return
        line = json.dumps({"wall": round(time.time(), 6), "event": event, **_clean(data)},
                          allow_nan=False)
        with self._lock:
            self._fh.write(line + "\n")

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None


def read_truth(path: Path) -> list[dict[str, Any]]:
    """Every event of a truth log, in order."""
    with path.open() as fh:
        return [json.loads(line) for line in fh if line.strip()]
