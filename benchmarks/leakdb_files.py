"""LeakDB's scenario folders on disk: read a network's flows and leaks, or write ours in that layout.

LeakDB (Vrachimis et al. 2018; https://github.com/KIOS-Research/LeakDB) stores each network
(``Hanoi_CMH``, ``Net1_CMH``) as ``Scenario-<id>/`` folders, as its generator writes them:

- ``Flows/Link_<id>.csv``: ``Timestamp,Value``, one row per 30-min reading, m³/h. LeakDB's own
  MNF algorithm reads ``Link_1``, the inflow (``createLabelsMNF.m``);
- ``Leaks/Leak_<node>_info.csv``: ``Description , Value`` rows, among them ``Leak Node``,
  ``Leak Diameter`` (m), ``Leak Type`` (abrupt or incipient), ``Leak Start``, ``Leak End`` (the
  last leaking reading) and ``Peak Time``;
- ``Labels.csv``: ``Timestamp,Label``, 1 while a leak runs. These are LeakDB's ground truth
  (its ``main.m`` scores against them), so where the generator's info files are known to
  differ from them the labels win: an abrupt leak's ``Leak Start`` is written one reading
  early, and a second leak at one node overwrites the first's info file (see
  :func:`_reconcile`).

Timestamps are naive and read as UTC. :func:`read_leakdb` checks that every flow file has the
same timestamps, evenly spaced, and counts the scenarios whose labels still disagree with
their leaks; it names the file and line of anything it cannot read. :func:`write_leakdb` writes
scenarios in the same layout, so the reader is tested on files and anyone can see the format
it expects.
"""

from __future__ import annotations

import csv
import sys
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeAlias

import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from meterd.analysis.hourly import BoolArray, FloatArray, true_runs

INFLOW = "Link_1"
Where: TypeAlias = Path | zipfile.Path  # a folder on disk or inside a zip file


@dataclass(frozen=True)
class Leak:
    """One scenario leak; times are bins of the scenario's readings, from its first."""

    node: int
    diameter_m: float
    incipient: bool
    start: int
    peak: int
    end: int


def leak_periods(leaks: list[Leak]) -> list[Leak]:
    """Overlapping leaks as one period, as LeakDB's labels mark them: its start, its end, the
    first leak's type and the largest hole. A second leak that starts while the first runs is
    not a new event: a method that keeps its incident open would miss it, one that flaps would
    find it."""
    out: list[Leak] = []
    for lk in sorted(leaks, key=lambda x: x.start):
        if out and lk.start < out[-1].end:
            last = out[-1]
            out[-1] = replace(last, diameter_m=float(np.fmax(last.diameter_m, lk.diameter_m)),
                              end=max(last.end, lk.end))
        else:
            out.append(lk)
    return out


def period_labels(leaks: list[Leak], n: int) -> NDArray[np.bool_]:
    """LeakDB's labels of one scenario: True on the ``n`` readings inside a leak period."""
    out = np.zeros(n, dtype=bool)
    for p in leak_periods(leaks):
        out[max(p.start, 0):p.end] = True
    return out


class LeakDBFormatError(ValueError):
    """A LeakDB file that does not hold what the layout says; the message names it."""


@dataclass(frozen=True)
class LeakDBData:
    """Scenarios read from disk: one flow row per scenario, its leaks in bins of ``step_s``."""

    ids: list[int]
    flow: FloatArray  # (scenarios, readings), m³/h
    truth: list[list[Leak]]
    t0_s: int
    step_s: int
    label_mismatches: int  # scenarios whose Labels.csv does not mark exactly their leak periods
    unlisted: int = 0  # labelled leak periods that no info file lists, of unknown size


def parse_ids(spec: str) -> list[int]:
    """``"1-500,733"`` → [1, ..., 500, 733]."""
    out: list[int] = []
    for part in spec.split(","):
        lo, _, hi = part.strip().partition("-")
        try:
            out.extend(range(int(lo), int(hi or lo) + 1))
        except ValueError:
            raise ValueError(f"scenario ids: {part!r} is not N or N-M") from None
    return out


def _timestamp(text: str, where: str) -> int:
    try:
        return int(datetime.fromisoformat(text.strip()).replace(tzinfo=UTC).timestamp())
    except ValueError:
        raise LeakDBFormatError(f"{where}: {text.strip()!r} is not a timestamp") from None


def open_root(path: Path) -> Where:
    """A network folder, or a zip file holding one (LeakDB ships zips): inside a zip, the
    first folder down its single-folder chain that holds ``Scenario-<id>`` folders."""
    if not (path.is_file() and zipfile.is_zipfile(path)):
        return path
    where: Where = zipfile.Path(path)
    while not scenario_ids(where):  # a zip's own folder: descend
        dirs = [p for p in where.iterdir() if p.is_dir()]
        if len(dirs) != 1:
            break
        where = dirs[0]
    return where


