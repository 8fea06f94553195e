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

from meterd.analysis.hourly import BoolArray, FloatArray, IntArray
from meterd.analysis.incidents import Alarm


def quiet_probability(
    quiet: BoolArray, observed: BoolArray, slot: IntArray, days: int, prior: float = 1.0,
) -> tuple[FloatArray, FloatArray]:
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
    p = np.full(quiet.shape, 0.5)
    n = np.zeros(quiet.shape)
    for s in np.unique(slot):
        idx = np.flatnonzero(slot == s)
        # Cumulative counts before each occurrence: position j sees occurrences < j only.
        q = np.pad(np.cumsum(quiet[:, idx] & observed[:, idx], axis=1), ((0, 0), (1, 0)))
        o = np.pad(np.cumsum(observed[:, idx], axis=1), ((0, 0), (1, 0)))
        j = np.arange(idx.size)
        lo = np.maximum(j - days, 0)
        n[:, idx] = o[:, j] - o[:, lo]
        p[:, idx] = (q[:, j] - q[:, lo] + prior) / (n[:, idx] + 2 * prior)
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
    observed = ~np.isnan(flow)
    quiet = ~(flow > threshold_m3h)
    p, n_obs = quiet_probability(quiet, observed, slot, days)
    weight = np.where(n_obs >= min_days, -np.log1p(-np.minimum(p, p_max)), 0.0) * (step_s / 3600)
    return _scan(flow, quiet | ~observed, weight, day, days, score_h, margin)


def _scan(flow: FloatArray, stop: BoolArray, weight: FloatArray, day: IntArray, days: int,
          score_h: float, margin: float) -> Alarm:
    """Run the reset-on-quiet evidence sum bin by bin, with the per-meter learnt threshold."""
    n_m, n = flow.shape
    active = np.zeros((n_m, n), dtype=bool)
    excess = np.zeros((n_m, n), dtype=np.float32)
    lag = np.zeros((n_m, n), dtype=np.int32)
    score = np.zeros(n_m)
    low = np.full(n_m, np.inf)
    run = np.zeros(n_m, dtype=np.int32)
    on = np.zeros(n_m, dtype=bool)
    ring = np.zeros((n_m, days))  # largest finished run per day, by day % days
    today = np.zeros(n_m)
    learnt = np.zeros(n_m)
    values = np.where(np.isnan(flow), np.inf, flow)
    for i in range(n):
        if i and day[i] != day[i - 1]:
            ring[:, day[i - 1] % days] = today
            ring[:, day[i] % days] = 0.0
            today = np.zeros(n_m)
            learnt = ring.max(axis=1)
        stop_i = stop[:, i]
        today = np.where(stop_i, np.maximum(today, score), today)
        score = np.where(stop_i, 0.0, score + weight[:, i])
        low = np.where(stop_i, np.inf, np.minimum(low, values[:, i]))
        run = np.where(stop_i, 0, run + 1)
        on = ~stop_i & (on | (score >= np.maximum(score_h, margin * np.maximum(learnt, today))))
        active[:, i] = on
        excess[:, i] = np.where(on, low, 0.0)
        lag[:, i] = np.maximum(run - 1, 0)
    return Alarm("continuous_flow", active, excess, lag)


__all__ = ["detect_lost_quiet_hours", "quiet_probability"]
