"""Compose the pure analysis functions into per-canteen, per-utility results and JSON."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np
from numpy.typing import NDArray

from meterd.analysis.baseline import BaselineModel, day_types, fit_baseline, spread_gaps
from meterd.analysis.savings import Savings, project, savings
from meterd.canteens.config import CanteenConfig
from meterd.canteens.io import DailyData, Gaps
from meterd.config import Config

# Indicator units per meal: litres read better than 0.015 m³ for water.
PER_MEAL = {"electricity": (1.0, "kWh/meal"), "water": (1000.0, "L/meal"),
            "gas": (1.0, "m³/meal"), "heat": (1.0, "kWh/meal")}
TARIFF = {"electricity": "electricity_per_kwh", "water": "water_per_m3", "gas": "gas_per_m3",
          "heat": "heat_per_kwh"}
RECENT_DAYS = 28


@dataclass
class UtilityResult:
    utility: str
    model: BaselineModel
    result: Savings
    target: float
    days: NDArray[np.datetime64]
    actual: NDArray[np.float64]
    expected: NDArray[np.float64]
    per_meal: float
    per_meal_baseline: float
    unit: str
    coverage: float
    projected_fraction: float
    cost: float
    cost_savings: float

    @property
    def met(self) -> bool:
        return bool(math.isfinite(self.result.fraction) and self.result.fraction >= self.target)


@dataclass
class CanteenResult:
    canteen: CanteenConfig
    utilities: dict[str, UtilityResult]


def fetch_window(canteens: list[CanteenConfig], start: date, end: date) -> tuple[date, date]:
    """The dates the analysis needs: every baseline and the reporting window ``[start, end)``."""
    first = min([start, *(c.baseline.start for c in canteens)])
    last = max([end, *(c.baseline.end + timedelta(days=1) for c in canteens)])
    return first, last


def analyse(cfg: Config, canteens: list[CanteenConfig], data: DailyData, start: date,
            end: date) -> list[CanteenResult]:
    """Fit each canteen's baselines and measure savings over ``[start, end)``."""
    dtype = day_types(data.days, cfg.calendar.breaks, cfg.calendar.holidays)
    out = []
    for c in canteens:
        meals = data.meals.get(c.id)
        temp = data.temp.get(c.weather_meter) if c.weather_meter else None
        targets: dict[str, float] = {str(u): t for u, t in c.targets.items()}
        results = {u: _utility(cfg, c, u, t, data, dtype, meals, temp, start, end)
                   for u, t in targets.items()}
        out.append(CanteenResult(c, results))
    return out


