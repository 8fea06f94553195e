"""Minimum night flow (MNF): the leak signal hiding under the quietest hour of the night.

At night legitimate use is lowest, so a rise in the minimum night flow that persists is the
classic sign of a new leak in a district metered area. Two detectors live here: the meterd one
(robust rolling baseline, allowance for legitimate night use, persistence) and the LeakDB
reference it is measured against.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import stats

from meterd.analysis.hourly import (
    BoolArray,
    FloatArray,
    IntArray,
    hour_bins,
    nanmedian_rows,
    rolling_mean,
)
from meterd.analysis.incidents import Alarm


@dataclass(frozen=True, slots=True)
class Nights:
    """Daily MNF per meter and where each night's value becomes known."""

    mnf: FloatArray  # (n_meters, n_nights), m³/h; NaN when the night had no data
    end_bin: IntArray  # (n_nights,) last bin of each night window: MNF known at its end


def night_minimum(
    flow: FloatArray,
    local_hour: FloatArray,
    step_s: int = 3600,
    night: tuple[float, float] = (2.0, 5.0),
) -> Nights:
    """Minimum of the rolling 1-hour mean flow inside each night window.

    Parameters
    ----------
    flow : array of float, shape (n_meters, n_bins)
        Mean flow per bin, m³/h.
    local_hour : array of float, shape (n_bins,)
        Site-local clock hour of each bin start (see :func:`meterd.analysis.hourly.local_calendar`).
    step_s : int
        Bin length, s.
    night : (float, float)
        Local start and end hour of the night window (default 02:00–05:00). May wrap midnight.

    Returns
    -------
    Nights
        One MNF per meter and night; a night is any contiguous run of bins in the window.

    References
    ----------
    .. [1] Vrachimis, S. G., et al. (2018). "LeakDB: a benchmark dataset for leakage diagnosis in
       water distribution networks". WDSA/CCWI Joint Conference, Kingston, Ontario.
    """
    hourly = rolling_mean(flow, hour_bins(step_s))
    in_win = complete_night_bins(local_hour, step_s, night)
    starts = np.flatnonzero(in_win & ~np.r_[False, in_win[:-1]])
    ends = np.flatnonzero(in_win & ~np.r_[in_win[1:], False])
    if starts.size == 0:
        return Nights(np.empty((flow.shape[0], 0)), np.empty(0, dtype=np.int64))
    vals = np.where(np.isnan(hourly), np.inf, hourly)[:, in_win]
    seg_starts = np.searchsorted(np.flatnonzero(in_win), starts)
    mnf = np.minimum.reduceat(vals, seg_starts, axis=1)
    mnf[~np.isfinite(mnf)] = np.nan
    return Nights(mnf, ends.astype(np.int64))


def night_bins(local_hour: FloatArray, step_s: int, night: tuple[float, float]) -> BoolArray:
    """Bins whose trailing 1-hour mean lies inside the night window."""
    step_h = step_s / 3600.0
    first_end = night[0] + hour_bins(step_s) * step_h - step_h
    lo, hi = first_end % 24, night[1]
    if lo < hi:
        return np.asarray((local_hour >= lo) & (local_hour < hi), dtype=bool)
    return np.asarray((local_hour >= lo) | (local_hour < hi), dtype=bool)


def complete_night_bins(local_hour: FloatArray, step_s: int,
                        night: tuple[float, float]) -> BoolArray:
    """:func:`night_bins` without a night the data ends inside: its minimum is not known yet,
    and judging it early would make the result depend on where the data stops."""
    in_win = night_bins(local_hour, step_s, night)
    if in_win.size and in_win[-1]:
        after = np.array([(local_hour[-1] + step_s / 3600.0) % 24.0])
        if night_bins(after, step_s, night)[0]:
            last_start = np.flatnonzero(~in_win)
            in_win[(last_start[-1] + 1) if last_start.size else 0 :] = False
    return in_win


def night_ends(local_hour: FloatArray, step_s: int = 3600,
               night: tuple[float, float] = (2.0, 5.0)) -> BoolArray:
    """The last bin of each night window: when that night's MNF becomes known."""
    in_win = night_bins(local_hour, step_s, night)
    return np.asarray(in_win & ~np.r_[in_win[1:], False], dtype=bool)


