"""The injected faults of the leak benchmarks: what a detector is scored against must be right.

The benchmarks are scripts (``benchmarks/``), imported here by path as the MQTT replay test does.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def _benchmark(name: str) -> ModuleType:
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return importlib.import_module(name)


@pytest.fixture(scope="module")
def leak_eval() -> ModuleType:
    return _benchmark("leak_eval")


def test_a_leak_starting_mid_hour_adds_only_its_share(leak_eval: ModuleType) -> None:
    flow = leak_eval.leak_flow(6, 2.25, 0.04)
    np.testing.assert_allclose(flow, [0, 0, 0.03, 0.04, 0.04, 0.04])


def test_an_incipient_leak_grows_linearly_and_keeps_its_volume(leak_eval: ModuleType) -> None:
    ramp_h, rate = 48.0, 0.02
    flow = leak_eval.leak_flow(24 * 5, 10.0, rate, ramp_h)
    assert np.all(flow[:10] == 0) and np.all(np.diff(flow[10:58]) > 0)
    np.testing.assert_allclose(flow[58:], rate)  # full size from the end of the ramp
    # Volume: a triangle over the ramp, then the full rate.
    assert flow.sum() == pytest.approx(rate * ramp_h / 2 + rate * (120 - 58))
    np.testing.assert_allclose(flow[33], rate * 23.5 / ramp_h)  # mid-bin rate of a ramp


def test_registers_report_whole_litres_and_lose_none(leak_eval: ModuleType) -> None:
    flow = leak_eval.leak_flow(24 * 5, 10.0, 0.0013, 48.0)
    litres = leak_eval.register_steps(flow) * 1000
    np.testing.assert_allclose(litres, np.round(litres))
    assert abs(litres.sum() - flow.sum() * 1000) < 1.0


def test_an_alarm_the_clean_twin_also_raised_finds_nothing() -> None:
    """The simulated suite scores each run against its twin without the leak (docstring of
    ``leak_eval_zones``): a weekly alarm that happens to follow the onset is not a detection."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    lz = importlib.import_module("leak_eval_zones")
    from meterd.analysis.incidents import Incident

    weekend = Incident("b", "night_flow", 90_000, 100_000, 120_000, 0.02, 0.1)
    caused = Incident("b", "night_flow", 200_000, 210_000, None, 0.03, 1.0)
    truth = [{"kind": "building leak", "rate": 0.03, "onset_s": 50_000.0, "accept": {"b"}}]
    zones = lz.Zones(np.zeros((1, 1)), [], lz.Grid(0, 1), None, {})  # type: ignore[arg-type]
    with_weekend = lambda _z: [weekend, caused]  # noqa: E731
    assert lz.hits(with_weekend, zones, truth)[0][2] == pytest.approx(50_000 / 3600)
    twin = [Incident("b", "night_flow", 90_000, 100_000, 120_000, 0.02, 0.1)]
    assert lz.hits(with_weekend, zones, truth, twin)[0][2] == pytest.approx(160_000 / 3600)


@pytest.fixture(scope="module")
def leakdb() -> ModuleType:
    return _benchmark("leak_eval_leakdb")


def test_overlapping_leakdb_leaks_are_one_period(leakdb: ModuleType) -> None:
    leak = leakdb.Leak
    a, b = leak(1, 0.05, False, 10, 10, 50), leak(2, 0.15, True, 40, 60, 80)
    c = leak(3, 0.02, False, 90, 90, 95)
    (first, second) = leakdb.leak_periods([c, b, a])
    assert (first.start, first.end, first.diameter_m, first.incipient) == (10, 80, 0.15, False)
    assert second == c


