"""Whether a meter's use normally stops: which family of leak detectors applies to it.

The continuous-flow rules (Kamstrup/Zenner "no quiet hour in 24 h", lost quiet hours) only make
sense for a meter that goes quiet every day: a household, a toilet block, a dormitory room. On a
district or building main that never stops they would alarm for ever. The night-flow rule is the
opposite: it needs a night flow with a level to learn. A campus with thousands of meters should
not have to tag each one, and a meter's behaviour is in its own data, so meterd learns it.
"""

from __future__ import annotations

import numpy as np

from meterd.analysis.continuous_flow import quiet_period_ends
from meterd.analysis.hourly import BoolArray, FloatArray, IntArray, rolling_mean, rolling_min


def quiet_day_share(
    flow: FloatArray,
    day: IntArray,
    step_s: int = 3600,
    threshold_m3h: float = 0.0015,
    quiet_h: float = 1.0,
    days: int = 28,
    min_days: int = 7,
) -> FloatArray:
    """Causal share of this meter's recent days that held a quiet period.

    Parameters
    ----------
    flow : array of float, shape (n_meters, n_bins)
        Mean flow per bin, m³/h (NaN = no data).
    day : array of int, shape (n_bins,)
        Local date of each bin (any integer per day, non-decreasing).
    step_s : int
        Bin length, s.
    threshold_m3h : float
        A bin is quiet when its flow is at most this (``[leaks.continuous] threshold_m3h``).
    quiet_h : float
        Consecutive quiet time that makes a quiet period (``[leaks.continuous] quiet_h``).
    days : int
        Previous local days in the estimate; the current day is never included.
    min_days : int
        Observed days (at least half their bins with data) before a share is given.

    Returns
    -------
    array of float, shape (n_meters, n_bins)
        For every bin, the share of the previous ``days`` observed days with a quiet period;
        NaN until ``min_days`` of them exist. Missing bins are never quiet, so a telemetry gap
        does not make a main look like a household.

    Notes
    -----
    A leak removes the quiet periods, so a leaking household's share falls by one day in
    ``days`` per day of leak: with a threshold of one half it stays "normally zero" for two weeks
    of leak, long after the continuous-flow rules have reported it.
    """
    qlen = max(1, round(quiet_h * 3600 / step_s))
    period_end = quiet_period_ends(np.nan_to_num(flow, nan=np.inf) <= threshold_m3h, qlen)
    starts = np.flatnonzero(np.r_[True, np.asarray(day)[1:] != np.asarray(day)[:-1]])
    per_day = np.add.reduceat(period_end, starts, axis=1) > 0
    bins_per_day = np.diff(np.r_[starts, day.size])
    observed = np.add.reduceat(~np.isnan(flow), starts, axis=1) * 2 >= bins_per_day
    had = np.cumsum(np.pad(per_day & observed, ((0, 0), (1, 0))), axis=1)
    seen = np.cumsum(np.pad(observed, ((0, 0), (1, 0))), axis=1)
    d = np.arange(starts.size)
    lo = np.maximum(d - days, 0)
    n_seen = seen[:, d] - seen[:, lo]
    share = np.where(n_seen >= min_days, (had[:, d] - had[:, lo]) / np.maximum(n_seen, 1), np.nan)
    return np.repeat(share, bins_per_day, axis=1)


__all__ = ["quiet_day_share"]


def steady_flow(flow: FloatArray, step_s: int = 3600, ratio: float = 0.2,
                min_m3h: float = 0.0, hours: float = 24.0) -> BoolArray:
    """Whether each bin ends a day over which the flow never fell far below its mean.

    Parameters
    ----------
    flow : array of float, shape (n_meters, n_bins)
        Mean flow per bin, m³/h (NaN = no data).
    step_s : int
        Bin length, s.
    ratio : float
        The smallest bin of the last ``hours`` must be at least this times their mean...
    min_m3h : float
        ... and at least this.
    hours : float
        Length of the trailing window.

    Returns
    -------
    array of bool, shape (n_meters, n_bins)
        True where the window is complete and steady: a district inflow or a big building,
        whose use is many users' sum. A household that trickles all day (a dripping cistern)
        never stops either, but its taps make it anything but steady, and a change of a tenth
        of its flow means nothing there.
    """
    width = max(1, round(hours * 3600 / step_s))
    mean = rolling_mean(flow, width)
    low = rolling_min(np.where(np.isnan(flow), np.inf, flow), width)
    with np.errstate(invalid="ignore"):
        return np.asarray((low >= np.maximum(ratio * mean, min_m3h)) & (mean > 0), dtype=bool)
