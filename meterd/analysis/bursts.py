"""Bursts and step changes: CUSUM (or EWMA) on residuals from each meter's hour-of-week baseline.

A canteen's lunch peak is high but normal; a burst is high *for that hour of that weekday*. So the
residual is taken against the median of the same hour in the previous weeks, scaled by a running
robust spread, and a one-sided CUSUM accumulates it. A burst bigger than ``h + k`` spreads opens
the alarm within the first bin, i.e. within the hour at 15-min or hourly resolution.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import NDArray

from meterd.analysis.hourly import BoolArray, FloatArray
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
    rel_sigma: float = 0.0,
    rel_excess: float = 0.0,
    persist_bins: int = 1,
    kind: str = "burst",
    spread_slots: int = 1,
    repair_share: float | None = 0.5,
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
    rel_sigma, rel_excess : float
        Further floors of the spread and of the residual, as fractions of the bin's baseline:
        on a flow that never stops, a step of a tenth of it is a leak whatever its size in m³/h
        (``[leaks.steps]``). 0: absolute floors only.
    persist_bins : int
        Consecutive bins the residual must have been above its floor when the statistic trips:
        a leak stays, an hour at a hydrant does not.
    kind : str
        Incident type of the alarm.
    spread_slots : int
        1: one running spread per meter. More: one per bin of the day (``spread_slots`` =
        bins per day), each updated once a day with weight ``max(scale_alpha, 1 / updates)``.
        Where the noise scales with the flow, as on a district inflow, the night is three
        times quieter than the peaks, and one spread for every hour hides a night-time step
        the size of a peak hour's noise (session 10, ``leak_eval_leakdb.py``).
    repair_share : float, optional
        Also close an alarm older than a week when, for ``close_bins`` bins, the flow has been
        below the same bin a week before, itself in the alarm, by ``repair_share`` times the
        alarm's size (its mean residual over its first day): the leak was repaired. The
        meter's baseline is then forgotten and learnt again over ``min_weeks``. Alarmed bins
        never enter the baseline, so it stands still while an alarm runs. A district
        inflow's demand that grew with the season meanwhile kept the flow above it after
        the repair, and a burst alarm stayed open for months (session 12,
        ``leak_eval_leakdb.py``). A week apart, the same hour of the same weekday differs by
        a week of the season, not by the daily swing of demand. None: off.

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
    lag = max(1, round(7 * 86400 / step_s))
    lags = [w * lag for w in range(1, weeks + 1)]
    pad = lags[-1]
    # Time-major layout: every step below reads and writes one contiguous row of n_m meters.
    flow_t = np.ascontiguousarray(flow.T, dtype=np.float64)
    clean = np.full((pad + n, n_m), np.nan, dtype=np.float32)  # row pad + t = bin t
    active = np.zeros((n, n_m), dtype=bool)
    excess = np.zeros((n, n_m), dtype=np.float32)
    start_lag = np.zeros((n, n_m), dtype=np.int32)
    stat = np.zeros(n_m)
    spread = np.full((spread_slots, n_m), np.nan)
    updates = np.zeros((spread_slots, n_m))
    since_zero = np.zeros(n_m, dtype=np.int64)
    big_run = np.zeros(n_m, dtype=np.int64)
    calm = np.zeros(n_m, dtype=np.int64)
    on = np.zeros(n_m, dtype=bool)
    repair = _Repair(n_m, lag, max(1, round(86400 / step_s)), repair_share or 0.0)
    ewma_limit = ewma_l * np.sqrt(ewma_lambda / (2 - ewma_lambda))
    # The baseline of bin t only reads cleaned bins <= t - lag, so a block of ``lag`` bins has all
    # its baselines known before the block starts: medians are computed block-wise, and only the
    # recursive CUSUM/EWMA state runs bin by bin.
    for t0 in range(0, n, lag):
        t1 = min(n, t0 + lag)
        base, enough = _block_baseline(clean, pad, t0, t1, lags, min_weeks)
        repair.blind[:] = False  # this block's baselines were read after the forgetting
        x_blk = flow_t[t0:t1]
        r_blk = x_blk - base
        r_nan = np.isnan(r_blk)
        valid_blk = enough & ~r_nan
        rz_blk = np.nan_to_num(r_blk)
        absr_blk = np.abs(rz_blk)
        if rel_excess or rel_sigma:
            level = np.nan_to_num(np.asarray(base, dtype=np.float64))
            big_blk = rz_blk > np.maximum(min_excess_m3h, rel_excess * level)
            floor_blk = np.maximum(min_sigma_m3h, rel_sigma * level)
        else:  # absolute floors only (bursts): no per-bin floor arrays on the hot path
            big_blk = rz_blk > min_excess_m3h
            floor_blk = np.full((rz_blk.shape[0], 1), min_sigma_m3h)
        x_ok_blk = ~np.isnan(x_blk)
        for j in range(t1 - t0):
            t = t0 + j
            rz = rz_blk[j]
            slot = t % spread_slots
            sigma = np.maximum(1.25 * np.nan_to_num(spread[slot], nan=min_sigma_m3h),
                               floor_blk[j])
            z = np.where(valid_blk[j], rz / sigma, 0.0)
            if method == "cusum":
                stat = np.maximum(0.0, stat + z - k)
                trip = stat > h
            else:
                stat = ewma_lambda * z + (1 - ewma_lambda) * stat
                trip = stat > ewma_limit
            since_zero = np.where(stat <= 0, 0, since_zero + 1)
            big_run = np.where(big_blk[j], big_run + 1, 0)
            trip &= big_run >= persist_bins
            calm = np.where(on & (z < k), calm + 1, 0)
            closing = on & (calm >= close_bins)
            if repair_share is not None:
                closing |= repair.step(on, ~closing, rz, flow_t, t, close_bins, clean, pad)
            stat[closing | repair.blind] = 0.0
            trip &= ~repair.blind
            on = (on & ~closing) | trip
            active[t] = on
            excess[t] = np.where(on, rz, 0.0)
            start_lag[t] = np.minimum(since_zero, t)
            normal = ~on & x_ok_blk[j]
            # Baseline learns only from normal bins; alarmed ones are replaced by the baseline.
            clean[pad + t] = np.where(normal, x_blk[j], base[j])
            upd = normal & ~r_nan[j] & ~repair.blind
            absr = absr_blk[j]
            sp = spread[slot]
            if spread_slots > 1:  # a running mean until 1 / scale_alpha days, then EWMA
                updates[slot] += upd
                alpha: float | FloatArray = np.maximum(scale_alpha,
                                                       1.0 / np.maximum(updates[slot], 1.0))
            else:
                alpha = scale_alpha
            spread[slot] = np.where(upd, np.where(np.isnan(sp), absr,
                                                  (1 - alpha) * sp + alpha * absr), sp)
    return Alarm(kind, np.ascontiguousarray(active.T), np.ascontiguousarray(excess.T),
                 np.ascontiguousarray(start_lag.T))


class _Repair:
    """``detect_bursts``' repair close: per meter, the alarm's age and size, and the run of
    bins below the week before by ``share`` of that size. Only alarmed meters are touched (a
    few of thousands)."""

    def __init__(self, n_m: int, lag: int, day_bins: int, share: float) -> None:
        self.lag, self.day_bins, self.share = lag, day_bins, share
        self.age = np.zeros(n_m)
        self.size = np.zeros(n_m)
        self.run = np.zeros(n_m, dtype=np.int64)
        self.on = np.zeros(0, dtype=np.int64)  # meters alarmed at the last bin
        self.blind = np.zeros(n_m, dtype=bool)  # baseline forgotten: judged from the next block

    def step(self, on: BoolArray, open_: BoolArray, rz: FloatArray, flow_t: FloatArray, t: int,
             close_bins: int, clean: NDArray[np.float32], pad: int) -> BoolArray:
        """Alarms (``on`` and still ``open_``) that bin ``t`` closes as repaired; their
        baseline history is forgotten."""
        idx = np.flatnonzero(on)
        off = self.on[~on[self.on]]
        self.age[off], self.size[off], self.run[off] = 0.0, 0.0, 0
        self.on = idx
        done = np.zeros_like(on)
        if not idx.size:
            return done
        age = self.age[idx] = self.age[idx] + 1.0
        first_day = np.where(age <= self.day_bins, 1.0 / age, 0.0)
        size = self.size[idx] = self.size[idx] + first_day * (rz[idx] - self.size[idx])
        if t < self.lag:
            return done
        with np.errstate(invalid="ignore"):
            below = flow_t[t, idx] < flow_t[t - self.lag, idx] - self.share * size
        run = self.run[idx] = np.where((age > self.lag) & below, self.run[idx] + 1, 0)
        closed = idx[(run >= close_bins) & open_[idx]]
        if closed.size:
            done[closed] = True
            clean[max(0, t):pad + t, closed] = np.nan  # rows of bins t - pad .. t - 1
            self.blind[closed] = True
            self.run[closed] = 0
        return done


def _block_baseline(
    clean: NDArray[np.float32], pad: int, t0: int, t1: int, lags: list[int], min_weeks: int,
) -> tuple[FloatArray | NDArray[np.float32], BoolArray]:
    """NaN-median of ``clean`` at bins ``t - L`` (L in ``lags``) for bins ``t0 <= t < t1``.

    Returns the median (NaN without data, the same value ``np.nanmedian`` gives) and
    whether at least ``min_weeks`` of the values exist.
    """
    past = np.stack([clean[pad + t0 - L : pad + t1 - L] for L in lags])  # (weeks, bins, meters)
    missing = np.isnan(past)
    count = len(lags) - missing.sum(axis=0)
    past[missing] = np.inf  # sorts after every value; only the first ``count`` are read
    if len(lags) == 4:
        past = _sorted4(past)
    else:
        past.sort(axis=0)
    lo = np.take_along_axis(past, np.maximum(count - 1, 0)[None] // 2, axis=0)[0]
    hi = np.take_along_axis(past, np.minimum(count // 2, len(lags) - 1)[None], axis=0)[0]
    if t0 < pad:
        # Bins with a week before the start of the data: the reference stacked float64 NaN
        # padding there, so its median was float64; kept so results are bit-identical.
        base: FloatArray | NDArray[np.float32] = (lo.astype(np.float64) + hi) / 2.0
    else:
        base = (lo + hi) / np.float32(2)
    base[count == 0] = np.nan
    return base, count >= min_weeks


def _sorted4(x: NDArray[np.float32]) -> NDArray[np.float32]:
    """``np.sort(x, axis=0)`` for four rows by a five-comparator sorting network: elementwise
    minima and maxima over contiguous rows instead of a strided sort (the default four weeks)."""
    lo1, hi1 = np.minimum(x[0], x[1]), np.maximum(x[0], x[1])
    lo2, hi2 = np.minimum(x[2], x[3]), np.maximum(x[2], x[3])
    mid1, mid2 = np.maximum(lo1, lo2), np.minimum(hi1, hi2)
    return np.stack([np.minimum(lo1, lo2), np.minimum(mid1, mid2), np.maximum(mid1, mid2),
                     np.maximum(hi1, hi2)])