def scenario_ids(root: Where) -> list[int]:
    """The ids of the ``Scenario-<id>`` folders in ``root``, sorted."""
    if not root.is_dir():
        raise LeakDBFormatError(f"{root}: not a folder or a zip file")
    ids = [p.name.removeprefix("Scenario-") for p in root.iterdir()
           if p.is_dir() and p.name.startswith("Scenario-")]
    return sorted(int(i) for i in ids if i.isdigit())


def _rows(path: Where) -> list[list[str]]:
    """The data rows of a CSV file (header dropped)."""
    if not path.is_file():
        raise LeakDBFormatError(f"{path}: missing")
    with path.open(newline="") as f:
        return list(csv.reader(f))[1:]


def _series(path: Where) -> tuple[list[str], FloatArray]:
    """(timestamp texts, values) of a ``Timestamp,Value`` file; an empty value is NaN."""
    stamps, values = [], []
    for line, row in enumerate(_rows(path), start=2):
        if len(row) < 2:
            raise LeakDBFormatError(f"{path}:{line}: expected Timestamp,Value")
        stamps.append(row[0].strip())
        try:
            values.append(float(row[1]) if row[1].strip() else np.nan)
        except ValueError:
            raise LeakDBFormatError(f"{path}:{line}: {row[1].strip()!r} is not a number") from None
    return stamps, np.asarray(values)


def _grid(stamps: list[str], path: Where) -> tuple[int, int]:
    """(first timestamp, step) of evenly spaced timestamps."""
    if len(stamps) < 2:
        raise LeakDBFormatError(f"{path}: fewer than two readings")
    ts = np.array([_timestamp(s, f"{path}:{i + 2}") for i, s in enumerate(stamps)])
    steps = np.diff(ts)
    if steps[0] <= 0 or np.any(steps != steps[0]):
        bad = int(np.flatnonzero(steps != steps[0])[0]) + 3 if steps[0] > 0 else 3
        raise LeakDBFormatError(f"{path}:{bad}: readings are not evenly spaced")
    return int(ts[0]), int(steps[0])


def _leak(path: Where, t0_s: int, step_s: int) -> Leak:
    info = {row[0].strip(): row[1].strip() for row in _rows(path) if len(row) >= 2}
    need = ("Leak Node", "Leak Diameter", "Leak Type", "Leak Start", "Leak End", "Peak Time")
    if missing := [k for k in need if k not in info]:
        raise LeakDBFormatError(f"{path}: no {', '.join(missing)}")
    if info["Leak Type"] not in ("abrupt", "incipient"):
        raise LeakDBFormatError(f"{path}: Leak Type {info['Leak Type']!r}")

    def bin_of(key: str) -> int:
        return (_timestamp(info[key], f"{path}: {key}") - t0_s) // step_s

    node = info["Leak Node"]
    return Leak(node=int(node) if node.isdigit() else -1, diameter_m=float(info["Leak Diameter"]),
                incipient=info["Leak Type"] == "incipient", start=bin_of("Leak Start"),
                peak=bin_of("Peak Time"), end=bin_of("Leak End") + 1)


def _labels(path: Where, n: int) -> BoolArray | None:
    """The labels of a ``Labels.csv`` file (None if there is none)."""
    if not path.is_file():
        return None
    got = np.array([float(row[1]) > 0 for row in _rows(path) if len(row) >= 2], dtype=bool)
    if got.size != n:
        raise LeakDBFormatError(f"{path}: {got.size} labels for {n} readings")
    return got


def _abrupt_start(lk: Leak, label: BoolArray) -> Leak:
    """LeakDB's generator writes an abrupt leak's ``Leak Start`` one reading before the leak
    and its labels begin (``leakStarts = timeStamp[ST-1]`` in ``leakDataset.py``): when the
    labels rise just after it, the leak starts where they do."""
    s = lk.start
    if lk.incipient or s + 1 >= label.size or (s >= 0 and label[s]) or not label[s + 1]:
        return lk
    return replace(lk, start=s + 1, peak=max(lk.peak, s + 1))


def _unlisted(leaks: list[Leak], label: BoolArray) -> list[Leak]:
    """A leak for each labelled period no info file explains, from its first unexplained
    reading to the period's end, of unknown size (NaN) and scored as abrupt. LeakDB names a
    leak's info file by its node, so a second leak at one node overwrites the first's."""
    explained = period_labels(leaks, label.size)
    _, starts, stops = true_runs(label[None, :])
    out = []
    for a, b in zip(starts.tolist(), stops.tolist(), strict=True):
        if gaps := np.flatnonzero(~explained[a:b]).tolist():
            out.append(Leak(node=-1, diameter_m=np.nan, incipient=False, start=a + gaps[0],
                            peak=a + gaps[0], end=b))
    return out


