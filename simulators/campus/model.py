"""A deterministic campus: load shapes, meter rates and cumulative registers as pure numpy functions.

Every value is a function of the campus (seeded at build time) and the model time, so the same seed
gives the same values whichever process or step asks. Rates (kW, m³/h) are evaluated on a fixed
60 s grid aligned to the Unix epoch and interpolated linearly between grid points; cumulative
registers are the exact integral of that piecewise-linear rate (trapezoid rule), so
``energy = ∫ power`` and ``volume = ∫ flow`` hold to float rounding at every sampling step.

References
----------
Shapes are stylised from published campus load studies: canteen meal peaks, dormitory evening
peaks, daytime office/teaching plateaus, weekend and term-break reductions, e.g.
K. Gram-Hanssen (2013), "Efficient technologies or user behaviour", Energy Efficiency 6, and the
ASHRAE Guideline 14 discussion of occupancy-driven baselines.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from functools import cached_property

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]

GRID_S = 60.0
USES = ("canteen", "dormitory", "office", "teaching", "zone", "weather")
THREE_PHASE = frozenset({"eastron-sdm630", "chint-dtsu666"})
_EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday; Monday = 0


@dataclass(frozen=True)
class MeterSpec:
    """One simulated meter.

    ``peak`` is the rate at full load (kW for electricity, m³/h for water and gas).
    ``base_reading`` is the main cumulative register at the campus origin (kWh or m³).
    A meter with ``children`` measures their sum plus any leak placed on it (zone leak).
    """

    id: str
    kind: str
    building: str
    use: str
    peak: float = 0.0
    base_reading: float = 0.0
    base_export: float = 0.0
    seed: int = 0
    profile: str | None = None
    unit_id: int | None = None
    children: tuple[str, ...] = ()
    parent: str | None = None
    canteen: str | None = None

    @property
    def cumulative_field(self) -> str | None:
        return {"electricity": "energy_kwh", "water": "volume_m3", "gas": "volume_m3"}.get(self.kind)

    @property
    def rate_field(self) -> str | None:
        return {"electricity": "power_kw", "water": "flow_m3h", "gas": "flow_m3h"}.get(self.kind)


@dataclass(frozen=True)
class Leak:
    """An extra flow on ``meter`` from ``start_s`` (epoch s); on a zone parent it sits between the
    parent and its children, so only the parent sees it. With ``ramp_s`` it is incipient: it
    grows linearly from nothing to ``flow_m3h`` over that many seconds, as a widening crack
    does (LeakDB's incipient leaks), instead of appearing at full size."""

    meter: str
    flow_m3h: float
    start_s: float
    ramp_s: float = 0.0

    def rate(self, t: Array) -> Array:
        if self.ramp_s <= 0:
            return np.where(t >= self.start_s, self.flow_m3h, 0.0)
        return self.flow_m3h * np.clip((t - self.start_s) / self.ramp_s, 0.0, 1.0)


@dataclass(frozen=True)
class Saving:
    """A fractional reduction of ``meter``'s rate from ``start_s`` (a canteen intervention)."""

    meter: str
    fraction: float
    start_s: float


@dataclass(frozen=True)
class Campus:
    """The simulated campus; ``origin_s`` is when each meter's register equals its base reading."""

    name: str
    seed: int
    origin_s: float
    meters: tuple[MeterSpec, ...]
    breaks: tuple[tuple[date, date], ...] = ()
    holidays: tuple[date, ...] = ()
    utc_offset_h: float = 8.0
    timezone: str = "Asia/Shanghai"
    leaks: tuple[Leak, ...] = ()
    savings: tuple[Saving, ...] = ()
    _index: dict[str, MeterSpec] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._index.update({m.id: m for m in self.meters})

    def meter(self, meter_id: str) -> MeterSpec:
        try:
            return self._index[meter_id]
        except KeyError:
            raise KeyError(f"no simulated meter {meter_id!r}") from None

    def with_leak(self, meter_id: str, flow_m3h: float, start_s: float,
                  ramp_s: float = 0.0) -> Campus:
        """A copy of the campus with a leak added (checks the meter is water); ``ramp_s`` > 0
        makes it incipient (see :class:`Leak`)."""
        if self.meter(meter_id).kind != "water":
            raise ValueError(f"leak on {meter_id!r}: only water meters can leak")
        if not math.isfinite(flow_m3h) or flow_m3h <= 0:
            raise ValueError(f"leak on {meter_id!r}: flow must be a positive m3/h, got {flow_m3h}")
        if not math.isfinite(ramp_s) or ramp_s < 0:
            raise ValueError(f"leak on {meter_id!r}: ramp must be >= 0 s, got {ramp_s}")
        leak = Leak(meter_id, flow_m3h, start_s, ramp_s)
        return replace(self, leaks=(*self.leaks, leak), _index={})

    def with_saving(self, meter_id: str, fraction: float, start_s: float) -> Campus:
        if not 0 < fraction < 1:
            raise ValueError(f"saving on {meter_id!r}: fraction must be in (0, 1), got {fraction}")
        self.meter(meter_id)
        return replace(self, savings=(*self.savings, Saving(meter_id, fraction, start_s)),
                       _index={})

    @cached_property
    def _off_days(self) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        epoch = date(1970, 1, 1)
        brk = [d for a, b in self.breaks for d in range((a - epoch).days, (b - epoch).days + 1)]
        hol = [(d - epoch).days for d in self.holidays]
        return np.asarray(brk, dtype=np.int64), np.asarray(hol, dtype=np.int64)


# --- calendar and shapes ---------------------------------------------------------------------


def local_clock(t_s: Array, campus: Campus) -> tuple[Array, NDArray[np.int64]]:
    """Local hour of day (0-24) and local day number since 1970-01-01 for epoch seconds ``t_s``."""
    local = np.asarray(t_s, dtype=np.float64) + campus.utc_offset_h * 3600.0
    day = np.floor(local / 86400.0).astype(np.int64)
    return (local - day * 86400.0) / 3600.0, day


def _gauss(h: Array, mu: float, sd: float) -> Array:
    return np.exp(-0.5 * ((h - mu) / sd) ** 2)


def _plateau(h: Array, on: float, off: float, width: float = 0.4) -> Array:
    return 1.0 / (1.0 + np.exp(-(h - on) / width)) - 1.0 / (1.0 + np.exp(-(h - off) / width))


def occupancy_shape(use: str, hour: Array, weekend: NDArray[np.bool_], term_break: NDArray[np.bool_]
                    ) -> Array:
    """Fraction of peak load (about 0.05-1.1) for a building use at local ``hour``.

    Parameters
    ----------
    use : str
        ``canteen``, ``dormitory``, ``office`` or ``teaching``.
    hour : array of float
        Local hour of day, 0-24.
    weekend, term_break : array of bool
        Whether the day is a weekend/holiday, and whether it falls in a term break.
    """
    if use == "canteen":
        day = (0.08 + 0.15 * _gauss(hour, 10.3, 1.0) + 0.55 * _gauss(hour, 7.1, 0.7)
               + 1.0 * _gauss(hour, 11.9, 0.8) + 0.8 * _gauss(hour, 17.8, 0.8))
        return day * np.where(term_break, 0.15, np.where(weekend, 0.55, 1.0))
    if use == "dormitory":
        week = (0.18 + 0.3 * _gauss(hour, 7.4, 0.8) + 0.12 * _plateau(hour, 9, 17)
                + 0.85 * _gauss(hour, 21.6, 1.8))
        wkend = 0.2 + 0.35 * _plateau(hour, 10, 18) + 0.75 * _gauss(hour, 22.0, 2.0)
        return np.where(term_break, 0.1 + 0.1 * _plateau(hour, 9, 23), np.where(weekend, wkend, week))
    if use in ("office", "teaching"):
        day = 0.1 + 0.9 * _plateau(hour, 8.0, 18.0) - 0.12 * _gauss(hour, 12.5, 0.5)
        off = 0.7 if use == "office" else 0.2
        return np.where(weekend, 0.12, np.where(term_break, 0.1 + (day - 0.1) * off, day))
    raise ValueError(f"unknown building use {use!r}; expected one of {USES[:4]}")


def air_temperature(t_s: Array, campus: Campus) -> Array:
    """Outdoor air temperature (°C): seasonal and daily cosines plus smooth seeded noise.

    Seasonal mean 16 °C ± 11 °C peaking mid-July, daily ± 4.5 °C peaking at 14:00 local time,
    as for a humid subtropical (Köppen Cfa) campus.
    """
    t = np.asarray(t_s, dtype=np.float64)
    hour, day = local_clock(t, campus)
    season = 16.0 - 11.0 * np.cos(2 * np.pi * (day - 14) / 365.25)
    daily = 4.5 * np.cos(2 * np.pi * (hour - 14.0) / 24.0)
    return season + daily + 1.5 * _smooth_noise(t, campus.seed * 7919 + 1)


_NOISE_PERIODS_S = (613.0, 1777.0, 5003.0, 12007.0, 86400.0 * 3.7)
_NOISE_AMPS = (0.15, 0.2, 0.25, 0.2, 0.2)


def _smooth_noise(t_s: Array, seed: int) -> Array:
    """Seeded smooth noise in about [-1, 1]: a sum of sinusoids with random phases (pure in t)."""
    phases = np.random.default_rng(seed).uniform(0, 2 * np.pi, len(_NOISE_PERIODS_S))
    out = np.zeros_like(np.asarray(t_s, dtype=np.float64))
    for period, amp, phase in zip(_NOISE_PERIODS_S, _NOISE_AMPS, phases, strict=True):
        out += amp * np.sin(2 * np.pi * np.mod(t_s, period) / period + phase)
    return out


# --- rates --------------------------------------------------------------------------------------


def rate(campus: Campus, meter: MeterSpec, t_s: Array) -> Array:
    """The meter's rate at epoch seconds ``t_s``: kW for electricity, m³/h for water and gas."""
    t = np.asarray(t_s, dtype=np.float64)
    if meter.children:
        out = sum((rate(campus, campus.meter(c), t) for c in meter.children), np.zeros_like(t))
    else:
        out = _own_rate(campus, meter, t)
    for s in campus.savings:
        if s.meter == meter.id:
            out = out * np.where(t >= s.start_s, 1.0 - s.fraction, 1.0)
    for leak in campus.leaks:
        if leak.meter == meter.id:
            out = out + leak.rate(t)
    return out


def _own_rate(campus: Campus, meter: MeterSpec, t: Array) -> Array:
    hour, day = local_clock(t, campus)
    brk, hol = campus._off_days
    weekend = (np.mod(day + _EPOCH_WEEKDAY, 7) >= 5) | np.isin(day, hol)
    # Gas cooking starts half an hour ahead of the meal it serves.
    shifted = np.mod(hour + 0.5, 24.0) if meter.kind == "gas" else hour
    shape = occupancy_shape(meter.use, shifted, weekend, np.isin(day, brk))
    out = meter.peak * shape * (1.0 + 0.08 * _smooth_noise(t, meter.seed))
    if meter.kind == "electricity" and meter.use != "canteen":
        # Air conditioning: +4 % of peak per °C above 24 °C.
        cooling = np.maximum(air_temperature(t, campus) - 24.0, 0.0) * 0.04 * meter.peak
        out = out + cooling * np.clip(shape, 0.2, 1.0)
    return np.maximum(out, 0.0)


# --- integration -------------------------------------------------------------------------------


def _grid(a: float, b: float) -> Array:
    """Grid points covering [a, b]: from floor(a) to at least one step past b."""
    k0, k1 = math.floor(a / GRID_S), math.floor(b / GRID_S) + 1
    return np.arange(k0, k1 + 1, dtype=np.float64) * GRID_S


def _cumulative(tg: Array, rg: Array) -> Array:
    """Integral from tg[0] at each grid point, in rate-hours (kWh from kW, m³ from m³/h)."""
    steps = 0.5 * (rg[1:] + rg[:-1]) * GRID_S / 3600.0
    return np.concatenate(([0.0], np.cumsum(steps)))


def _interp(tg: Array, rg: Array, cg: Array, t: Array) -> tuple[Array, Array]:
    """Rate and integral at ``t`` inside the grid, exact for the piecewise-linear rate."""
    k = np.clip(np.floor((t - tg[0]) / GRID_S).astype(np.int64), 0, len(tg) - 2)
    dt = t - tg[k]
    slope = (rg[k + 1] - rg[k]) / GRID_S
    return rg[k] + slope * dt, cg[k] + (rg[k] * dt + 0.5 * slope * dt * dt) / 3600.0


def values_at(campus: Campus, meter: MeterSpec | str, t_s: Sequence[float] | Array,
              ) -> dict[str, Array]:
    """Every canonical field of ``meter`` at epoch seconds ``t_s`` (pure; any order of times).

    Cumulative registers count from ``base_reading`` at ``campus.origin_s``; times before the
    origin give readings below it. Cost grows with the span from the origin (one rate per minute).
    """
    m = campus.meter(meter) if isinstance(meter, str) else meter
    t = np.atleast_1d(np.asarray(t_s, dtype=np.float64))
    if m.kind == "weather":
        return {"air_temp_c": air_temperature(t, campus)}
    tg = _grid(min(campus.origin_s, float(t.min())), max(campus.origin_s, float(t.max())))
    rg = rate(campus, m, tg)
    cg = _cumulative(tg, rg)
    r, c = _interp(tg, rg, cg, t)
    _, c0 = _interp(tg, rg, cg, np.array([campus.origin_s]))
    return derived_fields(m, t, r, m.base_reading + c - c0[0])


def derived_fields(m: MeterSpec, t: Array, r: Array, cum: Array) -> dict[str, Array]:
    """All fields of meter ``m`` from its rate ``r`` and main cumulative register ``cum``."""
    if m.kind in ("water", "gas"):
        return {"volume_m3": cum, "flow_m3h": r}
    n_phases = 3 if m.profile in THREE_PHASE else 1
    wobble = _smooth_noise(t, m.seed + 17)
    pf = 0.84 + 0.1 * np.tanh(2.0 * r / max(m.peak, 1e-9)) + 0.02 * wobble
    out: dict[str, Array] = {"energy_kwh": cum, "energy_export_kwh": np.full_like(t, m.base_export),
                             "power_kw": r, "pf": pf, "frequency_hz": 50.0 + 0.04 * wobble}
    imbalance = (1.04, 0.97, 0.99)[:n_phases]
    for i, share in enumerate(imbalance, start=1):
        volts = 230.0 + 4.0 * _smooth_noise(t, m.seed + 100 + i)
        out[f"voltage_l{i}_v"] = volts
        out[f"current_l{i}_a"] = r * 1000.0 * share / (n_phases * volts * pf)
    return out


def series(meter: MeterSpec | str, start: float | datetime, end: float | datetime, step_s: float,
           campus: Campus) -> dict[str, Array]:
    """Sampled fields of one meter over ``[start, end)`` every ``step_s`` seconds.

    Returns a dict of equal-length arrays: ``ts`` (epoch seconds) and every canonical field of
    the meter's kind. Same campus (seed) and times give the same values, whatever ``step_s``.
    """
    a, b = _epoch(start), _epoch(end)
    if not (step_s > 0 and b > a):
        raise ValueError(f"series needs end > start and step_s > 0, got {a}..{b} step {step_s}")
    t = a + step_s * np.arange(math.ceil((b - a) / step_s), dtype=np.float64)
    return {"ts": t, **values_at(campus, meter, t)}


def _epoch(x: float | datetime) -> float:
    if isinstance(x, datetime):
        if x.tzinfo is None:
            raise ValueError(f"datetime {x} has no time zone; pass an aware datetime or epoch s")
        return x.timestamp()
    return float(x)


class LiveMeter:
    """Incremental :func:`values_at` for servers: advances its integral as model time moves on.

    Values equal :func:`values_at` to float rounding; reading at a time before the last one
    falls back to the pure function.
    """

    def __init__(self, campus: Campus, meter: MeterSpec) -> None:
        self.campus, self.meter = campus, meter
        self._g = math.floor(campus.origin_s / GRID_S) * GRID_S
        if meter.kind == "weather":  # no register to integrate
            return
        tg = np.array([self._g, self._g + GRID_S])
        self._r = rate(campus, meter, tg)
        _, c0 = _interp(tg, self._r, _cumulative(tg, self._r), np.array([campus.origin_s]))
        self._c = meter.base_reading - float(c0[0])  # register value at grid point self._g

    def values(self, t_s: float) -> dict[str, float]:
        m = self.meter
        if m.kind == "weather" or t_s < self._g:
            return {k: float(v[0]) for k, v in values_at(self.campus, m, [t_s]).items()}
        k = math.floor((t_s - self._g) / GRID_S)
        if k > 0:
            tg = self._g + GRID_S * np.arange(k + 2, dtype=np.float64)
            rg = np.concatenate((self._r, rate(self.campus, m, tg[2:])))
            self._c += float(_cumulative(tg, rg)[k])
            self._g, self._r = float(tg[k]), rg[k:k + 2]
        tg = np.array([self._g, self._g + GRID_S])
        r, c = _interp(tg, self._r, np.array([self._c, 0.0]), np.array([t_s]))
        return {f: float(v[0]) for f, v in derived_fields(m, np.array([t_s]), r, c).items()}