def detect_night_flow(
    flow: FloatArray,
    local_hour: FloatArray,
    step_s: int = 3600,
    night: tuple[float, float] = (2.0, 5.0),
    window_days: int = 14,
    min_history: int = 5,
    allowance_m3h: float | FloatArray = 0.0015,
    allowance_rel: float = 0.1,
    k_mad: float = 3.0,
    persist_nights: int = 1,
    strong_factor: float | None = None,
    early: bool = False,
    day_class: IntArray | None = None,
    learn_margin: float = 1.0,
    cusum: tuple[float, float] | None = None,
    spread_days: int | None = None,
    scaling_days: int | None = None,
    weekday: IntArray | None = None,
    mad_efficiency: float | None = None,
    repair_share: float | None = 2 / 3,
) -> Alarm:
    """Alarm while the net night flow stays above a robust rolling baseline plus an allowance.

    Parameters
    ----------
    flow, local_hour, step_s, night
        As for :func:`night_minimum`.
    window_days : int
        Baseline = median MNF of the last ``window_days`` *unflagged* nights, so a leak never
        teaches the baseline that it is normal.
    min_history : int
        Nights of history needed before anything is flagged.
    allowance_m3h : float or array of float, shape (n_meters,)
        Fixed allowance for legitimate night use (and meter resolution), m³/h; per meter if an
        array.
    allowance_rel : float
        Further allowance as a fraction of the baseline (big zones have more night use).
    k_mad : float
        Further allowance of ``k_mad`` robust standard deviations (1.4826 MAD) of the calm
        nights' residuals (``spread_days``).
    persist_nights : int
        Consecutive flagged nights before the alarm opens on weak evidence.
    strong_factor : float, optional
        Strong evidence: a night whose net flow exceeds ``strong_factor`` times the allowance
        opens the alarm after that one night, whatever ``persist_nights`` says. None: off.
    early : bool
        With ``strong_factor``, also watch the running minimum inside the window: the minimum so
        far can only fall, so once even it is strong evidence the night is flagged at that bin
        instead of at the window's end. The night's full minimum still decides what follows.
    day_class : array of int, shape (n_bins,), optional
        Kind of day of each bin (0 = term weekday, 1 = weekend, 2 = break day; see
        :func:`day_classes`). Each night is then compared only with earlier nights of its own
        kind (the class of the bin that opens its window), so a building whose weekend nights
        are busier than its weekday nights is not flagged every weekend. None: one class.
    learn_margin : float
        Only nights within ``learn_margin`` times the allowance above the baseline are learnt.
        1 learns every unflagged night, as LeakDB does; then an incipient leak that grows a
        little each night drags the median up behind it and is never flagged. Below 1 a
        suspicious night is neither flagged nor learnt, so creep meets a baseline that stays
        put, at the price of a slower adaptation to a real rise in legitimate night use.
    cusum : (float, float), optional
        ``(k, h)`` in allowances: also open when the one-sided CUSUM of the nightly net flow,
        ``S = max(0, S + net/allowance - k)``, exceeds ``h``, so a leak below the allowance that
        stays for several nights is reported (one of 0.5 allowance after about 8 nights with
        (0.25, 2)). S is capped at ``h + 1`` so it falls back within days of a repair. None: off.
    spread_days : int, optional
        Nights behind the MAD term: the residuals (MNF minus the baseline of their day) of the
        last ``spread_days`` calm nights of the kind (neither flagged nor in an alarm).
        None: ``window_days``.
    scaling_days : int, optional
        Scale each night's baseline with the week's use: each learnt night's MNF times
        ``(D / D_j) ** beta``, their median kept within [1, 2] times the plain baseline, where
        D is the mean over the last 7 nights, without their largest and smallest, of the flow
        over the 24 h to each night's end minus that night's minimum, ``D_j`` the same on
        learnt night j, and ``beta`` the elasticity of MNF on D over the last ``scaling_days``
        calm or alarmed nights (:class:`_Elasticity`), used only from 14 such nights and when
        its least-squares slope is at least 0.3, and once a full calm window has shown that,
        the largest such slope, never lowered (:meth:`_Elasticity.beta`). None: off. See Notes.
    weekday : array of int, shape (n_bins,), optional
        Local weekday of each bin (0 = Monday). The baseline of a night is then lifted by how
        much higher nights of its weekday have run than the other nights of their kind in the
        same weeks (:func:`weekly_lift`). None: off.
    mad_efficiency : float, optional
        Widen ``k_mad`` for the error of the MAD itself, counting its n residuals as
        ``mad_efficiency * (n - 1)`` degrees of freedom (:func:`mad_multiplier`; 0.37, the MAD's
        efficiency on normal data, turns 3 into 3.4 over 56 nights and 5.7 over 14). None: off.
    repair_share : float, optional
        With ``cusum``: an alarm whose nights of this kind ran at least twice ``strong_factor``
        allowances above the baseline on average is repaired on a night back within the
        allowance whose minimum fell below the last night of its kind by ``repair_share`` of
        that net flow; the CUSUM then restarts. Its evidence was that leak's, and demand that
        drifted up during the alarm (no night is learnt while it runs) otherwise kept the
        nights after the repair above ``k``, the CUSUM at its cap, and the alarm open for
        days (session 12, ``leak_eval_leakdb.py``). The fall of the minimum itself is what
        counts: a baseline catching up with a leak is not a repair. None: off.

    Returns
    -------
    Alarm
        Active from the bin that confirms a leak (end of the confirming night, or earlier with
        ``early``) until the end of the first night back within the allowance. ``excess`` is
        the net night flow (MNF minus baseline).

    Notes
    -----
    Day scaling: seasons and days of the week scale a network's whole demand, night and day
    together, so the night minimum follows the day's use; a leak adds the same flow to every
    hour and leaves D, the use above the night floor, unchanged. Where this meter's own calm
    nights show that co-movement (``beta`` near 1: a district inflow) the baseline follows the
    season instead of freezing below it and calling the rise a leak; where day use varies on
    its own (``beta`` near 0: a building) nothing changes. The factor never lowers the
    baseline, so it can hide a leak on a busy week but never raise an alarm. A single day's
    use is not enough: where a weekday's demand multiplier starts at midnight, the 24 h before
    its night are the day before, so busy days were scaling the wrong nights. The weekday
    profile covers that case from the nights themselves.

    A long alarm leaves a stale baseline: no night is learnt while it runs, so once it ends the
    baseline is the nights before it, perhaps a season behind, and the nights after a repair
    that sit above it by more than ``learn_margin`` are never learnt either. When an alarm that
    ran for ``window_days`` nights or more ends, the learnt nights (and the CUSUM) are dropped,
    and the baseline is learnt again from the nights after it, with ``min_history`` as for a
    new meter.

    Sequential hypothesis testing in its simplest form: a large excess is decided on one
    observation, a small one needs repeated observations (Wald 1945), and one below the
    allowance needs a CUSUM of many (Page 1954). The allowance is the
    night-flow analysis of Lambert & Hirner (2000); the baseline excludes flagged nights as in
    LeakDB's MNF algorithm.

    References
    ----------
    .. [1] Vrachimis, S. G., et al. (2018). "LeakDB: a benchmark dataset for leakage diagnosis in
       water distribution networks". WDSA/CCWI Joint Conference.
    .. [2] Lambert, A., & Hirner, W. (2000). "Losses from water supply systems: standard
       terminology and recommended performance measures". IWA Blue Pages (night flow analysis).
    .. [3] Wald, A. (1945). "Sequential tests of statistical hypotheses". Ann. Math. Statist.
       16(2), 117–186.
    .. [4] Page, E. S. (1954). "Continuous inspection schemes". Biometrika 41(1/2), 100–115.
    """
    nights = night_minimum(flow, local_hour, step_s, night)
    run_min, starts = _running_minimum(flow, local_hour, step_s, night) if early else (None, None)
    n_m, n_n = nights.mnf.shape
    n_all = n_n if starts is None else starts.size  # + the night the data ends inside, if any
    kind = _night_kinds(day_class, local_hour, step_s, night, n_all)
    hist = np.full((int(kind.max(initial=0)) + 1, n_m, window_days), np.nan)
    pos = np.zeros((hist.shape[0], n_m), dtype=np.int64)
    # The spread comes from every calm night, not only the learnt ones: a spread of learnt
    # nights alone shrinks the allowance, which learns fewer nights, and so on. It is the
    # spread of the residuals (night minus that day's baseline), the very quantity the
    # allowance bounds, so it also covers the baseline's own sampling noise and ignores drift.
    # Flagged nights stay out even before they open an alarm: a leak between one and
    # ``strong_factor`` allowances flags most nights, and counting them widens the allowance
    # until it hides that leak (session 7; test_default_rule_opens_on_one_night_...).
    spread = np.full((hist.shape[0], n_m, spread_days or window_days), np.nan)
    spos = np.zeros_like(pos)
    run = np.zeros(n_m, dtype=np.int64)
    alarm_nights = np.zeros(n_m, dtype=np.int64)
    cum = np.zeros(n_m)  # CUSUM of the nightly net flow, in allowances
    watch = None if repair_share is None else _RepairWatch(hist.shape[0], n_m, repair_share)
    night_active = np.zeros((n_m, n_n), dtype=bool)
    net = np.zeros((n_m, n_n))
    thresh = np.full((n_m, n_all), np.inf)
    first = np.full((n_m, n_all), -1, dtype=np.int64)  # bin where a night became strong evidence
    base_n = np.zeros((n_m, n_all))
    rows = np.arange(n_m)
    strong = np.inf if strong_factor is None else strong_factor
    stop = np.r_[nights.end_bin, flow.shape[1]]  # early alarms run until the night is decided
    scale = (None if scaling_days is None else
             _DayScale(flow, step_s, nights, hist.shape[0], window_days, scaling_days))
    lift = (None if weekday is None else
            weekly_lift(nights.mnf, _night_kinds(weekday, local_hour, step_s, night, n_n),
                        kind[:n_n]))
    # Per number of residuals; spos counts those written, never NaN (calm nights only).
    k = mad_multiplier(k_mad, spread.shape[2], mad_efficiency)
    for d in range(n_all):
        c = int(kind[d])
        enough, base, allow = _baseline(hist[c], spread[c], min_history, allowance_m3h,
                                        allowance_rel, k[np.minimum(spos[c], spread.shape[2])])
        if d < n_n:
            if scale is not None:
                base = scale.scaled(d, c, hist[c], base)
            if lift is not None:
                base = base * lift[:, d]
            # Legitimate night use grows with the network's demand, so its relative part does.
            allow = np.maximum(allow, allowance_rel * np.nan_to_num(base))
        thresh[:, d] = np.where(enough, base + allow, np.inf)
        base_n[:, d] = base
        if run_min is not None and starts is not None:
            first[:, d] = _first_strong(run_min, int(starts[d]), int(stop[d]), enough,
                                        base + strong * allow)
        if d == n_n:
            break  # unfinished night: only its running minimum is known
        x = nights.mnf[:, d]
        r = x - base  # the residual the allowance bounds (NaN: no night or no baseline yet)
        flagged = enough & (r > allow)  # NaN night: not flagged, history untouched
        run = np.where(flagged, run + 1, 0)
        on = (run >= persist_nights) | (flagged & (r > strong * allow))
        if cusum is not None:
            u = np.where(enough, r / np.maximum(allow, 1e-9), np.nan)
            if watch is not None:
                cum[watch.repaired(c, x, enough & ~flagged, allow, alarm_nights > 0,
                                   2 * strong)] = 0.0
            cum = _cusum_step(cum, u, *cusum)
            on |= cum > cusum[1]
            if watch is not None:
                watch.record(c, x, r, on)
        night_active[:, d] = on
        stale = ~on & (alarm_nights >= window_days)  # a long alarm just ended: see Notes
        if stale.any():
            hist[:, stale] = np.nan
            cum[stale] = 0.0  # its evidence was against the baseline just forgotten
            if scale is not None:
                scale.forget(stale)
        alarm_nights = np.where(on, alarm_nights + 1, 0)
        # A night without data keeps an open alarm on (nothing says the leak stopped) and its
        # last measured excess, never an unknown one.
        net[:, d] = np.where(np.isnan(x) & on, net[:, d - 1] if d else 0.0,
                             np.where(flagged | on, r, 0.0))
        learn = ~np.isnan(x) & ~(enough & (r > learn_margin * allow)) & ~on
        hist[c, rows[learn], pos[c, learn] % window_days] = x[learn]
        calm = ~np.isnan(r) & ~on & ~flagged
        if scale is not None:
            scale.learn(d, c, rows[learn], pos[c, learn] % window_days, calm, on)
        pos[c] += learn
        spread[c, rows[calm], spos[c, calm] % spread.shape[2]] = r[calm]
        spos[c] += calm
    alarm = _to_bins("night_flow", flow, nights.end_bin, night_active, net, thresh[:, :n_n])
    if run_min is not None:
        _open_early(alarm, flow, run_min, first, stop, base_n, thresh)
    return alarm


