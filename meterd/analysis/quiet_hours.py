"""Lost quiet hours: flow through the hours in which this meter is normally still.

The vendor continuous-flow rule waits 24 hours for a quiet hour, whatever the meter. But a
household, toilet block or canteen is still at 03:00 on most nights and busy at 19:00 on most
evenings: an hour of flow at 03:00 is far stronger evidence of a leak than an hour at 19:00. This
detector weighs each hour of an uninterrupted run of flow by how rarely that meter flows at that
time of day, and learns how long this meter's own harmless runs get, so a leak that runs through
the night is reported at dawn instead of a day after it began.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from meterd.analysis.hourly import BoolArray, FloatArray, IntArray, last_true
from meterd.analysis.incidents import Alarm


def quiet_probability(
    quiet: BoolArray, observed: BoolArray, slot: IntArray, days: int, prior: float = 1.0,
) -> tuple[NDArray[np.float32], NDArray[np.int32]]:
    """Causal share of quiet bins in the same slot of the day over the previous ``days`` days.

    Parameters
    ----------
    quiet, observed : array of bool, shape (n_meters, n_bins)
        Whether each bin was quiet, and whether it had data.
    slot : array of int, shape (n_bins,)
        Slot of the local day of each bin (0 .. bins per day - 1).
    days : int
        Occurrences of the slot in the estimate (the current bin is never included).
    prior : float
        Laplace prior: ``(quiet + prior) / (observed + 2 prior)``.

    Returns
    -------
    (p, n) : arrays of float, shape (n_meters, n_bins)
        The estimate and the number of observed occurrences behind it.
    """
    p_t, n_t = _quiet_probability_t(np.ascontiguousarray(quiet.T),
                                    np.ascontiguousarray(observed.T), slot, days, prior)
    return np.ascontiguousarray(p_t.T), np.ascontiguousarray(n_t.T)


def _quiet_probability_t(quiet: BoolArray, observed: BoolArray, slot: IntArray, days: int,
                         prior: float) -> tuple[NDArray[np.float32], NDArray[np.int32]]:
    """:func:`quiet_probability` on time-major arrays (n_bins, n_meters): contiguous rows."""
    p = np.full(quiet.shape, 0.5, dtype=np.float32)
    n = np.zeros(quiet.shape, dtype=np.int32)
    for s in np.unique(slot):
        idx = np.flatnonzero(slot == s)
        # Cumulative counts before each occurrence: position j sees occurrences < j only.
        seen = observed[idx]
        q = np.zeros((idx.size + 1, quiet.shape[1]), dtype=np.int32)
        o = np.zeros_like(q)
        np.cumsum(quiet[idx] & seen, axis=0, out=q[1:])
        np.cumsum(seen, axis=0, out=o[1:])
        lo = np.maximum(np.arange(idx.size) - days, 0)
        n_s = o[:-1] - o[lo]
        n[idx] = n_s
        p[idx] = (q[:-1] - q[lo] + prior) / (n_s + 2 * prior)
    return p, n


def detect_lost_quiet_hours(
    flow: FloatArray,
    slot: IntArray,
    day: IntArray,
    step_s: int = 3600,
    threshold_m3h: float = 0.0015,
    days: int = 28,
    min_days: int = 7,
    score_h: float = 12.0,
    margin: float = 1.5,
    p_max: float = 0.97,
) -> Alarm:
    """Alarm when a run of flow is far less likely than any of this meter's recent runs.

    Parameters
    ----------
    flow : array of float, shape (n_meters, n_bins)
        Mean flow per bin, m³/h (NaN = no data; a gap ends a run, as in the vendor rule).
    slot, day : array of int, shape (n_bins,)
        Slot of the local day (``hour * 3600 // step_s``) and local date of each bin.
    step_s : int
        Bin length, s.
    threshold_m3h : float
        A bin is quiet when its flow is at most this (as ``[leaks.continuous] threshold_m3h``).
    days : int
        Days of history behind each slot's quiet probability and behind the longest harmless run.
    min_days : int
        Observed occurrences of a slot before its hours count as evidence.
    score_h : float
        Minimum evidence to open, in nats: the sum over the run of ``-log(1 - p_quiet)``.
    margin : float
        The evidence must also exceed ``margin`` times the largest evidence of any run of this
        meter in the last ``days`` days (an irrigation timer or a night-time appliance teaches
        its own size).
    p_max : float
        Cap on the quiet probability, so one hour never counts more than ``-log(1 - p_max)``.

    Returns
    -------
    Alarm
        Kind ``continuous_flow``. Active from the bin the evidence is enough until the next quiet
        bin; ``excess`` is the lowest flow of the run so far (the leak rate under the use).

    Notes
    -----
    The evidence is Page's CUSUM of the log-likelihood ratio of "flow never stops" against the
    meter's own hour-of-day Bernoulli model of stopping, reset by every quiet bin; the vendor rule
    is the special case of equal weights. Hours are not independent (a late party), which is
    why the threshold is learnt per meter from its own runs rather than set from the model.

    References
    ----------
    .. [1] Page, E. S. (1954). "Continuous inspection schemes". Biometrika 41(1/2), 100–115.
    .. [2] Kamstrup A/S, "flowIQ 2200 technical description", info code *Leak* (no quiet hour
       in 24 h), the equal-weight special case.
    """
    flow_t = np.ascontiguousarray(flow.T, dtype=np.float32)
    observed = ~np.isnan(flow_t)
    quiet = ~(flow_t > threshold_m3h)
    p, n_obs = _quiet_probability_t(quiet, observed, slot, days, 1.0)
    np.minimum(p, np.float32(p_max), out=p)
    weight = -np.log1p(-p)
    weight[n_obs < min_days] = 0.0
    weight *= np.float32(step_s / 3600)
    alarm = _scan(flow_t, quiet | ~observed, weight, np.asarray(day), days, score_h, margin)
    return Alarm("continuous_flow", np.ascontiguousarray(alarm.active.T),
                 np.ascontiguousarray(alarm.excess.T), np.ascontiguousarray(alarm.start_lag.T))


def _scan(flow: NDArray[np.float32], stop: BoolArray, weight: NDArray[np.float32], day: IntArray,
          days: int, score_h: float, margin: float) -> Alarm:
    """The reset-on-quiet evidence sum against the learnt threshold, on time-major arrays.

    Within a run the evidence is a difference of prefix sums; prefix sums over bins <= i never
    change when later data arrives, so the scan stays causal.
    """
    idx = np.arange(flow.shape[0], dtype=np.int32)[:, None]
    last_stop = last_true(stop, axis=0)
    total = np.cumsum(weight, axis=0, dtype=np.float32)
    score = total - np.where(last_stop >= 0, np.take_along_axis(
        total, np.maximum(last_stop, 0), axis=0), np.float32(0.0))
    # A finished run's evidence is known at the quiet bin that ends it.
    peak = np.zeros_like(score)
    peak[1:] = np.where(stop[1:], score[:-1], np.float32(0.0))
    need = _learnt_threshold(peak, day, days, score_h, margin)
    crossed = last_true(~stop & (score >= need), axis=0)
    active = ~stop & (crossed > last_stop)
    lag = np.maximum(idx - last_stop - 1, 0).astype(np.int32)
    return Alarm("continuous_flow", active, _run_floor(flow, active, last_stop), lag)


def _learnt_threshold(peak: NDArray[np.float32], day: IntArray, days: int, score_h: float,
                      margin: float) -> NDArray[np.float32]:
    """``max(score_h, margin * largest run evidence)`` over the previous days and today so far."""
    starts = np.flatnonzero(np.r_[True, day[1:] != day[:-1]])
    bounds = np.r_[starts, day.size]
    per_day = np.maximum.reduceat(peak, starts, axis=0)  # (n_days, n_meters)
    need = np.empty_like(peak)
    for d in range(starts.size):
        a, b = bounds[d], bounds[d + 1]
        past = per_day[max(0, d - days + 1) : d].max(axis=0, initial=0.0)
        today = np.maximum.accumulate(peak[a:b], axis=0)
        need[a:b] = np.maximum(score_h, margin * np.maximum(past, today))
    return need


def _run_floor(flow: NDArray[np.float32], active: BoolArray, last_stop: NDArray[np.int32]
               ) -> NDArray[np.float32]:
    """Lowest flow of the run so far, at alarmed bins only (the leak rate under the use)."""
    excess = np.zeros(flow.shape, dtype=np.float32)
    n = flow.shape[0]
    for m in np.flatnonzero(active.any(axis=0)):
        on = active[:, m]
        for a in np.flatnonzero(on & ~np.r_[False, on[:-1]]):
            b = a + int(np.argmin(on[a:])) if not on[a:].all() else n
            r0 = int(last_stop[a, m]) + 1
            floor = np.minimum.accumulate(np.nan_to_num(flow[r0:b, m], nan=np.inf))
            excess[a:b, m] = floor[a - r0 :]
    return excess


__all__ = ["detect_lost_quiet_hours", "quiet_probability"]
