"""Avoided consumption against a baseline, its 90 % uncertainty, CUSUM and projection.

Pure numpy/scipy functions; the baseline comes from :func:`meterd.analysis.baseline.fit_baseline`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from meterd.analysis.baseline import BaselineModel


@dataclass(frozen=True)
class Savings:
    """Savings over a reporting period; ``fraction`` is savings / expected (0.12 = 12 %).

    ``fsu`` is the fractional savings uncertainty (half-width of the confidence interval of the
    savings, divided by the savings); ``u_fraction = fsu * |fraction|`` is the same half-width as
    a fraction of expected use. ``days`` counts days with both an actual and an expected value.
    """

    actual: float
    expected: float
    savings: float
    fraction: float
    fsu: float
    u_fraction: float
    days: int
    cusum: NDArray[np.float64]


def fractional_savings_uncertainty(cv_rmse: float, n: int, p: int, rho: float, m: int,
                                   fraction: float, confidence: float = 0.9) -> float:
    """ASHRAE Guideline 14 fractional savings uncertainty, autocorrelation-corrected.

    .. math::
        \\frac{\\Delta E_{save}}{E_{save}} = 1.26\\, t \\, \\frac{CV}{F}
        \\sqrt{\\frac{n}{n'}\\left(1 + \\frac{2}{n'}\\right)\\frac{1}{m}},
        \\qquad n' = n\\,\\frac{1 - \\rho}{1 + \\rho}

    Parameters
    ----------
    cv_rmse : float
        Baseline CV(RMSE) as a fraction, with ``n - p`` degrees of freedom.
    n, p : int
        Baseline observations and model parameters.
    rho : float
        Lag-1 autocorrelation of baseline residuals.
    m : int
        Reporting-period observations.
    fraction : float
        Savings as a fraction of expected use, F.
    confidence : float
        Two-sided confidence level; Guideline 14 reports at 90 % (or 68 %).

    Returns
    -------
    float
        FSU as a fraction of the savings; ``inf`` when the savings are zero.

    References
    ----------
    .. [1] Reddy, T. A. and Claridge, D. E. (2000). Uncertainty of "measured" energy savings
       from statistical baseline models. HVAC&R Research 6(1), 3-20.
    .. [2] ASHRAE Guideline 14-2014, Annex B, equation for savings uncertainty with
       autocorrelated residuals (the 1.26 factor and n').
    .. [3] CalTRACK Methods 2.0, §4.3 (FSU for daily models).
    """
    if m <= 0 or n <= p:
        return math.inf
    n_eff = max(n * (1.0 - rho) / (1.0 + rho), 1.0)
    t = float(stats.t.ppf(0.5 + confidence / 2.0, max(n_eff - p, 1.0)))
    width = 1.26 * t * cv_rmse * math.sqrt((n / n_eff) * (1.0 + 2.0 / n_eff) / m)
    return width / abs(fraction) if fraction else math.inf


def cusum(actual: ArrayLike, expected: ArrayLike) -> NDArray[np.float64]:
    """Cumulative sum of daily savings (expected − actual); days missing either count as 0.

    References
    ----------
    .. [1] ASHRAE Guideline 14-2014, §5.3 and Annex B (CUSUM of residuals to show savings
       accumulating over the reporting period).
    """
    diff = np.asarray(expected, dtype=np.float64) - np.asarray(actual, dtype=np.float64)
    return np.cumsum(np.where(np.isfinite(diff), diff, 0.0))


def savings(actual: ArrayLike, expected: ArrayLike, model: BaselineModel,
            confidence: float = 0.9) -> Savings:
    """Avoided consumption = baseline model at reporting conditions − actual.

    Parameters
    ----------
    actual : array_like
        Daily actual use over the reporting period (NaN: unknown).
    expected : array_like
        The baseline model's daily prediction at reporting conditions (NaN: unknown).
    model : BaselineModel
        Supplies CV(RMSE), n, p and the residual autocorrelation for the uncertainty.
    confidence : float
        Confidence level of the uncertainty (default 90 %).

    Returns
    -------
    Savings
        Totals over the days where both series are known, and the daily CUSUM.

    References
    ----------
    .. [1] ASHRAE Guideline 14-2014, §4.1.1 (avoided energy use, "adjusted baseline").
    .. [2] CalTRACK Methods 2.0, §4.1 (avoided energy use).
    """
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    both = np.isfinite(a) & np.isfinite(e)
    tot_a, tot_e = float(a[both].sum()), float(e[both].sum())
    saved = tot_e - tot_a
    frac = saved / tot_e if tot_e > 0 else math.nan
    m = int(both.sum())
    fsu = fractional_savings_uncertainty(model.cv_rmse, model.n, model.p, model.rho, m,
                                         frac, confidence) if math.isfinite(frac) else math.inf
    u = fsu * abs(frac) if math.isfinite(fsu) else (
        fractional_savings_uncertainty(model.cv_rmse, model.n, model.p, model.rho, m, 1.0,
                                       confidence))
    return Savings(tot_a, tot_e, saved, frac, fsu, u, m, cusum(np.where(both, a, np.nan), e))


def project(saved_to_date: float, expected_to_date: float, expected_remaining: float,
            recent_fraction: float | None = None) -> tuple[float, float]:
    """Savings projected to the end of the target period.

    The remaining days are expected to save ``recent_fraction`` of their expected use (the
    rate over the last weeks, i.e. the CUSUM slope; defaults to the rate to date). Their
    expected use comes from the baseline at normal conditions (the same calendar days of the
    baseline year), since future meals and weather are unknown.

    Returns
    -------
    (float, float)
        Projected savings over the whole target period, and as a fraction of its expected use.
    """
    total_expected = expected_to_date + expected_remaining
    if total_expected <= 0:
        return math.nan, math.nan
    rate = recent_fraction if recent_fraction is not None and math.isfinite(recent_fraction) \
        else (saved_to_date / expected_to_date if expected_to_date > 0 else 0.0)
    projected = saved_to_date + rate * expected_remaining
    return projected, projected / total_expected
