"""Bursts and step changes: CUSUM (or EWMA) on residuals from each meter's hour-of-week baseline.

A canteen's lunch peak is high but normal; a burst is high *for that hour of that weekday*. So the
residual is taken against the median of the same hour in the previous weeks, scaled by a running
robust spread, and a one-sided CUSUM accumulates it. A burst bigger than ``h + k`` spreads opens
the alarm within the first bin, i.e. within the hour at 15-min or hourly resolution.
"""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np

from meterd.analysis.hourly import FloatArray
from meterd.analysis.incidents import Alarm


def detect_bursts(
    flow: FloatArray,
    step_s: int = 3600,
    weeks: int = 4,
    min_weeks: int = 2,
    k: float = 1.0,
    h: float = 6.0,
    min_sigma_m3h: float = 0.05,
    min_excess_m3h: float = 0.2,
    scale_alpha: float = 0.02,
    close_bins: int = 2,
    method: Literal["cusum", "ewma"] = "cusum",
    ewma_lambda: float = 0.3,
    ewma_l: float = 3.0,
) -> Alarm:
    """Alarm on flow persistently above the meter's own hour-of-week baseline.

    Parameters
    ----------
    flow : array of float, shape (n_meters, n_bins)
        Mean flow per bin, m³/h (NaN = no data).
    step_s : int
        Bin length, s; the weekly lag is ``7 * 86400 / step_s`` bins.
    weeks : int
        Same-hour-of-week values in the baseline median.
    min_weeks : int
        Weeks of history before anything is flagged.
    k : float
        CUSUM reference value (allowed drift) in robust standard deviations.
    h : float
        CUSUM decision interval in robust standard deviations.
    min_sigma_m3h : float
        Floor of the residual spread, m³/h: keeps meters that are nearly always still from
        alarming on a single tap.
    min_excess_m3h : float
        An alarm also needs the residual itself above this (m³/h): a burst is a flow, not a z-score.
    scale_alpha : float
        Smoothing factor of the running mean absolute residual (the spread estimate).
    close_bins : int
        Consecutive bins back within ``k`` spreads that close the alarm and reset the sum.
    method : {"cusum", "ewma"}
        Page's CUSUM (default) or Roberts' EWMA chart on the standardised residual.
    ewma_lambda, ewma_l : float
        EWMA weight and control limit in asymptotic standard deviations.

    Returns
    -------
    Alarm
        ``excess`` is the residual (flow minus baseline) while active; ``start_lag`` counts bins
        since the statistic last stood at zero. Alarmed bins never enter the baseline.

    References
    ----------
    .. [1] Page, E. S. (1954). "Continuous inspection schemes". Biometrika 41(1/2), 100–115.
    .. [2] Roberts, S. W. (1959). "Control chart tests based on geometric moving averages".
       Technometrics 1(3), 239–250.
    """
    n_m, n = flow.shape
    lag = round(7 * 86400 / step_s)
    clean = np.full((n_m, n), np.nan, dtype=np.float32)
    active = np.zeros((n_m, n), dtype=bool)
    excess = np.zeros((n_m, n), dtype=np.float32)
    start_lag = np.zeros((n_m, n), dtype=np.int32)
    stat = np.zeros(n_m)
    spread = np.full(n_m, np.nan)
    since_zero = np.zeros(n_m, dtype=np.int64)
    calm = np.zeros(n_m, dtype=np.int64)
    on = np.zeros(n_m, dtype=bool)
    ewma_limit = ewma_l * np.sqrt(ewma_lambda / (2 - ewma_lambda))
    lags = [w * lag for w in range(1, weeks + 1)]
    for t in range(n):
        x = flow[:, t]
        past = np.stack([clean[:, t - L] if t >= L else np.full(n_m, np.nan) for L in lags], axis=1)
        enough = np.sum(~np.isnan(past), axis=1) >= min_weeks
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            base = np.nanmedian(past, axis=1)
        r = x - base
        sigma = np.maximum(1.25 * np.nan_to_num(spread, nan=min_sigma_m3h), min_sigma_m3h)
        z = np.where(enough & ~np.isnan(r), r / sigma, 0.0)
        if method == "cusum":
            stat = np.maximum(0.0, stat + z - k)
            trip = stat > h
        else:
            stat = ewma_lambda * z + (1 - ewma_lambda) * stat
            trip = stat > ewma_limit
        since_zero = np.where(stat <= 0, 0, since_zero + 1)
        trip &= np.nan_to_num(r) > min_excess_m3h
        calm = np.where(on & (z < k), calm + 1, 0)
        closing = on & (calm >= close_bins)
        stat[closing] = 0.0
        on = (on & ~closing) | trip
        active[:, t] = on
        excess[:, t] = np.where(on, np.nan_to_num(r), 0.0)
        start_lag[:, t] = np.minimum(since_zero, t)
        normal = ~on & ~np.isnan(x)
        # Baseline learns only from normal bins; alarmed ones are replaced by the baseline.
        clean[:, t] = np.where(normal, x, np.where(np.isnan(base), np.nan, base))
        upd = normal & ~np.isnan(r)
        absr = np.abs(np.nan_to_num(r))
        spread = np.where(upd, np.where(np.isnan(spread), absr,
                                        (1 - scale_alpha) * spread + scale_alpha * absr), spread)
    return Alarm("burst", active, excess, start_lag)