def weekly_lift(mnf: FloatArray, weekday: IntArray, kind: IntArray, weeks: int = 6,
                z: float = 1.0, min_lift: float = 0.01) -> FloatArray:
    """How much higher each weekday's nights run than the other nights of their kind.

    Parameters
    ----------
    mnf : array of float, shape (n_meters, n_nights)
        Minimum night flow (:func:`night_minimum`).
    weekday, kind : array of int, shape (n_nights,)
        Weekday (0 = Monday) and kind (:func:`day_classes`) of each night.
    weeks : int
        Same-weekday nights behind each estimate (from one).
    z : float
        Standard errors taken off each estimate, so noise alone lifts (nearly) nothing.
    min_lift : float
        Smaller lifts (in log, about a fraction) are left out: on a leak that only just clears
        the allowance a lift of a few tenths of a percent decides whether it is seen.

    Returns
    -------
    array of float, shape (n_meters, n_nights)
        Factor >= 1 for each night's baseline, from earlier nights only.

    Notes
    -----
    A seasonal index by the ratio-to-moving-median method (as in Census X-11, Shiskin et al.
    1967): each night's log MNF minus the median of the nights of its kind in the 7 nights to
    it, then the median of that over the last ``weeks`` nights of the weekday. A leak raises
    every night alike and cancels out, except for a week after its start, which the median
    over weeks outvotes. It covers a weekly demand pattern that reaches the night hours (a
    Monday starting early), which a baseline of all weekday nights would call a leak every
    week. The standard error is 1.25 × 1.4826 × MAD / sqrt(n) of the deviations of the last
    ``weeks`` weeks, refreshed every Monday.

    References
    ----------
    .. [1] Shiskin, J., Young, A. H., & Musgrave, J. C. (1967). "The X-11 variant of the Census
       Method II seasonal adjustment program". Technical Paper 15, US Bureau of the Census.
    """
    n_m, n_n = mnf.shape
    with np.errstate(divide="ignore", invalid="ignore"):
        logx = np.where(mnf > 0, np.log(mnf), np.nan)
    # Everything below counts known nights only, so nights without data before the first
    # reading (``meterd leaks`` reads ``history_days`` before --start) change nothing.
    dev = np.full((n_m, n_n), np.nan)
    out = np.ones((n_m, n_n))
    sigma = np.full(n_m, np.nan)
    for d in range(n_n):
        same = np.flatnonzero(kind[max(0, d - 6) : d + 1] == kind[d]) + max(0, d - 6)
        known = np.sum(~np.isnan(logx[:, same]), axis=1)
        dev[:, d] = np.where(known >= 2, logx[:, d] - nanmedian_rows(logx[:, same]), np.nan)
    for d in range(n_n):
        if weekday[d] == 0 and d:  # refreshed on Mondays: the same nights in any window
            recent = dev[:, max(0, d - 7 * weeks) : d]
            mid = nanmedian_rows(recent)
            sigma = 1.4826 * nanmedian_rows(np.abs(recent - mid[:, None]))
        prev = np.flatnonzero(weekday[:d] == weekday[d])[-weeks:]
        if prev.size:
            k = np.sum(~np.isnan(dev[:, prev]), axis=1)
            p = nanmedian_rows(dev[:, prev]) - z * 1.25 * sigma / np.sqrt(np.maximum(k, 1))
            p = np.nan_to_num(p)  # no known night of the weekday, or no spread yet: no lift
            out[:, d] = np.exp(np.where(p >= min_lift, p, 0.0))
    return out


