"""Pure-function tests of the baseline, savings, config and activity parsing (no servers)."""

from __future__ import annotations

import math
import tomllib
from datetime import date

import numpy as np
import pytest

from meterd.analysis.baseline import (
    BREAK,
    TERM,
    WEEKEND,
    day_types,
    degree_days,
    fit_baseline,
    spread_gaps,
)
from meterd.analysis.savings import cusum, fractional_savings_uncertainty, project, savings
from meterd.canteens.activity import ActivityError, parse_activity, to_lines
from meterd.canteens.config import load_canteens
from meterd.config import ConfigError, parse_config
from simulators.canteen_truth import generate

DAYS = np.arange(np.datetime64("2024-09-01"), np.datetime64("2025-09-01"), dtype="datetime64[D]")
BREAKS = [(date(2025, 1, 16), date(2025, 2, 24)), (date(2025, 7, 6), date(2025, 8, 31))]


def _synthetic(noise: float = 0.03, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    dt = day_types(DAYS, BREAKS)
    meals = np.array([{TERM: 1500, WEEKEND: 600, BREAK: 200}[int(t)] for t in dt], float)
    meals *= 1 + rng.normal(0, 0.1, len(DAYS))
    doy = np.arange(len(DAYS))
    temp = 16 + 11 * np.sin(2 * np.pi * (doy - 250) / 365) + rng.normal(0, 2, len(DAYS))
    use = 200 + 0.8 * meals + 20 * degree_days(temp, 13, "hdd") + 40 * degree_days(temp, 22, "cdd")
    return use * (1 + rng.normal(0, noise, len(DAYS))), meals, temp, dt


def test_day_types_weekend_holiday_and_break() -> None:
    d = np.array(["2024-09-02", "2024-09-07", "2024-10-01", "2025-01-20"], dtype="datetime64[D]")
    assert day_types(d, BREAKS, [date(2024, 10, 1)]).tolist() == [TERM, WEEKEND, WEEKEND, BREAK]


def test_fit_recovers_balance_points_and_positive_coefficients() -> None:
    use, meals, temp, dt = _synthetic()
    model = fit_baseline(use, meals, temp, dt)
    assert model.qualified and model.kind == "regression"
    assert model.terms[-3:] == ("meals", "hdd", "cdd")
    assert (model.hdd_balance_c, model.cdd_balance_c) == (13.0, 22.0)
    coef = model.coefficients()
    assert coef["meals"] == pytest.approx(0.8, rel=0.1)
    assert coef["cdd"] == pytest.approx(40, rel=0.15)
    assert model.cv_rmse < 0.05 and abs(model.nmbe) < 1e-4 and model.r2 > 0.95


def test_fit_drops_terms_that_do_not_explain_use() -> None:
    _, meals, temp, dt = _synthetic()
    water = 5 + 0.015 * meals  # no weather dependence
    model = fit_baseline(water * (1 + np.random.default_rng(3).normal(0, 0.02, len(water))),
                         meals, temp, dt)
    assert "meals" in model.terms
    assert all(model.coefficients()[t] > 0 for t in model.terms if t in ("meals", "hdd", "cdd"))


def test_fallback_is_taken_and_explained() -> None:
    use, meals, temp, dt = _synthetic(noise=0.6)
    model = fit_baseline(use, meals, temp, dt)
    assert model.kind == "fallback" and not model.qualified
    assert "CV(RMSE)" in model.reason
    sparse = use.copy()
    sparse[::2] = np.nan
    model = fit_baseline(sparse, meals, temp, dt)
    assert not model.qualified and "coverage 50%" in model.reason
    pred = model.predict(meals, temp, dt)
    assert np.isfinite(pred).all()


def test_spread_gaps_keeps_the_total_and_marks_days() -> None:
    edges = np.arange(0, 6 * 86400 + 1, 86400)
    # 48 h gap ending at noon of day 3: day 1 half, day 2 whole, day 3 half.
    removed, added, touched = spread_gaps(edges, [3.5 * 86400], [1.5 * 86400 + 43200], [120.0])
    assert removed.tolist() == [0, 0, 0, 120.0, 0, 0]
    assert added.sum() == pytest.approx(120.0)
    assert added[1:4] == pytest.approx([30, 60, 30])
    assert touched.tolist() == [False, True, True, True, False, False]
    # Half of a gap before the window stays outside it.
    _, added, _ = spread_gaps(edges, [86400.0], [2 * 86400.0], [100.0])
    assert added.sum() == pytest.approx(50.0)


def test_fsu_matches_guideline_14_by_hand() -> None:
    # n' = 365 * 0.6 / 1.4; t at 90 % with n' - p dof.
    n, p, rho, m, cv, f = 365, 6, 0.2, 365, 0.06, 0.10
    n_eff = n * (1 - rho) / (1 + rho)
    from scipy import stats
    t = stats.t.ppf(0.95, n_eff - p)
    expected = 1.26 * t * cv * math.sqrt(n / n_eff * (1 + 2 / n_eff) / m) / f
    assert fractional_savings_uncertainty(cv, n, p, rho, m, f) == pytest.approx(expected)
    # More autocorrelation, more uncertainty.
    assert fractional_savings_uncertainty(cv, n, p, 0.6, m, f) > expected


def test_savings_cusum_and_projection() -> None:
    use, meals, temp, dt = _synthetic()
    model = fit_baseline(use, meals, temp, dt)
    expected = model.predict(meals, temp, dt)
    actual = expected * 0.9
    actual[5] = np.nan  # an unknown day counts in neither total
    s = savings(actual, expected, model)
    assert s.fraction == pytest.approx(0.10)
    assert s.days == len(DAYS) - 1 and 0 < s.fsu < 1
    assert s.cusum[-1] == pytest.approx(s.savings)
    assert cusum([1, np.nan, 1], [2, 2, 2]).tolist() == [1, 1, 2]
    assert project(10.0, 100.0, 100.0, 0.2) == pytest.approx((30.0, 0.15))


def _config(extra: str = "") -> str:
    return generate(1, 1, step_s=6 * 3600).config_toml + extra


def test_canteen_config_errors_name_key_and_id() -> None:
    bad = _config().replace("gas = 0.05", "gas = 5")
    with pytest.raises(ConfigError, match=r"canteens\[id=canteen-a\]: .*targets.gas"):
        load_canteens(parse_config(tomllib.loads(bad)))
    bad = _config().replace('weather_meter = "north-weather"', 'weather_meter = "nope"')
    with pytest.raises(ConfigError, match=r"canteens\[id=canteen-a\].weather_meter"):
        load_canteens(parse_config(tomllib.loads(bad)))
    bad = _config().replace("targets = {", "targets = { heat = 0.1,")
    with pytest.raises(ConfigError, match=r"canteens\[id=canteen-a\].targets.heat: no meter"):
        load_canteens(parse_config(tomllib.loads(bad)))
    bad = _config().replace('baseline = { start = "2024-09-01"', 'baseline = { start = "2026-09-01"')
    with pytest.raises(ConfigError, match=r"canteens\[id=canteen-a\].baseline: .*before start"):
        load_canteens(parse_config(tomllib.loads(bad)))
    canteens, reports = load_canteens(parse_config(tomllib.loads(_config())))
    assert canteens[0].period().start == date(2025, 9, 1)
    assert reports.to == ["logistics@example.edu"]


@pytest.mark.parametrize(("text", "message"), [
    ("date,meals\n", r"x.csv:1: header .* \(missing canteen\)"),
    ("date,canteen,meals,tips\n", r"\(unknown tips\)"),
    ("date,canteen,meals\n2025-09-01,canteen-a,1\n2025-13-01,canteen-a,5\n",
     r"x.csv:3: date '2025-13-01' is not YYYY-MM-DD"),
    ("date,canteen,meals\n2025-09-01,canteen-z,5\n", r"x.csv:2: canteen 'canteen-z'"),
    ("date,canteen,meals\n2025-09-01,canteen-a,nan\n", r"x.csv:2: meals 'nan' must be a finite"),
    ("date,canteen,meals\n2025-09-01,canteen-a\n", r"x.csv:2: expected 3 columns"),
    ("date,canteen,meals\n2025-09-01,canteen-a,1\n\n2025-09-01,canteen-a,2\n",
     r"x.csv:4: canteen-a on 2025-09-01 already given on line 2"),
    ("date,canteen,meals,revenue\n2025-09-01,canteen-a,1,abc\n", r"x.csv:2: revenue 'abc'"),
])
def test_activity_csv_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(ActivityError, match=message):
        parse_activity(text, ["canteen-a"], "x.csv")


def test_activity_rows_at_local_midnight() -> None:
    rows = parse_activity("Date,Canteen,Meals,Revenue\n2025-09-01,canteen-a,12,\n",
                          ["canteen-a"])
    assert rows[0].revenue is None
    (line,) = to_lines(rows, "Asia/Shanghai")
    # 2025-09-01 00:00 +08:00 = 2025-08-31T16:00Z
    assert line == "canteen_activity,canteen=canteen-a meals=12.0 1756656000000000000"
