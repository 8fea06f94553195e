"""Checks every source applies before a reading may enter the spool."""

from __future__ import annotations

import math
import time

from meterd.fields import CUMULATIVE, FIELDS

# Meter readings before 2000 or more than a day ahead of the clock are clock faults, not data.
MIN_TS_S = 946_684_800
MAX_FUTURE_S = 86_400


class Invalid(ValueError):
    """A value that must not be stored; ``reason`` is a short stable label for counting."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def check_timestamp(ts_s: float, now_s: float | None = None) -> None:
    now = time.time() if now_s is None else now_s
    if not math.isfinite(ts_s) or ts_s < MIN_TS_S or ts_s > now + MAX_FUTURE_S:
        raise Invalid("absurd_timestamp", f"timestamp {ts_s!r} is before 2000 or more than a day ahead")


def check_field(kind: str, name: str, value: object) -> float:
    """Return ``value`` as a float if it is a finite number valid for ``name``; raise :class:`Invalid`."""
    if name not in FIELDS[kind]:
        raise Invalid("unknown_field", f"{name!r} is not a {kind} field")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Invalid("non_numeric", f"{name}={value!r} is not a number")
    v = float(value)
    if not math.isfinite(v):
        raise Invalid("non_finite", f"{name}={value!r} is not finite")
    if name in CUMULATIVE and v < 0:
        raise Invalid("negative_cumulative", f"{name}={v} is a negative cumulative register")
    return v