def _trailing_means(flow: FloatArray, end_bin: IntArray, width: int) -> FloatArray:
    """Mean of the ``width`` bins up to each ``end_bin`` (NaN if any is missing or before the
    start): only the few columns needed, not a rolling mean over every bin."""
    out = np.full((flow.shape[0], end_bin.size), np.nan)
    for j, e in enumerate(end_bin.tolist()):
        if e + 1 >= width:
            out[:, j] = flow[:, e + 1 - width : e + 1].mean(axis=1)
    return out


def _trailing_trimmed_mean(x: FloatArray, width: int) -> FloatArray:
    """Mean of the known values among the last ``width`` nights (axis 1) without their
    largest and smallest (from three known values), NaN if none."""
    padded = np.pad(x, ((0, 0), (width - 1, 0)), constant_values=np.nan)
    w = np.sort(np.lib.stride_tricks.sliding_window_view(padded, width, axis=1), axis=2)
    k = np.sum(~np.isnan(w), axis=2)
    z = np.nan_to_num(w)
    hi = np.take_along_axis(z, np.maximum(k - 1, 0)[..., None], axis=2)[..., 0]
    trim = k >= 3
    num = z.sum(axis=2) - np.where(trim, z[..., 0] + hi, 0.0)
    den = np.where(trim, k - 2, k)
    return np.where(k > 0, num / np.maximum(den, 1), np.nan)


