"""The leak benchmark replayed through real mosquitto, ``meterd run``, influxd and ``meterd leaks``.

Four held-out trials (and one household's clean year) go through MQTT as hourly litre registers;
the incidents ``meterd leaks --json`` reports must be those of the in-process detectors, and the
injected leaks must be found. The publishing plan is also checked on its own: replaying its
readings through meterd's binning gives back exactly the bins that were known.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from meterd.analysis.hourly import Grid, bin_consumption
from meterd.leaks.config import LeaksConfig, NightFlowSettings

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def replay() -> ModuleType:
    # The benchmarks are scripts that import their sibling leak_eval.py by name.
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return importlib.import_module("leak_replay_mqtt")


def _rebuild(replay: ModuleType, flow: np.ndarray, gap_bins: float) -> tuple[np.ndarray, int]:
    """What meterd's counter difference and binning make of the planned readings of one row."""
    times, bounds, bad = replay.publish_plan(~np.isnan(flow), gap_bins)
    reg = replay.register_litres(flow)[bounds] / 1000
    grid = Grid(0, flow.size)
    back = bin_consumption(grid, times[1:] * 3600.0, np.diff(reg), np.diff(times) * 3600.0,
                           gap_bins * 3600)
    return back, bad


@pytest.mark.parametrize("nan_run", [1, 2, 3, 7])
def test_plan_keeps_known_bins_and_gaps(replay, nan_run):
    rng = np.random.default_rng(nan_run)
    flow = rng.integers(0, 30, 60) / 1000.0
    flow[:3] = np.nan  # no reading before the first known bin
    flow[20 : 20 + nan_run] = np.nan
    flow[40] = np.nan  # a single missed bin: the next reading comes early
    flow[-2:] = np.nan
    back, bad = _rebuild(replay, flow, gap_bins=1.5)
    assert bad == 0
    np.testing.assert_array_equal(np.isnan(back), np.isnan(flow))
    np.testing.assert_allclose(back, flow, rtol=0, atol=1e-12)


def test_plan_counts_a_run_no_reading_set_can_keep(replay):
    flow = np.full(10, 0.005)
    flow[4] = flow[6] = np.nan  # the reading after bin 4 comes early, so bin 6 cannot be kept
    back, bad = _rebuild(replay, flow, gap_bins=1.5)
    assert bad == 1
    assert np.isnan(back[6:8]).all()  # the bin after the run is lost, nothing is invented
    np.testing.assert_allclose(back[:4], flow[:4])
    np.testing.assert_allclose(back[8:], flow[8:])


def test_replayed_incidents_equal_in_process(replay, daiad_zip):
    results, diffs, mqtt = replay.run(daiad_zip, "heldout", 42, 8, limit=4, progress=False)
    assert diffs == []
    hits = results["meterd via MQTT + daemon + CLI"]["hits"]
    assert len(hits) == 4
    assert sum(h[2] is not None for h in hits) >= 3  # injected leaks and bursts are found
    assert results["meterd via MQTT + daemon + CLI"]["hits"] == results["meterd in-process"]["hits"]
    for s in mqtt.stats:  # the register -> consumption -> flow path gives the flows back
        assert s.points > 1000 and s.nan_mismatch_bins == 0 and s.unreproducible_runs == 0
        assert s.max_abs_flow_diff_m3h < 1e-9


@pytest.mark.parametrize("rates", [False, True])
def test_half_hourly_meters_replay_like_in_process(replay, rates):
    """LeakDB's step is 30 minutes. Never-zero meters with 5 % Gaussian noise read every half
    hour (``leak_eval_noise.py --step-min 30``), one with a 40 L/h leak, go through MQTT, the
    daemon and ``meterd leaks`` with ``[leaks] step_s = 1800``: the same incidents as in-process,
    and the leak is found. Published as litre registers, or (``rates``) as a flow sensor's
    ``flow_m3h`` alone."""
    noise = importlib.import_module("leak_eval_noise")
    settings = LeaksConfig(step_s=1800)
    flow = noise.noisy_meters("Gaussian 5 %", 3, 56, seed=3, per_hour=2)
    onset = (40 * 24 + 10) * 2
    flow[0, onset:] = np.round(flow[0, onset:] + 0.04, 3)
    grid = Grid(0, flow.shape[1], 1800)  # epoch 0 and the replay's 2015-01-01 are both Thursdays
    local = replay.methods(settings)["meterd"](flow, grid)
    mqtt = replay.MqttReplay(progress=False, settings=settings, rates=rates)
    remote = mqtt(flow, grid)
    assert replay.same_incidents(local, remote) == []
    found = [i for i in remote if i.meter == "0" and i.detected_at > onset * 1800]
    assert found and found[0].detected_at <= (onset + 2 * 48) * 1800
    (stats,) = mqtt.stats
    assert stats.nan_mismatch_bins == 0 and stats.max_abs_flow_diff_m3h < 1e-9


def test_the_replay_refuses_settings_its_config_does_not_carry(replay):
    with pytest.raises(ValueError, match="step_s"):
        replay.MqttReplay(settings=LeaksConfig(night=NightFlowSettings(k_mad=2.0)))
