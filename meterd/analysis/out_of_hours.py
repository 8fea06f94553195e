"""Out-of-hours and vacation use: flow in buildings that should be empty."""

from __future__ import annotations

import numpy as np

from meterd.analysis.hourly import BoolArray, FloatArray
from meterd.analysis.incidents import Alarm


def empty_mask(local_hour: FloatArray, local_day: np.ndarray, breaks: list[tuple[int, int]],
               night: tuple[float, float] = (23.0, 6.0)) -> BoolArray:
    """Bins when a building should be empty: inside a break (inclusive ordinals) or at night."""
    lo, hi = night
    at_night = ((local_hour >= lo) | (local_hour < hi)) if lo > hi else (
        (local_hour >= lo) & (local_hour < hi))
    in_break = np.zeros(local_day.shape, dtype=bool)
    for first, last in breaks:
        in_break |= (local_day >= first) & (local_day <= last)
    return np.asarray(at_night | in_break, dtype=bool)


def detect_out_of_hours(
    flow: FloatArray,
    empty: BoolArray,
    step_s: int = 3600,
    allowance_m3h: float = 0.05,
    min_hours: float = 3.0,
) -> Alarm:
    """Alarm after ``min_hours`` of consecutive use above an allowance while a building is empty.

    Parameters
    ----------
    flow : array of float, shape (n_meters, n_bins)
        Mean flow per bin, m³/h.
    empty : array of bool, shape (n_bins,)
        Bins when the building should be empty (see :func:`empty_mask`).
    step_s : int
        Bin length, s.
    allowance_m3h : float
        Use tolerated in an empty building (cisterns refilling, cleaners), m³/h.
    min_hours : float
        Hours of unexplained use in a row before the alarm.

    Returns
    -------
    Alarm
        ``excess`` is flow above the allowance; the alarm ends with the first quiet or
        occupied bin.

    References
    ----------
    .. [1] Lambert, A., & Hirner, W. (2000). IWA Blue Pages: night-flow and unbilled
       consumption components of the water balance.
    """
    need = max(1, round(min_hours * 3600 / step_s))
    using = (flow > allowance_m3h) & empty[None, :]
    run = np.zeros(flow.shape, dtype=np.int32)
    for t in range(flow.shape[1]):
        run[:, t] = np.where(using[:, t], (run[:, t - 1] if t else 0) + 1, 0)
    active = run >= need
    excess = np.where(active, np.nan_to_num(flow) - allowance_m3h, 0.0).astype(np.float32)
    return Alarm("out_of_hours", active, excess, np.maximum(run - 1, 0))