def _trailing_nanmean(x: FloatArray, width: int) -> FloatArray:
    """Mean of the known values among the last ``width`` nights (axis 1), NaN if none."""
    csum = np.cumsum(np.pad(np.nan_to_num(x), ((0, 0), (1, 0))), axis=1)
    cnt = np.cumsum(np.pad(~np.isnan(x), ((0, 0), (1, 0))), axis=1)
    hi = np.arange(1, x.shape[1] + 1)
    lo = np.maximum(hi - width, 0)
    n = cnt[:, hi] - cnt[:, lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (csum[:, hi] - csum[:, lo]) / n, np.nan)


class _Elasticity:
    """Sliding slope of log MNF on log D per meter, over the last ``size`` nights of each kind
    that were calm or in an alarm, each kind centred on its own means (weekend days busier than
    weekdays at the same night flow say nothing about co-movement). O(meters) per night.

    The alarm share ``s`` of each night is a second regressor: a leak is a step in MNF that D
    does not share, so the step goes to ``s`` and the slope comes from how MNF follows D on
    either side of it. Left out, alarmed nights froze the slope: a season that rose before it
    was learnt opened an alarm that no calm night ever came to release.

    The least-squares slope decides whether MNF follows D at all (``MIN_SLOPE``); its size is
    the reduced major axis slope, sd(log MNF) / sd(log D) (Ricker 1973), because the noise in
    D biases the least-squares slope towards 0 and the baseline then lags the season.

    References
    ----------
    .. [1] Ricker, W. E. (1973). "Linear regressions in fishery research". Journal of the
       Fisheries Research Board of Canada 30(3), 409–434.
    """

    MIN_FIT = 14  # nights before the slope is trusted
    MIN_SLOPE = 0.3  # least-squares slope below this: day use varies on its own (a building)
    MAX_ALARMED = 0.25  # alarmed share of the recent nights above which the slope is not trusted

    def __init__(self, n_kinds: int, n_m: int, size: int) -> None:
        self.vals = np.zeros((3, n_kinds, n_m, size))  # u, x, s
        self.pos = np.zeros((n_kinds, n_m), dtype=np.int64)
        self.sums = np.zeros((n_kinds, 10, n_m))  # n, Σu, Σx, Σs, Σuu, Σux, Σus, Σxs, Σss, Σxx
        self.held = np.full(n_m, np.nan)  # the largest trusted slope of a full window

    @property
    def size(self) -> int:
        """Nights of each kind behind the fit."""
        return int(self.vals.shape[3])

    @staticmethod
    def _terms(u: FloatArray, x: FloatArray, s: FloatArray) -> FloatArray:
        return np.stack([u, x, s, u * u, u * x, u * s, x * s, s * s, x * x])

    def add(self, c: int, rows: IntArray, u: FloatArray, x: FloatArray, s: FloatArray) -> None:
        size = self.size
        at = self.pos[c, rows] % size
        full = self.pos[c, rows] >= size
        old = self.vals[:, c, rows, at]
        self.sums[c, 0, rows] += 1.0 - full
        self.sums[c, 1:][:, rows] += self._terms(u, x, s) - self._terms(*old)
        self.vals[:, c, rows, at] = u, x, s
        self.pos[c, rows] += 1

    def slope(self) -> FloatArray:
        """The slope within [0, 1]; 0 before ``MIN_FIT`` nights or below ``MIN_SLOPE``."""
        n, su, sx, ss, suu, sux, sus, sxs, sss, sxx = np.moveaxis(self.sums, 1, 0)
        m = np.maximum(n, 1.0)
        cuu, cux, cus, cxs, css, cxx = (np.sum(a - b * c / m, axis=0) for a, b, c in (
            (suu, su, su), (sux, su, sx), (sus, su, ss), (sxs, sx, ss), (sss, ss, ss),
            (sxx, sx, sx)))
        total = n.sum(axis=0)
        step = css > 1e-9 * np.maximum(total, 1.0)  # the alarm share varies: partial it out
        var_u = cuu - np.where(step, cus * cus / np.where(step, css, 1.0), 0.0)
        cov = cux - np.where(step, cus * cxs / np.where(step, css, 1.0), 0.0)
        var_x = cxx - np.where(step, cxs * cxs / np.where(step, css, 1.0), 0.0)
        var_u = np.where(var_u > 1e-12 * total, var_u, np.inf)
        follows = (total >= self.MIN_FIT) & (cov / var_u >= self.MIN_SLOPE)
        return np.where(follows, np.clip(np.sqrt(np.maximum(var_x, 0.0) / var_u), 0.0, 1.0), 0.0)

    def beta(self, calm: BoolArray) -> FloatArray:
        """:meth:`slope` until a full window has shown that MNF follows D while the meter was
        ``calm`` (at most ``MAX_ALARMED`` of its last nights in an alarm); from then on the
        largest such slope. The meter is then one whose night follows its day (a district
        inflow), and that is a property of its customers, which a leak does not change. What
        lowers the slope is leak water that D does not carry: the alarm share models a leak as
        a step, but an incipient leak is a ramp, and a leak the baseline has learnt is repaired
        as an unflagged fall, which the fit reads as a night leaving the day.
        - Session 10: a ramp against the season pushed the slope below ``MIN_SLOPE`` and
          turned the scaling off, and the season's rise after the repair opened false
          incidents; the last trusted slope was then kept.
        - Session 13: a smaller ramp, or a learnt leak and its repair, lowered the trusted
          slope itself, from about 1 to 0.5-0.6, and the baseline rose half as fast as the
          night in the next rise (both false incidents of ``leak_eval_leakdb.py --hourly
          --seed 21``). The slope is now never lowered."""
        now = self.slope()
        trusted = calm & (now > 0)
        full = self.sums[:, 0].sum(axis=0) >= self.size
        self.held = np.where(trusted & full, np.fmax(now, self.held), self.held)
        return np.where(np.isnan(self.held), now, self.held)