def _clean_and_actual(raw: NDArray[np.float64], gaps: Gaps | None, edges: NDArray[np.int64],
                      weights: NDArray[np.float64] | None
                      ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Daily values fit for a regression (gap days NaN) and actual use with gaps spread."""
    if gaps is None or not gaps.value:
        return raw, raw
    removed, added, touched = spread_gaps(edges, gaps.end_s, gaps.length_s, gaps.value, weights)
    base = np.where(np.isnan(raw), 0.0, raw) - removed
    clean = np.where(touched | np.isnan(raw), np.nan, base)
    actual = np.where(np.isnan(raw) & ~touched, np.nan, base + added)
    return clean, actual


def _utility(cfg: Config, c: CanteenConfig, u: str, target: float, data: DailyData, dtype: NDArray[np.int64],
             meals: NDArray[np.float64] | None, temp: NDArray[np.float64] | None,
             start: date, end: date) -> UtilityResult:
    raw = data.series(data.use, (c.id, u))
    gaps = data.gaps.get((c.id, u))
    base_sel = (data.days >= np.datetime64(c.baseline.start)) \
        & (data.days <= np.datetime64(c.baseline.end))
    rep_sel = (data.days >= np.datetime64(start)) & (data.days < np.datetime64(end))
    clean, _ = _clean_and_actual(raw, gaps, data.edges_s, None)
    model = fit_baseline(clean[base_sel], None if meals is None else meals[base_sel],
                         None if temp is None else temp[base_sel], dtype[base_sel])
    expected = model.predict(meals, temp, dtype)
    _, actual = _clean_and_actual(raw, gaps, data.edges_s, expected)
    res = savings(actual[rep_sel], expected[rep_sel], model)
    scale, unit = PER_MEAL[u]
    meals_arr = np.full(len(data.days), np.nan) if meals is None else meals
    price = float(getattr(cfg.tariffs, TARIFF[u]))
    return UtilityResult(
        u, model, res, target, data.days[rep_sel], actual[rep_sel], expected[rep_sel],
        per_meal=_per_meal(actual, meals_arr, rep_sel) * scale,
        per_meal_baseline=_per_meal(actual, meals_arr, base_sel) * scale, unit=unit,
        coverage=float(np.isfinite(actual[rep_sel]).mean()) if rep_sel.any() else 0.0,
        projected_fraction=_projection(cfg, c, model, res, actual, expected, data,
                                       meals, temp, end),
        cost=res.actual * price, cost_savings=res.savings * price)


def _per_meal(use: NDArray[np.float64], meals: NDArray[np.float64],
              sel: NDArray[np.bool_]) -> float:
    both = sel & np.isfinite(use) & np.isfinite(meals)
    total_meals = float(meals[both].sum())
    return float(use[both].sum()) / total_meals if total_meals > 0 else math.nan


def _projection(cfg: Config, c: CanteenConfig, model: BaselineModel, res: Savings,
                actual: NDArray[np.float64], expected: NDArray[np.float64], data: DailyData,
                meals: NDArray[np.float64] | None,
                temp: NDArray[np.float64] | None, end: date) -> float:
    """Savings fraction projected to the end of the target period.

    The remaining days get the baseline year's conditions 364 days earlier (same weekday).
    """
    period = c.period()
    remaining = np.arange(np.datetime64(max(end, period.start)),
                          np.datetime64(period.end) + 1, dtype="datetime64[D]")
    if not len(remaining):
        return res.fraction
    idx = np.searchsorted(data.days, remaining - 364)
    ok = (idx < len(data.days))
    idx = idx[ok]
    ok_days = remaining[ok]
    if not len(idx) or not np.all(data.days[idx] == ok_days - 364):
        return res.fraction
    future = model.predict(None if meals is None else meals[idx],
                           None if temp is None else temp[idx],
                           day_types(ok_days, cfg.calendar.breaks, cfg.calendar.holidays))
    recent = _recent_fraction(actual, expected, data.days, end)
    _, frac = project(res.savings, res.expected, float(np.nansum(future)), recent)
    return frac


def _recent_fraction(actual: NDArray[np.float64], expected: NDArray[np.float64],
                     days: NDArray[np.datetime64], end: date) -> float | None:
    sel = (days < np.datetime64(end)) & (days >= np.datetime64(end) - RECENT_DAYS) \
        & np.isfinite(actual) & np.isfinite(expected)
    exp = float(expected[sel].sum())
    return (exp - float(actual[sel].sum())) / exp if exp > 0 else None


def _num(x: float, digits: int = 3) -> float | None:
    return round(float(x), digits) if x is not None and math.isfinite(x) else None


def utility_json(r: UtilityResult) -> dict[str, Any]:
    """One utility's JSON: the contract keys first, then the extras documented in docs."""
    s, m = r.result, r.model
    return {
        "actual": _num(s.actual), "expected": _num(s.expected), "savings": _num(s.savings),
        "savings_pct": _num(100 * s.fraction, 2), "target_pct": _num(100 * r.target, 2),
        "met": r.met, "fsu_90": _num(100 * s.fsu, 1), "cv_rmse": _num(100 * m.cv_rmse, 2),
        "nmbe": _num(100 * m.nmbe, 3), "per_meal": _num(r.per_meal, 4),
        "savings_pct_u90": _num(100 * s.u_fraction, 2),
        "met_at_90": bool(math.isfinite(s.fraction) and s.fraction - s.u_fraction >= r.target),
        "per_meal_baseline": _num(r.per_meal_baseline, 4), "per_meal_unit": r.unit,
        "r2": _num(m.r2, 4), "model": m.kind, "terms": list(m.terms),
        "qualified": m.qualified, "fallback_reason": m.reason or None,
        "hdd_balance_c": m.hdd_balance_c, "cdd_balance_c": m.cdd_balance_c,
        "baseline_coverage_pct": _num(100 * m.coverage, 1),
        "coverage_pct": _num(100 * r.coverage, 1), "days": s.days,
        "projected_savings_pct": _num(100 * r.projected_fraction, 2),
        "cost": _num(r.cost, 2), "cost_savings": _num(r.cost_savings, 2),
    }


def to_json(results: list[CanteenResult], start: date, end: date) -> dict[str, Any]:
    return {"start": start.isoformat(), "end": end.isoformat(), "canteens": [
        {"id": cr.canteen.id, "name": cr.canteen.label,
         "utilities": {u: utility_json(r) for u, r in cr.utilities.items()}}
        for cr in results]}