def _reconcile(leaks: list[Leak], label: BoolArray | None) -> tuple[list[Leak], int, bool]:
    """(leaks as LeakDB's labels mark them, how many of them no info file lists, whether the
    labels still disagree with them). Without labels the info files stand as they are."""
    if label is None:
        return leaks, 0, False
    leaks = [_abrupt_start(lk, label) for lk in leaks]
    extra = _unlisted(leaks, label)
    leaks = leaks + extra
    return leaks, len(extra), not np.array_equal(period_labels(leaks, label.size), label)


def read_leakdb(root: Where, ids: Sequence[int], link: str = INFLOW, progress: bool = False
                ) -> LeakDBData:
    """Read scenarios ``ids`` of one LeakDB network folder ``root``: the flow of ``link`` and
    the leaks, their times as bins of the flow's own step (``progress``: a bar on stderr)."""
    rows, truth, mismatches, unlisted = [], [], 0, 0
    first: list[str] | None = None
    t0_s = step_s = 0
    for sid in tqdm(ids, desc="reading LeakDB", unit="scenario", disable=not progress):
        folder = root / f"Scenario-{sid}"
        path = folder / "Flows" / f"{link}.csv"
        stamps, values = _series(path)
        if first is None:
            first, (t0_s, step_s) = stamps, _grid(stamps, path)
        elif stamps != first:
            raise LeakDBFormatError(f"{path}: timestamps differ from Scenario-{ids[0]}'s")
        leaks, extra, differ = _reconcile([_leak(p, t0_s, step_s)
                                           for p in _infos(folder / "Leaks")],
                                          _labels(folder / "Labels.csv", values.size))
        unlisted += extra
        mismatches += differ
        rows.append(values)
        truth.append(leaks)
    if not rows:
        raise LeakDBFormatError(f"{root}: no scenarios asked for")
    return LeakDBData(list(ids), np.stack(rows), truth, t0_s, step_s, mismatches, unlisted)


def _infos(folder: Where) -> list[Where]:
    """The leak info files of a ``Leaks`` folder, by name (none if it is missing)."""
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if p.name.endswith("_info.csv")),
                  key=lambda p: p.name)


def _stamp(t0_s: int, step_s: int, i: int) -> str:
    return datetime.fromtimestamp(t0_s + i * step_s, UTC).strftime("%Y-%m-%d %H:%M:%S")


def write_leakdb(root: Path, flow: FloatArray, truth: list[list[Leak]], t0_s: int, step_s: int,
                 link: str = INFLOW) -> None:
    """Write one scenario folder per flow row (ids from 1), as LeakDB's generator lays them out,
    an abrupt leak's ``Leak Start`` one reading early included."""
    stamps = [_stamp(t0_s, step_s, i) for i in range(flow.shape[1])]
    for sid, (row, leaks) in enumerate(zip(flow, truth, strict=True), start=1):
        folder = root / f"Scenario-{sid}"
        (folder / "Flows").mkdir(parents=True, exist_ok=True)
        (folder / "Leaks").mkdir(exist_ok=True)
        with (folder / "Flows" / f"{link}.csv").open("w", newline="") as f:
            csv.writer(f).writerows([("Timestamp", "Value"), *zip(stamps, map(repr, row.tolist()),
                                                                  strict=True)])
        label = period_labels(leaks, flow.shape[1]).astype(int)
        with (folder / "Labels.csv").open("w", newline="") as f:
            csv.writer(f).writerows([("Timestamp", "Label"), *zip(stamps, label.tolist(),
                                                                  strict=True)])
        nodes: list[int] = []
        for lk in leaks:
            info = [("Description", "Value"), ("Leak Node", f"{lk.node}"),
                    ("Leak Area", repr(np.pi * lk.diameter_m**2 / 4)),
                    ("Leak Diameter", repr(lk.diameter_m)),
                    ("Leak Type", "incipient" if lk.incipient else "abrupt"),
                    ("Leak Start", _stamp(t0_s, step_s, lk.start - (not lk.incipient))),
                    ("Leak End", _stamp(t0_s, step_s, lk.end - 1)),
                    ("Peak Time", _stamp(t0_s, step_s, lk.peak))]
            # Two leaks at one node would share LeakDB's file name; a suffix keeps both.
            name = f"Leak_{lk.node}{'' if lk.node not in nodes else f'_{nodes.count(lk.node)}'}"
            nodes.append(lk.node)
            (folder / "Leaks" / f"{name}_info.csv").write_text("".join(f"{a} , {b}\n" for a, b in info))