class _DayScale:
    """Per night, the day-use scaling of ``detect_night_flow``'s ``scaling_days`` (its Notes),
    on trimmed means of the last ``WEEK`` nights: seasons scale a whole week's use, while a
    single day's use above the floor says little about that night (a busy day may not follow
    it)."""

    WEEK = 7

    def __init__(self, flow: FloatArray, step_s: int, nights: Nights, n_kinds: int,
                 window_days: int, fit_days: int) -> None:
        day_mean = _trailing_means(flow, nights.end_bin, 24 * hour_bins(step_s))
        use = day_mean - nights.mnf  # use above the night floor: a leak leaves it unchanged
        before = np.full(nights.mnf.shape, np.nan)
        before[:, 1:] = nights.mnf[:, :-1]
        # The fit measures D against the night before: against the same night, that night's
        # noise would enter both sides with opposite signs and pull the slope down. (In the
        # 7-night means six nights still meet on both sides. Day use outside the night windows
        # would avoid that, but it rises with a leak, and before the leak is flagged the fit
        # reads that as co-movement: session 9.)
        fit_use = day_mean - before
        with np.errstate(divide="ignore", invalid="ignore"):
            ok = (fit_use > 0) & (nights.mnf > 0)
            log_u = np.where(ok, np.log(fit_use), np.nan)
            log_x = np.where(ok, np.log(nights.mnf), np.nan)
        n_m = flow.shape[0]
        # The week's D without its largest and smallest night: on the night of a leak's start
        # or repair only part of the day carried the leak, so its D is off by up to the leak's
        # size. Averaged in, a repair raised D for a week, the nights learnt then scaled the
        # baseline down, and it lagged the season after the repair (session 15,
        # leak_eval_leakdb.py). A median dropped that night too, but it is one order statistic
        # of a week with busier days in it, and its noise opened false incidents on districts.
        self.use = _trailing_trimmed_mean(use, self.WEEK)  # (n_meters, n_nights)
        self.log_u = _trailing_trimmed_mean(log_u, self.WEEK)
        self.log_x = _trailing_nanmean(log_x, self.WEEK)
        self.hist = np.full((n_kinds, n_m, window_days), np.nan)  # D of the learnt nights
        self.fit = _Elasticity(n_kinds, n_m, fit_days)
        self.known = ~np.isnan(nights.mnf)
        # Running counts of alarmed and of known nights (column d: nights before d).
        self.counts = np.zeros((2, n_m, nights.mnf.shape[1] + 1))
        self.beta = np.zeros(n_m)  # the fit's elasticity after the last learnt night

    def scaled(self, d: int, c: int, hist: FloatArray, base: FloatArray) -> FloatArray:
        """Night ``d``'s baseline: the median of the learnt nights ``hist`` (kind ``c``), each
        scaled by (D tonight / its own D) ** beta, kept within [1, 2] times the plain ``base``.
        Scaling each night by its own D, not the median MNF by the median D, keeps the two in
        step while the window refills after an alarm."""
        out = base.copy()
        beta = self.beta
        on = np.flatnonzero(beta > 0)  # most meters are buildings: skip their medians
        if on.size:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                ratio = self.use[on, d, None] / self.hist[c, on]
                b = nanmedian_rows(hist[on] * np.power(ratio, beta[on, None]))
            on, b = on[np.isfinite(b)], b[np.isfinite(b)]  # no use above the floor: unscaled
            out[on] = np.maximum(out[on], np.minimum(b, 2.0 * base[on]))
        return out

    def learn(self, d: int, c: int, rows: IntArray, slots: IntArray, calm: BoolArray,
              alarmed: BoolArray) -> None:
        """Record night ``d``: its D for the learnt ``rows`` (at ``slots`` of kind ``c``), and
        its (log D, log MNF, alarm share) for the fit where it was calm or in an alarm."""
        known = self.known[:, d]
        self.counts[:, :, d + 1] = self.counts[:, :, d] + np.stack([known & alarmed, known])
        share = self._alarm_share(d, self.WEEK)
        self.hist[c, rows, slots] = self.use[rows, d]
        on = np.flatnonzero((calm | alarmed) & ~np.isnan(self.log_u[:, d])
                            & ~np.isnan(self.log_x[:, d]))
        self.fit.add(c, on, self.log_u[on, d], self.log_x[on, d], share[on])
        # Calm: the last fit.size nights, of every kind, at most MAX_ALARMED in an alarm (the
        # fit's own windows are per kind, and weekend nights fill theirs over half a year).
        self.beta = self.fit.beta(self._alarm_share(d, self.fit.size) <= _Elasticity.MAX_ALARMED)

    def _alarm_share(self, d: int, width: int) -> FloatArray:
        """Share of the known nights among the ``width`` up to ``d`` that were in an alarm."""
        alarmed, known = self.counts[:, :, d + 1] - self.counts[:, :, max(0, d + 1 - width)]
        return alarmed / np.maximum(known, 1.0)

    def forget(self, rows: BoolArray) -> None:
        """Drop the learnt nights' D of ``rows``, as their learnt nights are dropped."""
        self.hist[:, rows] = np.nan


