"""Daily baseline models of a canteen's consumption: meals, degree days and day type.

Pure numpy/scipy functions: arrays in, a :class:`BaselineModel` out. The adapters that fetch the
arrays live in :mod:`meterd.canteens.io`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Final, TypedDict

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

# Day types; weekends and holidays share one because canteens run a reduced service on both.
TERM: Final = 0
WEEKEND: Final = 1
BREAK: Final = 2
DAY_TYPE_NAMES: Final = ("term weekday", "weekend/holiday", "break")

# Balance-point grids in °C (CalTRACK searches 30-90 °F; a canteen's kitchen gains push
# the heating balance point lower than a home's).
HDD_GRID: Final = np.arange(8.0, 21.0, 1.0)
CDD_GRID: Final = np.arange(15.0, 29.0, 1.0)

P_MAX: Final = 0.1            # CalTRACK 2.0 §3.4.3.2: keep a term only if p < 0.1
MAX_CV_RMSE: Final = 0.25     # daily models above this are too noisy to judge a 10 % target
MAX_ABS_NMBE: Final = 0.005   # ASHRAE 14 expects a near-unbiased baseline
MIN_COVERAGE: Final = 0.9     # CalTRACK 2.0 §2.2: 90 % of baseline days must have data
MIN_DAYS: Final = 30


@dataclass(frozen=True)
class BaselineModel:
    """A fitted daily baseline: ``use = X @ coef`` with the columns named in ``terms``.

    ``kind`` is ``"regression"`` or ``"fallback"`` (meals intensity by day type, see
    :func:`fit_baseline`); ``reason`` says why the fallback was taken. Statistics are fractions
    (``cv_rmse = 0.12`` is 12 %); ``nmbe`` is positive when the model under-predicts.
    """

    kind: str
    terms: tuple[str, ...]
    coef: NDArray[np.float64]
    hdd_balance_c: float | None
    cdd_balance_c: float | None
    n: int
    p: int
    r2: float
    adj_r2: float
    cv_rmse: float
    nmbe: float
    rho: float
    coverage: float
    sufficient: bool
    qualified: bool
    reason: str = ""

    def predict(self, meals: ArrayLike | None, temp_c: ArrayLike | None,
                day_type: ArrayLike) -> NDArray[np.float64]:
        """Daily use predicted at the given conditions; NaN where a needed input is NaN."""
        dt = np.asarray(day_type, dtype=np.int64)
        if self.kind == "fallback":
            rate = self.coef[dt]
            if "meals" in self.terms:
                rate = rate * _as_array(meals, len(dt))
            return np.asarray(rate, dtype=np.float64)
        x = design(self.terms, _as_array(meals, len(dt)), _as_array(temp_c, len(dt)), dt,
                   self.hdd_balance_c, self.cdd_balance_c)
        return np.asarray(x @ self.coef, dtype=np.float64)

    def coefficients(self) -> dict[str, float]:
        names = [f"rate[{n}]" for n in DAY_TYPE_NAMES] if self.kind == "fallback" else self.terms
        return {name: float(c) for name, c in zip(names, self.coef, strict=True)}


def _as_array(values: ArrayLike | None, n: int) -> NDArray[np.float64]:
    if values is None:
        return np.full(n, np.nan)
    return np.asarray(values, dtype=np.float64)


def day_types(days: ArrayLike, breaks: Sequence[tuple[date, date]] = (),
              holidays: Sequence[date] = ()) -> NDArray[np.int64]:
    """Classify local dates as term weekday, weekend/holiday or break.

    Parameters
    ----------
    days : array of datetime64[D]
        Local calendar dates.
    breaks : sequence of (first, last) dates
        Term breaks, both ends inclusive. A break overrides weekend and holiday.
    holidays : sequence of dates
        Public holidays, treated like weekends.

    Returns
    -------
    numpy.ndarray of int
        :data:`TERM`, :data:`WEEKEND` or :data:`BREAK` per day.
    """
    d = np.asarray(days, dtype="datetime64[D]")
    # 1970-01-01 was a Thursday: weekday index 0 = Monday.
    weekday = (d.astype(np.int64) + 3) % 7
    out = np.where(weekday >= 5, WEEKEND, TERM).astype(np.int64)
    if len(holidays):
        out[np.isin(d, np.array(list(holidays), dtype="datetime64[D]"))] = WEEKEND
    for first, last in breaks:
        out[(d >= np.datetime64(first, "D")) & (d <= np.datetime64(last, "D"))] = BREAK
    return out


def degree_days(temp_c: ArrayLike, balance_c: float, kind: str) -> NDArray[np.float64]:
    """Daily heating (``"hdd"``) or cooling (``"cdd"``) degree days from mean temperature.

    Parameters
    ----------
    temp_c : array_like
        Daily mean air temperature, °C.
    balance_c : float
        Balance-point temperature, °C.
    kind : {"hdd", "cdd"}

    Returns
    -------
    numpy.ndarray
        Kelvin-days per day, never negative; NaN where ``temp_c`` is NaN.

    References
    ----------
    .. [1] CalTRACK Methods 2.0, §3.1 (daily degree days from average daily temperature).
    """
    t = np.asarray(temp_c, dtype=np.float64)
    if kind == "hdd":
        return np.maximum(balance_c - t, 0.0) * np.where(np.isnan(t), np.nan, 1.0)
    if kind == "cdd":
        return np.maximum(t - balance_c, 0.0) * np.where(np.isnan(t), np.nan, 1.0)
    raise ValueError(f"kind must be 'hdd' or 'cdd', got {kind!r}")


def design(terms: Sequence[str], meals: NDArray[np.float64], temp_c: NDArray[np.float64],
           day_type: NDArray[np.int64], hdd_bp: float | None,
           cdd_bp: float | None) -> NDArray[np.float64]:
    """The regression matrix for ``terms`` (intercept, weekend, break, meals, hdd, cdd)."""
    cols: dict[str, NDArray[np.float64]] = {
        "intercept": np.ones(len(day_type)),
        "weekend": (day_type == WEEKEND).astype(np.float64),
        "break": (day_type == BREAK).astype(np.float64),
    }
    if "meals" in terms:
        cols["meals"] = meals
    if hdd_bp is not None:
        cols["hdd"] = degree_days(temp_c, hdd_bp, "hdd")
    if cdd_bp is not None:
        cols["cdd"] = degree_days(temp_c, cdd_bp, "cdd")
    return np.column_stack([cols[t] for t in terms])


@dataclass(frozen=True)
class _Fit:
    terms: tuple[str, ...]
    coef: NDArray[np.float64]
    hdd_bp: float | None
    cdd_bp: float | None
    adj_r2: float


def _ols_batch(x: NDArray[np.float64], y: NDArray[np.float64]
               ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """OLS for a stack of designs ``x`` (g, n, p): coefficients, two-sided p-values, adj. R²."""
    _, n, p = x.shape
    xtx = np.einsum("gni,gnj->gij", x, x)
    xty = np.einsum("gni,n->gi", x, y)
    # Singular designs (a term that is all zeros, e.g. no breaks in the data) get NaN and lose.
    xtx = xtx + np.eye(p) * 1e-9 * np.trace(xtx, axis1=1, axis2=2)[:, None, None] / p
    inv = np.linalg.inv(xtx)
    coef = np.einsum("gij,gj->gi", inv, xty)
    resid = y[None, :] - np.einsum("gnp,gp->gn", x, coef)
    ssr = (resid**2).sum(axis=1)
    dof = max(n - p, 1)
    se = np.sqrt(np.maximum(np.diagonal(inv, axis1=1, axis2=2) * (ssr / dof)[:, None], 1e-300))
    pval = 2.0 * stats.t.sf(np.abs(coef / se), dof)
    sst = float(((y - y.mean()) ** 2).sum()) or 1.0
    adj_r2 = 1.0 - (ssr / dof) / (sst / max(n - 1, 1))
    return coef, pval, adj_r2


def _candidates(has_meals: bool, has_temp: bool
                ) -> list[tuple[tuple[str, ...], bool, bool]]:
    base = ("intercept", "weekend", "break")
    out = []
    for meals in (False, True) if has_meals else (False,):
        for hdd, cdd in ((False, False), (True, False), (False, True), (True, True)):
            if (hdd or cdd) and not has_temp:
                continue
            terms = base + (("meals",) if meals else ()) + (("hdd",) if hdd else ()) \
                + (("cdd",) if cdd else ())
            out.append((terms, hdd, cdd))
    return out


def _best_of(terms: tuple[str, ...], hdd: bool, cdd: bool, meals: NDArray[np.float64],
             temp: NDArray[np.float64], dt: NDArray[np.int64], y: NDArray[np.float64],
             hdd_grid: NDArray[np.float64], cdd_grid: NDArray[np.float64]) -> _Fit | None:
    """Search balance points for one candidate; keep fits whose physical terms are positive
    and significant, and return the one with the best adjusted R²."""
    pairs = [(h, c) for h in (hdd_grid if hdd else [None]) for c in (cdd_grid if cdd else [None])
             if h is None or c is None or c >= h]
    if not pairs:
        return None
    x = np.stack([design(terms, meals, temp, dt, h, c) for h, c in pairs])
    coef, pval, adj = _ols_batch(x, y)
    physical = [i for i, t in enumerate(terms) if t in ("meals", "hdd", "cdd")]
    ok = np.all((coef[:, physical] > 0) & (pval[:, physical] < P_MAX), axis=1) \
        & np.isfinite(adj)
    if not ok.any():
        return None
    best = int(np.argmax(np.where(ok, adj, -np.inf)))
    h, c = pairs[best]
    return _Fit(terms, coef[best], h, c, float(adj[best]))


def fit_baseline(use: ArrayLike, meals: ArrayLike | None, temp_c: ArrayLike | None,
                 day_type: ArrayLike, *, hdd_grid: ArrayLike = HDD_GRID,
                 cdd_grid: ArrayLike = CDD_GRID) -> BaselineModel:
    """Fit a daily baseline of consumption on meals, degree days and day type.

    Every candidate has an intercept and weekend/holiday and break offsets; candidates add
    meals served, heating degree days and cooling degree days in every combination. Balance
    points are searched on ``hdd_grid``/``cdd_grid`` (cooling ≥ heating). A fit survives only
    if its meals and degree-day coefficients are positive with p < 0.1 (more meals or more
    extreme weather never lowers use); the survivor with the best adjusted R² is chosen.

    The model qualifies when baseline data coverage is at least 90 % (and 30 days), CV(RMSE) is
    at most 25 % and \\|NMBE\\| at most 0.5 %. Otherwise the function falls back to a meals
    intensity per day type (use / meals as a ratio of sums, or mean use per day type if there
    is no activity data) and says why in ``reason``.

    Parameters
    ----------
    use : array_like
        Daily consumption over the baseline period; NaN marks a day without a clean total
        (no data, or part of a gap whose consumption arrived as one lump).
    meals : array_like or None
        Meals served per day; NaN where unknown, None when there is no activity data.
    temp_c : array_like or None
        Daily mean air temperature, °C; None when there is no weather meter.
    day_type : array_like of int
        From :func:`day_types`.
    hdd_grid, cdd_grid : array_like
        Candidate balance points, °C.

    Returns
    -------
    BaselineModel
        CV(RMSE) and NMBE use ``n - p`` degrees of freedom as in ASHRAE Guideline 14;
        NMBE = Σ(actual − predicted) / ((n − p)·mean(actual)), so it is positive when the model
        under-predicts. ``rho`` is the lag-1 autocorrelation of residuals on consecutive days.

    References
    ----------
    .. [1] CalTRACK Methods 2.0 (2018), §3.4 daily model selection by adjusted R² with
       balance-point search, §2.2 data sufficiency. http://docs.caltrack.org
    .. [2] ASHRAE Guideline 14-2014, Measurement of Energy, Demand, and Water Savings,
       §4.3 and Annex B (CV(RMSE), NMBE).
    """
    y_all = np.asarray(use, dtype=np.float64)
    dt = np.asarray(day_type, dtype=np.int64)
    m_all = _as_array(meals, len(y_all))
    t_all = _as_array(temp_c, len(y_all))
    has_meals = bool(np.isfinite(m_all).mean() > 0.5)
    has_temp = bool(np.isfinite(t_all).mean() > 0.5)
    need = np.isfinite(y_all) & (np.isfinite(m_all) | (not has_meals)) \
        & (np.isfinite(t_all) | (not has_temp))
    coverage = float(np.isfinite(y_all).mean()) if len(y_all) else 0.0
    n = int(need.sum())
    sufficient = coverage >= MIN_COVERAGE and n >= MIN_DAYS
    if n < MIN_DAYS // 3:
        return _fallback(y_all, m_all, dt, need, coverage, f"only {n} usable baseline days")
    y, m, t, d = y_all[need], m_all[need], t_all[need], dt[need]
    fits = [f for terms, h, c in _candidates(has_meals, has_temp)
            if (f := _best_of(terms, h, c, m, t, d, y, np.asarray(hdd_grid, float),
                              np.asarray(cdd_grid, float))) is not None]
    if not fits:
        return _fallback(y_all, m_all, dt, need, coverage, "no candidate model fitted")
    best = max(fits, key=lambda f: f.adj_r2)
    pred = design(best.terms, m, t, d, best.hdd_bp, best.cdd_bp) @ best.coef
    st = _stats(y, pred, len(best.terms), need)
    reasons = []
    if not sufficient:
        reasons.append(f"baseline coverage {coverage:.0%} with {n} usable days "
                       f"(needs {MIN_COVERAGE:.0%} and {MIN_DAYS})")
    if st["cv_rmse"] > MAX_CV_RMSE:
        reasons.append(f"CV(RMSE) {st['cv_rmse']:.1%} > {MAX_CV_RMSE:.0%}")
    if abs(st["nmbe"]) > MAX_ABS_NMBE:
        reasons.append(f"|NMBE| {abs(st['nmbe']):.2%} > {MAX_ABS_NMBE:.1%}")
    if reasons:
        return _fallback(y_all, m_all, dt, need, coverage, "; ".join(reasons))
    return BaselineModel("regression", best.terms, best.coef, best.hdd_bp, best.cdd_bp, n,
                         len(best.terms), coverage=coverage, sufficient=sufficient,
                         qualified=True, **st)


class _Stats(TypedDict):
    r2: float
    adj_r2: float
    cv_rmse: float
    nmbe: float
    rho: float


def _stats(y: NDArray[np.float64], pred: NDArray[np.float64], p: int,
           mask: NDArray[np.bool_]) -> _Stats:
    """R², adjusted R², CV(RMSE), NMBE (ASHRAE 14 form) and lag-1 residual autocorrelation."""
    n = len(y)
    resid = y - pred
    dof = max(n - p, 1)
    mean = float(y.mean()) if n else float("nan")
    sst = float(((y - mean) ** 2).sum()) or float("nan")
    r2 = 1.0 - float((resid**2).sum()) / sst
    return {
        "r2": r2,
        "adj_r2": 1.0 - (1.0 - r2) * (n - 1) / dof,
        "cv_rmse": float(np.sqrt((resid**2).sum() / dof)) / mean if mean else float("inf"),
        "nmbe": float(resid.sum()) / (dof * mean) if mean else float("nan"),
        "rho": lag1_autocorrelation(resid, mask),
    }


def lag1_autocorrelation(resid: NDArray[np.float64], mask: NDArray[np.bool_]) -> float:
    """Lag-1 autocorrelation of residuals, using only pairs of consecutive calendar days.

    ``resid`` holds the residuals of the days where ``mask`` is True, in date order.
    The result is clipped to [0, 0.99]: negative values would shrink the uncertainty.
    """
    full = np.full(len(mask), np.nan)
    full[mask] = resid - resid.mean() if len(resid) else resid
    a, b = full[:-1], full[1:]
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3:
        return 0.0
    denom = float(np.nansum(full**2)) / max(int(np.isfinite(full).sum()), 1)
    rho = float((a[ok] * b[ok]).mean()) / denom if denom else 0.0
    return float(np.clip(rho, 0.0, 0.99))


def _fallback(y: NDArray[np.float64], meals: NDArray[np.float64], dt: NDArray[np.int64],
              need: NDArray[np.bool_], coverage: float, reason: str) -> BaselineModel:
    """Intensity per day type: use per meal (ratio of sums), or mean use if meals are unknown."""
    use_meals = bool(np.isfinite(meals[need]).all() and np.nansum(meals[need]) > 0)
    rates = np.full(3, np.nan)
    for k in (TERM, WEEKEND, BREAK):
        sel = need & (dt == k)
        if sel.any():
            rates[k] = y[sel].sum() / meals[sel].sum() if use_meals and meals[sel].sum() > 0 \
                else y[sel].mean()
    # A day type absent from the baseline borrows the overall rate rather than predicting NaN.
    overall = (y[need].sum() / meals[need].sum() if use_meals else y[need].mean()) \
        if need.any() else np.nan
    rates = np.where(np.isfinite(rates), rates, overall)
    terms = ("meals",) if use_meals else ()
    model = BaselineModel("fallback", terms, rates, None, None, int(need.sum()), 3, np.nan,
                          np.nan, np.nan, np.nan, 0.0, coverage, False, False, reason)
    if not need.any():
        return model
    pred = model.predict(meals, None, dt)[need]
    st = _stats(y[need], pred, 3, need)
    return BaselineModel("fallback", terms, rates, None, None, int(need.sum()), 3,
                         coverage=coverage, sufficient=coverage >= MIN_COVERAGE,
                         qualified=False, reason=reason, **st)


def spread_gaps(edges_s: ArrayLike, gap_end_s: ArrayLike, gap_len_s: ArrayLike,
                gap_value: ArrayLike, weights: ArrayLike | None = None
                ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_]]:
    """Spread consumption that arrived as one point after a data gap over the days it covers.

    A point ending at ``gap_end_s`` with interval ``gap_len_s`` holds everything consumed over
    ``[end - len, end]``. Daily sums count it on its last day; this moves it, in proportion to
    each day's overlap times ``weights`` (e.g. the baseline's predicted use), so that a period
    boundary inside a gap splits it fairly. Nothing is lost or invented: the totals are kept.

    Parameters
    ----------
    edges_s : array_like
        Day boundaries, epoch seconds, length ``n_days + 1`` (local midnights).
    gap_end_s, gap_len_s, gap_value : array_like
        Each gap point's end time (s), interval (s) and consumption.
    weights : array_like, optional
        Relative use per day; NaN or non-positive falls back to time overlap.

    Returns
    -------
    removed : numpy.ndarray
        Per day, the gap consumption that daily sums had placed on that day.
    added : numpy.ndarray
        Per day, the gap consumption spread onto it.
    touched : numpy.ndarray of bool
        Days that any gap overlaps (their daily sums are not clean observations).
    """
    edges = np.asarray(edges_s, dtype=np.float64)
    n = len(edges) - 1
    removed, added, touched = np.zeros(n), np.zeros(n), np.zeros(n, dtype=bool)
    w_day = _as_array(weights, n) if weights is not None else np.ones(n)
    w_day = np.where(np.isfinite(w_day) & (w_day > 0), w_day, np.nan)
    for end, length, value in zip(np.asarray(gap_end_s, float), np.asarray(gap_len_s, float),
                                  np.asarray(gap_value, float), strict=True):
        start = end - length
        overlap = np.clip(np.minimum(edges[1:], end) - np.maximum(edges[:-1], start), 0, None)
        frac = overlap / np.diff(edges)
        # A point at exactly midnight is counted by the day it opens (InfluxDB's bucket rule).
        landed = int(np.searchsorted(edges, end, side="right")) - 1
        if 0 <= landed < n:
            removed[landed] += value
        touched |= overlap > 0
        if 0 <= landed < n:
            touched[landed] = True
        w = frac * np.where(np.isnan(w_day), np.nanmean(w_day) if np.isfinite(w_day).any()
                            else 1.0, w_day)
        total_frac = float(np.clip(overlap.sum() / length, 0, 1)) if length > 0 else 0.0
        if w.sum() > 0:
            # The share of the gap outside the window stays outside it.
            added += value * total_frac * w / w.sum()
    return removed, added, touched
