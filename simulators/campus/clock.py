"""Model time: the campus origin plus wall time elapsed since start, times the speed."""

from __future__ import annotations

import time


class SimClock:
    """``speed`` = model seconds per wall second; 0 freezes the model at ``origin_s``."""

    def __init__(self, origin_s: float, speed: float = 1.0) -> None:
        if speed < 0:
            raise ValueError(f"speed must be >= 0, got {speed}")
        self.origin_s = origin_s
        self.speed = speed
        self._t0 = time.monotonic()

    def elapsed(self) -> float:
        """Wall seconds since the simulator started (fault times count in these)."""
        return time.monotonic() - self._t0

    def model_at(self, elapsed_s: float) -> float:
        return self.origin_s + self.speed * elapsed_s

    def now(self) -> float:
        return self.model_at(self.elapsed())