class _RepairWatch:
    """``detect_night_flow``'s ``repair_share``: per kind of night and meter, the mean net
    flow of the running alarm's nights and the minimum of the last known night."""

    def __init__(self, n_kinds: int, n_m: int, share: float) -> None:
        self.share = share
        self.net = np.zeros((2, n_kinds, n_m))  # sum and count over the alarm's nights
        self.last = np.full((n_kinds, n_m), np.nan)

    def repaired(self, c: int, x: FloatArray, within: BoolArray, allow: FloatArray,
                 alarmed: BoolArray, strong: float) -> BoolArray:
        """Alarmed meters whose night ``x`` (kind ``c``; ``within`` the allowance) is a
        repair."""
        total, count = self.net[:, c]
        with np.errstate(invalid="ignore", divide="ignore"):
            level = total / count
            return (alarmed & within & (level >= strong * allow)
                    & (self.last[c] - x > self.share * level))

    def record(self, c: int, x: FloatArray, r: FloatArray, on: BoolArray) -> None:
        """Night ``x`` of kind ``c`` with net flow ``r``; alarms not ``on`` are forgotten."""
        known = on & ~np.isnan(r)
        self.net[0, c] += np.where(known, r, 0.0)
        self.net[1, c] += known
        self.net[:, :, ~on] = 0.0
        self.last[c] = np.where(np.isnan(x), self.last[c], x)


def _cusum_step(cum: FloatArray, u: FloatArray, k: float, h: float) -> FloatArray:
    """One night of the one-sided CUSUM; a night with no verdict (NaN) leaves it unchanged."""
    nxt = np.clip(cum + u - k, 0.0, h + 1.0)
    return np.where(np.isnan(u), cum, nxt)


def day_classes(weekday: IntArray, local_day: IntArray,
                breaks: list[tuple[int, int]] | tuple[tuple[int, int], ...] = ()) -> IntArray:
    """Kind of day of each bin: 0 = term weekday, 1 = weekend, 2 = weekday in a break.

    Parameters
    ----------
    weekday : array of int, shape (n_bins,)
        Local weekday, 0 = Monday (:class:`meterd.analysis.hourly.LocalCalendar`).
    local_day : array of int, shape (n_bins,)
        Local date as a proleptic ordinal.
    breaks : list of (int, int)
        First and last ordinal (inclusive) of each term break (``[calendar] breaks``).

    Returns
    -------
    array of int, shape (n_bins,)
        A campus's legitimate night use differs by these kinds (residents stay in at weekends,
        buildings empty in breaks), so night flow is compared within a kind only.
    """
    out = np.where(np.asarray(weekday) >= 5, 1, 0).astype(np.int64)
    in_break = np.zeros(out.shape, dtype=bool)
    for first, last in breaks:
        in_break |= (local_day >= first) & (local_day <= last)
    out[in_break & (out == 0)] = 2
    return out


def _night_kinds(day_class: IntArray | None, local_hour: FloatArray, step_s: int,
                 night: tuple[float, float], n_all: int) -> IntArray:
    """Kind of each night: the class of the bin that opens its window (known as soon as the
    night starts, so a night being judged never changes kind as more data arrives)."""
    if day_class is None:
        return np.zeros(n_all, dtype=np.int64)
    in_win = night_bins(local_hour, step_s, night)
    starts = np.flatnonzero(in_win & ~np.r_[False, in_win[:-1]])
    return np.asarray(day_class, dtype=np.int64)[starts[:n_all]]


def _baseline(hist: FloatArray, spread: FloatArray, min_history: int,
              allowance_m3h: float | FloatArray, allowance_rel: float, k_mad: FloatArray
              ) -> tuple[BoolArray, FloatArray, FloatArray]:
    """Enough history, robust baseline (median of the learnt nights ``hist``) and allowance (its
    MAD term from ``spread``, the calm nights: ``k_mad`` MADs, one factor per meter)."""
    enough = np.sum(~np.isnan(hist), axis=1) >= min_history
    base = nanmedian_rows(hist)  # NaN before the first learnt night
    mid = nanmedian_rows(spread)
    mad = nanmedian_rows(np.abs(spread - mid[:, None]))
    allow = np.maximum(allowance_m3h, allowance_rel * np.nan_to_num(base))
    return enough, base, np.maximum(allow, k_mad * 1.4826 * np.nan_to_num(mad))


@lru_cache(maxsize=16)
def mad_multiplier(k: float, max_n: int, efficiency: float | None = 0.37) -> FloatArray:
    """Per number of residuals n = 0 .. ``max_n``, the multiple of the MAD-estimated standard
    deviation that a new residual exceeds as rarely as a normal one exceeds ``k`` known
    standard deviations. ``efficiency`` None: ``k`` whatever n.

    Notes
    -----
    A prediction bound with an estimated scale uses Student's t instead of the normal quantile
    (Hahn & Meeker 1991). The MAD is 37 % as efficient as the standard deviation on normal data
    (Rousseeuw & Croux 1993), so its n residuals count as ``efficiency`` (n - 1) degrees of
    freedom. The plain ``k`` is too tight on a few weeks of nights: over 14 nights one MAD in
    six comes out 30 % low, and most of the noise benchmark's false incidents were single
    nights of noise above such an allowance (session 9). n < 2: no MAD, the term is 0.

    References
    ----------
    .. [1] Hahn, G. J., & Meeker, W. Q. (1991). "Statistical Intervals: A Guide for
       Practitioners". Wiley (prediction intervals, ch. 4).
    .. [2] Rousseeuw, P. J., & Croux, C. (1993). "Alternatives to the median absolute
       deviation". Journal of the American Statistical Association 88(424), 1273–1283.
    """
    n = np.arange(max_n + 1, dtype=float)
    out = np.full(n.size, float(k))
    if efficiency is not None and k > 0 and max_n >= 2:
        out[2:] = stats.t.ppf(stats.norm.cdf(k), efficiency * (n[2:] - 1.0))
    out.setflags(write=False)  # cached: shared by every caller
    return out


