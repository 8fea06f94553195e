"""Faults injected per Modbus unit id, and how each one changes what the meter serves.

Spec syntax (``--fault``): ``UNIT:KIND[=PARAM][:AT_S[:DURATION_S]]`` where ``AT_S`` and
``DURATION_S`` are wall-clock seconds after the simulator started (default: from the start, for
ever). Kinds:

- ``timeout``: the unit does not answer at all.
- ``exception``: the unit answers with Modbus exception ``PARAM`` (default 4, device failure).
- ``garbage``: instantaneous fields read NaN and cumulative registers a huge value (1e30).
- ``rollover``: the main cumulative register counts modulo ``PARAM`` (default 100000) and wraps
  to zero exactly at ``AT_S``; deltas stay correct for a reader that knows ``register_max``.
- ``replacement``: at ``AT_S`` the meter is swapped; cumulative registers restart at ``PARAM``
  (default 0.01) and count on from there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from meterd.fields import CUMULATIVE

KINDS = ("timeout", "exception", "garbage", "rollover", "replacement")
HUGE = 1e30
EXCEPTION_CODES = frozenset({1, 2, 3, 4, 5, 6, 7, 8, 10, 11})  # the codes Modbus defines
DEFAULTS = {"exception": 4.0, "rollover": 100_000.0, "replacement": 0.01}


class FaultSpecError(ValueError):
    """A ``--fault`` spec that cannot be parsed; the message shows the expected syntax."""


@dataclass(frozen=True)
class Fault:
    unit: int
    kind: str
    at_s: float = 0.0
    duration_s: float | None = None
    param: float | None = None

    def active(self, elapsed_s: float) -> bool:
        """Whether a timed fault (timeout, exception, garbage) applies ``elapsed_s`` after start."""
        end = math.inf if self.duration_s is None else self.at_s + self.duration_s
        return self.at_s <= elapsed_s < end

    @property
    def value(self) -> float:
        return self.param if self.param is not None else DEFAULTS.get(self.kind, math.nan)

    @property
    def register_max(self) -> float:
        return self.value if self.kind == "rollover" else math.inf

    @property
    def exception_code(self) -> int:
        return int(self.value)


def parse_fault(spec: str) -> Fault:
    """Parse ``UNIT:KIND[=PARAM][:AT_S[:DURATION_S]]``, e.g. ``3:timeout:30:60``."""
    usage = f"--fault {spec!r}: expected UNIT:KIND[=PARAM][:AT_S[:DURATION_S]] with KIND in {KINDS}"
    parts = spec.split(":")
    if not 2 <= len(parts) <= 4:
        raise FaultSpecError(usage)
    kind, _, param = parts[1].partition("=")
    try:
        unit = int(parts[0])
        value = float(param) if param else None
        at_s = float(parts[2]) if len(parts) > 2 else 0.0
        duration = float(parts[3]) if len(parts) > 3 else None
    except ValueError:
        raise FaultSpecError(usage) from None
    if kind not in KINDS:
        raise FaultSpecError(f"{usage}; got kind {kind!r}")
    if not 1 <= unit <= 247 or at_s < 0 or (duration is not None and duration <= 0):
        raise FaultSpecError(f"{usage}; unit must be 1..247, AT_S >= 0 and DURATION_S > 0")
    if value is not None and not (math.isfinite(value) and value > 0):
        raise FaultSpecError(f"{usage}; PARAM must be a positive number")
    if kind == "exception" and value is not None and value not in EXCEPTION_CODES:
        raise FaultSpecError(f"{usage}; exception code must be one of {sorted(EXCEPTION_CODES)}")
    return Fault(unit, kind, at_s, duration, value)


def adjust_cumulative(values: dict[str, float], fault: Fault, at_fault: dict[str, float],
                      main_field: str, after_fault: bool) -> dict[str, float]:
    """Apply a rollover or replacement to the cumulative registers of one reading.

    ``at_fault`` holds the true register values at the fault time and ``values`` the true
    values now; ``after_fault`` says whether now is at or after the fault time.
    """
    out = dict(values)
    if fault.kind == "rollover":
        out[main_field] = (values[main_field] - at_fault[main_field]) % fault.register_max
    elif fault.kind == "replacement" and after_fault:
        for f in CUMULATIVE & values.keys():
            out[f] = values[f] - at_fault[f] + (fault.value if f == main_field else 0.0)
    return out


def garbage(values: dict[str, float]) -> dict[str, float]:
    """What a confused meter serves: NaN rates and absurd cumulative registers."""
    return {f: HUGE if f in CUMULATIVE else math.nan for f in values}
