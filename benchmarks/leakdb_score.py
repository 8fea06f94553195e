"""LeakDB's own scores of a detection method: F1, true positive and negative rates, and SED.

LeakDB scores an algorithm by its labels, one per reading and scenario (1: "a leak runs"),
against the scenario's ``Labels.csv`` (``Scoring Function/scoring_algorithm.m`` in
KIOS-Research/LeakDB, read for the method only):

- F1 = 2 TP / (2 TP + FP + FN), TPR = TP / (TP + FN) and TNR = TN / (TN + FP), over every
  reading of every scenario;
- SED, the early-detection score: for each leak period, a window from its first labelled
  reading to ``EXTRA`` readings after its last. With ``Dt`` the readings from the window's start
  to the first alarm, the period scores 2 / (1 + exp(5 Dt / tw)) (1 for an alarm on its first
  reading, falling towards 0), where tw is the window's length less one, but only if the method
  keeps the alarm on for more than ``KEEP`` of the window from there; otherwise 0. SED is the
  sum of the scores over the number of periods.

The method's labels here are its incidents, each from its ``detected_at`` to its end (to the
end of the data while open): what an operator would have seen at each reading. An incident's
``start`` is an estimate made later, so labelling from it would score hindsight.

Two details of the MATLAB code are not copied: it shortens ``EXTRA`` for every later period
once one period ends near the data's end, and it misses a period that runs to the last reading.
Here each period gets its own window, cut at the data's end, and a period open at the end
ends there.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from meterd.analysis.hourly import true_runs
from meterd.analysis.incidents import Incident

BoolArray = NDArray[np.bool_]
EXTRA = 10  # readings after a period's end inside its detection window (tw_ex)
KEEP = 0.75  # share of the window after the first alarm that must be alarmed (SEDthr)


@dataclass(frozen=True)
class LeakDBScore:
    f1: float
    tpr: float
    tnr: float
    sed: float


def incident_labels(incidents: Iterable[Incident], n_rows: int, n_bins: int, t0_s: int,
                    step_s: int) -> BoolArray:
    """(rows, readings) labels: reading i (ending at ``t0_s + (i + 1) · step_s``) is 1 when an
    incident of its row (``meter`` = ``str(row)``) had been detected by its end and had not
    ended before its start."""
    out = np.zeros((n_rows, n_bins), dtype=bool)
    for inc in incidents:
        first = -(-(inc.detected_at - t0_s) // step_s) - 1  # the reading its detection ends
        last = n_bins if inc.end is None else -(-(inc.end - t0_s) // step_s)
        out[int(inc.meter), max(first, 0):max(last, 0)] = True
    return out


def _periods(row: BoolArray) -> list[tuple[int, int]]:
    """(first, last) labelled reading of each run of 1s."""
    _, starts, stops = true_runs(row[None])
    return list(zip(starts.tolist(), (stops - 1).tolist(), strict=True))


def _period_score(alarm: BoolArray, first: int, last: int) -> float:
    window = alarm[first:min(last + EXTRA, alarm.size - 1) + 1]
    hits = np.flatnonzero(window)
    if not hits.size or window[hits[0]:].mean() <= KEEP:
        return 0.0
    tw = max(window.size - 1, 1)
    return float(2.0 / (1.0 + np.exp(5.0 * hits[0] / tw)))


def leakdb_score(truth: BoolArray, alarm: BoolArray) -> LeakDBScore:
    """LeakDB's scores of the ``alarm`` labels against the ``truth`` labels, both (scenarios,
    readings); the rates are shares (0–1), not percentages."""
    tp = int(np.sum(truth & alarm))
    fp = int(np.sum(~truth & alarm))
    fn = int(np.sum(truth & ~alarm))
    tn = int(np.sum(~truth & ~alarm))
    scores = [_period_score(alarm[r], a, b) for r in range(truth.shape[0])
              for a, b in _periods(truth[r])]
    return LeakDBScore(f1=2 * tp / max(2 * tp + fp + fn, 1), tpr=tp / max(tp + fn, 1),
                       tnr=tn / max(tn + fp, 1), sed=float(np.mean(scores)) if scores else 0.0)