def _running_minimum(flow: FloatArray, local_hour: FloatArray, step_s: int,
                     night: tuple[float, float]) -> tuple[FloatArray, IntArray]:
    """Per bin inside a night window, the minimum of the rolling 1-h mean since the window
    opened (NaN outside windows and before any hour had data), and each window's first bin."""
    hourly = rolling_mean(flow, hour_bins(step_s))
    in_win = night_bins(local_hour, step_s, night)  # the unfinished last night too: it is live
    out = np.full(flow.shape, np.nan)
    starts = np.flatnonzero(in_win & ~np.r_[False, in_win[:-1]])
    ends = np.flatnonzero(in_win & ~np.r_[in_win[1:], False])
    for a, b in zip(starts, ends, strict=True):
        seg = np.where(np.isnan(hourly[:, a : b + 1]), np.inf, hourly[:, a : b + 1])
        out[:, a : b + 1] = np.minimum.accumulate(seg, axis=1)
    out[~np.isfinite(out)] = np.nan
    return out, starts.astype(np.int64)


def _first_strong(run_min: FloatArray, a: int, b: int, enough: BoolArray,
                  level: FloatArray) -> IntArray:
    """First bin in ``[a, b)`` whose running minimum exceeds ``level`` per meter (-1: none)."""
    above = enough[:, None] & (run_min[:, a:b] > level[:, None])
    return np.where(above.any(axis=1), a + np.argmax(above, axis=1), -1)


def _open_early(alarm: Alarm, flow: FloatArray, run_min: FloatArray, first: IntArray,
                stop: IntArray, base: FloatArray, thresh: FloatArray) -> None:
    """Switch the alarm on from the bin where a night became strong evidence until the bin
    (``stop``) where the whole night is judged."""
    for m, d in zip(*np.nonzero(first >= 0), strict=True):
        a, b = int(first[m, d]), int(stop[d])
        if a > 0 and alarm.active[m, a - 1]:
            continue  # already on from an earlier night
        alarm.active[m, a:b] = True
        alarm.excess[m, a:b] = run_min[m, a:b] - base[m, d]
        below = np.flatnonzero(~(flow[m, : a + 1] > thresh[m, d]))
        alarm.start_lag[m, a] = a - (below[-1] + 1) if below.size else a


def leakdb_reference(
    flow: FloatArray,
    local_hour: FloatArray,
    step_s: int = 3600,
    night: tuple[float, float] = (2.0, 5.0),
    window_days: int = 10,
    rel_threshold: float = 0.2,
) -> Alarm:
    """The LeakDB benchmark MNF detector: flag when MNF − min(last w unflagged) > 0.2 · that min.

    Parameters
    ----------
    flow, local_hour, step_s, night
        As for :func:`night_minimum`.
    window_days : int
        ``w``, the number of previous unflagged nights compared against (LeakDB: 10).
    rel_threshold : float
        Relative rise that flags a night (LeakDB: 0.2).

    Returns
    -------
    Alarm
        Active from each flagged night until the next unflagged one.

    References
    ----------
    .. [1] Vrachimis, S. G., et al. (2018). "LeakDB: a benchmark dataset for leakage diagnosis in
       water distribution networks". WDSA/CCWI Joint Conference (the MNF benchmark algorithm).
    """
    nights = night_minimum(flow, local_hour, step_s, night)
    n_m, n_n = nights.mnf.shape
    hist = np.full((n_m, window_days), np.nan)
    pos = np.zeros(n_m, dtype=np.int64)
    flagged_all = np.zeros((n_m, n_n), dtype=bool)
    net = np.zeros((n_m, n_n))
    thresh = np.full((n_m, n_n), np.inf)
    rows = np.arange(n_m)
    for d in range(n_n):
        x = nights.mnf[:, d]
        full = np.sum(~np.isnan(hist), axis=1) >= window_days
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            ref = np.nanmin(np.where(full[:, None], hist, np.inf), axis=1)
        flagged = full & (x - ref > rel_threshold * ref)
        flagged_all[:, d] = flagged
        net[:, d] = np.where(flagged, x - ref, 0.0)
        thresh[:, d] = np.where(full, ref * (1 + rel_threshold), np.inf)
        learn = ~flagged & ~np.isnan(x)
        hist[rows[learn], pos[learn] % window_days] = x[learn]
        pos += learn
    return _to_bins("leakdb_mnf", flow, nights.end_bin, flagged_all, net, thresh)


def _to_bins(kind: str, flow: FloatArray, end_bin: IntArray, night_active: BoolArray,
             net: FloatArray, thresh: FloatArray) -> Alarm:
    """Spread per-night state over the bins from one night's end to the next."""
    n_m, n_bins = flow.shape
    active = np.zeros((n_m, n_bins), dtype=bool)
    excess = np.zeros((n_m, n_bins), dtype=np.float32)
    lag = np.zeros((n_m, n_bins), dtype=np.int32)
    bounds = np.r_[end_bin, n_bins - 1]
    for d in range(end_bin.size):
        a, b = int(bounds[d]), int(bounds[d + 1]) + (1 if d + 1 == end_bin.size else 0)
        active[:, a:b] = night_active[:, d : d + 1]
        excess[:, a:b] = net[:, d : d + 1]
    # Onset: just after the last bin at or below the threshold, found only where alarms open.
    opens = active & ~np.pad(active, ((0, 0), (1, 0)))[:, :-1]
    for m, i in zip(*np.nonzero(opens), strict=True):
        d = int(np.searchsorted(end_bin, i))
        below = np.flatnonzero(~(flow[m, : i + 1] > thresh[m, d]))
        lag[m, i] = i - (below[-1] + 1) if below.size else i
    return Alarm(kind, active, excess, lag)