def test_a_leakdb_leak_runs_strongest_at_night_and_stops_at_its_repair(leakdb: ModuleType
                                                                        ) -> None:
    """The outflow follows the orifice law at a pressure that falls with the inflow, so it is
    largest when the inflow is least; an incipient hole grows to its peak, holds, and stops at
    the repair."""
    hour = np.arange(48 * 4) / 2 % 24
    demand = 10_000 + 20_000 * np.exp(-(((hour - 12) / 3) ** 2))
    leak = leakdb.Leak(0, 0.1, True, 20, 60, 150)
    out = leakdb.leak_outflow(demand, [leak], np.array([50.0]), 30_000.0)
    assert np.all(out[:20] == 0) and np.all(out[150:] == 0)
    assert np.all(np.diff(out[20:61][hour[20:61] < 4]) > 0)  # growing through the first night
    night, noon = out[96 + 6], out[96 + 24]  # 03:00 and 12:00 of day 2, full hole
    assert night > 1.2 * noon
    p = 70 - 50 * ((demand[96 + 6] + night) / 30_000) ** 1.852
    assert night == pytest.approx(0.75 * np.pi * 0.05**2 * np.sqrt(2 * 9.81 * p) * 3600,
                                  rel=1e-3)


def test_leakdb_link_meters_carry_lose_or_cross(leakdb: ModuleType) -> None:
    """``--link``: from one seed, a pipe that carries part of the leaks' outflow and one that
    loses the same part differ by twice that part, only while a leak runs; a loop pipe's flow
    runs backwards about half the time."""
    def run(link: str) -> tuple[np.ndarray, list]:
        return leakdb.scenario(np.random.default_rng(7), 48 * 60, 2, link)

    (carries, leaks), (loses, _) = run("carries"), run("loses")
    assert leaks
    gap = carries - loses
    leaking = np.zeros(gap.size, dtype=bool)
    for lk in leaks:
        leaking[lk.start : lk.end] = True
    assert np.all(gap[~leaking] == pytest.approx(0, abs=2e-3)) and np.all(gap[leaking] > 0)
    assert 0.3 < float(np.mean(run("crosses")[0] < 0)) < 0.7


def test_a_repair_at_night_leaves_no_false_incident_in_the_season_after_it(
        leakdb: ModuleType, leak_eval: ModuleType) -> None:
    """Scenario 64 of the LeakDB-structured seed 1: leaks from days 74 and 182, the last
    repaired at 22:30 on day 327. The next night's D (the day's use above its night floor)
    counts 17.5 h of leak water in the day but none in the floor: nearly twice the usual D.
    Averaged into the week's D, it raised the D of the nights learnt after the repair, their
    scaling held the baseline down, and December's rise opened three false incidents (session
    15). The week's D now leaves out its largest and smallest night."""
    from meterd.analysis.hourly import Grid

    flow, truth = leakdb.scenarios(65, 1)
    leaks = truth[64]
    assert [round(lk.end / 48, 2) for lk in leaks] == [287.65, 327.94]
    grid = Grid(leakdb.T0, flow.shape[1], leakdb.STEP_S)
    settings = leak_eval.load_settings(None).model_copy(update={"step_s": leakdb.STEP_S})
    incidents = leak_eval.methods(settings)["meterd"](flow[64:], grid)
    assert incidents and leakdb.score(incidents, [leaks], grid).false == 0


def test_leakdb_scenarios_run_at_the_scale_of_leakdb_s_hanoi_network(leakdb: ModuleType
                                                                     ) -> None:
    """LeakDB's ``Hanoi_CMH.inp`` gives 5,539 m³/h of base demand, 70 m of static head and
    EPANET losses of at most 6.4 m at base demand: a leak-free inflow averages its base
    demand, and a 2 cm hole loses 27-31 m³/h from night to peak (session 15; the proxy had
    19,940 m³/h and 20-70 m of losses)."""
    assert sum(leakdb.HANOI_M3H) == pytest.approx(5539, abs=1)
    flow, truth = leakdb.scenarios(8, 3, days=28)
    clean = flow[[not t for t in truth]]
    assert clean.size and np.all(np.abs(clean.mean(axis=1) / 5539 - 1) < 0.2)
    base = sum(leakdb.HANOI_M3H)
    hole = leakdb.leak_outflow(np.linspace(0.4, 1.8, 48) * base,
                               [leakdb.Leak(30, 0.02, False, 0, 0, 48)],
                               np.asarray(leakdb.HANOI_LOSS_M), base)
    assert np.all((hole > 26) & (hole < 32)) and hole[0] > hole[-1]
