"""Regular time grids shared by the leak detectors: consumption points to flow, local calendar.

Every detector in :mod:`meterd.analysis` works on a 2-D array ``flow[meter, bin]`` of mean flow in
m³/h over regular bins of ``step_s`` seconds, with NaN where the meter said nothing usable. This
module builds that array from the ``consumption`` points of the InfluxDB schema and gives the
site-local hour, day and hour-of-week of each bin, so detectors never touch time zones themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar
from zoneinfo import ZoneInfo

import numpy as np
from numpy.typing import NDArray
from scipy.ndimage import minimum_filter1d

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]
_T = TypeVar("_T", np.float32, np.float64, np.uint8)


@dataclass(frozen=True, slots=True)
class Grid:
    """A regular time axis: bin ``i`` covers ``[t0_s + i*step_s, t0_s + (i+1)*step_s)``."""

    t0_s: int
    n: int
    step_s: int = 3600

    @property
    def step_h(self) -> float:
        return self.step_s / 3600.0

    def bin_end_s(self, i: int) -> int:
        """Epoch seconds at the end of bin ``i``: the earliest moment its value is known."""
        return self.t0_s + (i + 1) * self.step_s

    def index_of(self, ts_s: float) -> int:
        return int((ts_s - self.t0_s) // self.step_s)


def bin_consumption(
    grid: Grid,
    ts_end_s: FloatArray,
    volume_m3: FloatArray,
    interval_s: FloatArray,
    max_interval_s: float | None = None,
) -> FloatArray:
    """Mean flow per bin (m³/h) of one meter from its per-interval consumption points.

    Parameters
    ----------
    grid : Grid
        The target time axis.
    ts_end_s : array of float
        End of each interval, epoch seconds (the ``consumption`` point's time).
    volume_m3 : array of float
        Volume consumed during each interval, m³.
    interval_s : array of float
        Length of each interval, s.
    max_interval_s : float, optional
        Longest interval that still counts as one bin's reading (clock jitter included); default
        ``1.5 * grid.step_s``. A longer interval that reaches into more than one bin after the
        bin of its start reading spans several bins, so a missed reading does not pile two hours
        of use into one.

    Returns
    -------
    flow : array of float, shape (grid.n,)
        Volume landing in each bin divided by the bin length in hours; NaN where nothing is known.
        A short interval counts wholly in the bin holding its end, so the result keeps the
        resolution the meter reports at. A long interval with zero volume makes every bin it
        covers exactly zero (the register did not move); with any volume its bins are NaN, since
        the shape of the use inside it is unknown and an even spread would invent one.
    """
    max_iv = 1.5 * grid.step_s if max_interval_s is None else max_interval_s
    ts = np.asarray(ts_end_s, dtype=float)
    vol = np.asarray(volume_m3, dtype=float)
    iv = np.asarray(interval_s, dtype=float)
    ok = np.isfinite(ts) & np.isfinite(vol) & np.isfinite(iv) & (vol >= 0)
    idx = _end_bin(grid, ts)
    # A long interval covers the bins after the one its start reading filled, up to its own.
    first = _end_bin(grid, ts - np.nan_to_num(iv)) + 1
    long_ = ok & (iv > max_iv) & (idx > first)
    short = ok & ~long_ & (idx >= 0) & (idx < grid.n)
    seen = np.zeros(grid.n, dtype=bool)
    seen[idx[short]] = True
    total = np.bincount(idx[short], weights=vol[short], minlength=grid.n)[: grid.n]
    flow = np.full(grid.n, np.nan)
    flow[seen] = total[seen] / grid.step_h
    last = np.minimum(idx[long_], grid.n - 1)
    for a, b, v in zip(np.maximum(first[long_], 0), last, vol[long_], strict=True):
        if b >= a:
            flow[a : b + 1] = 0.0 if v == 0 else np.nan
    return flow


def _end_bin(grid: Grid, ts_s: FloatArray) -> IntArray:
    """Bin holding each instant as an interval end: a reading at 03:00:00 fills the 02:00 bin."""
    return np.floor((ts_s - 1e-6 - grid.t0_s) / grid.step_s).astype(np.int64)


@dataclass(frozen=True, slots=True)
class LocalCalendar:
    """Site-local position of every bin of a grid."""

    hour: FloatArray  # local clock hour of the bin start, 0 <= hour < 24 (fractional for 15 min)
    day: IntArray  # local date as a proleptic ordinal
    hour_of_week: IntArray  # 0 = Monday 00:00 local
    weekday: IntArray  # 0 = Monday


def local_calendar(grid: Grid, tz: str) -> LocalCalendar:
    """Local hour, date and hour-of-week of each bin start in time zone ``tz`` (IANA name)."""
    zone = ZoneInfo(tz)
    hours = np.empty(grid.n)
    days = np.empty(grid.n, dtype=np.int64)
    weekday = np.empty(grid.n, dtype=np.int64)
    for i in range(grid.n):
        t = datetime.fromtimestamp(grid.t0_s + i * grid.step_s, tz=UTC).astimezone(zone)
        hours[i] = t.hour + t.minute / 60.0
        days[i] = t.toordinal()
        weekday[i] = t.weekday()
    how = weekday * 24 + np.floor(hours).astype(np.int64)
    return LocalCalendar(hour=hours, day=days, hour_of_week=how, weekday=weekday)


def hour_bins(step_s: int) -> int:
    """How many bins make one hour (at least one)."""
    return max(1, round(3600 / step_s))


def rolling_mean(flow: FloatArray, width: int) -> FloatArray:
    """Causal rolling mean over the last ``width`` bins along the last axis (NaN if any is NaN)."""
    if width <= 1:
        return flow
    csum = np.cumsum(np.nan_to_num(flow, nan=0.0), axis=-1)
    nans = np.cumsum(np.isnan(flow), axis=-1)
    out = np.full(flow.shape, np.nan)
    out[..., width - 1 :] = csum[..., width - 1 :]
    out[..., width:] -= csum[..., :-width]
    bad = nans.copy()
    bad[..., width:] -= nans[..., :-width]
    out[..., width - 1 :] /= width
    out[bad > 0] = np.nan
    return out


def last_true(mask: BoolArray, axis: int = 1) -> NDArray[np.int32]:
    """Per bin, the index of the last True bin at or before it along ``axis`` (-1: none yet).
    Causal: a prefix maximum of the indices where ``mask`` holds."""
    shape = [1] * mask.ndim
    shape[axis] = mask.shape[axis]
    idx = np.arange(mask.shape[axis], dtype=np.int32).reshape(shape)
    out = np.where(mask, idx, np.int32(-1))
    np.maximum.accumulate(out, axis=axis, out=out)
    return out


def true_runs(mask: BoolArray) -> tuple[IntArray, IntArray, IntArray]:
    """(row, first bin, bin after the last) of every run of True along axis 1 of a 2-D mask,
    row by row and in time order within a row."""
    edges = np.diff(mask.astype(np.int8), axis=1, prepend=0, append=0)
    rows, starts = np.nonzero(edges == 1)
    # np.nonzero walks row-major, so the k-th rise and k-th fall pair up within a row.
    _, stops = np.nonzero(edges == -1)
    return rows, starts, stops


def rolling_min(x: NDArray[_T], width: int, fill: float = np.inf) -> NDArray[_T]:
    """Causal rolling minimum over the last ``width`` bins (axis 1); ``fill`` before the start.
    O(n) (van Herk / Gil-Werman in scipy), whatever the width."""
    if width <= 1:
        return x.copy()
    # The window of bin i is [i - width + 1, i]: shift scipy's centred window back.
    return np.asarray(minimum_filter1d(x, width, axis=1, mode="constant", cval=fill,
                                       origin=(width - 1) // 2))


def nanmedian_rows(x: FloatArray) -> FloatArray:
    """``np.nanmedian(x, axis=1)`` for a 2-D array, NaN for an all-NaN row and without its
    warning: a sort and two picks, several times faster on the few columns of a night window."""
    s = np.sort(x, axis=1)  # NaN sorts last
    k = np.sum(~np.isnan(x), axis=1)
    lo = np.take_along_axis(s, np.maximum(k - 1, 0)[:, None] // 2, axis=1)[:, 0]
    hi = np.take_along_axis(s, (k // 2)[:, None].clip(max=x.shape[1] - 1), axis=1)[:, 0]
    return np.where(k > 0, (lo + hi) / 2.0, np.nan)
