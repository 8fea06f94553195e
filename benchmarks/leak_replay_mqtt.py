"""Leak benchmark replayed through MQTT and the real daemon, scored like ``leak_eval.py``.

Usage::

    .venv/bin/python benchmarks/leak_replay_mqtt.py [--split heldout|dev] [--onsets 8] [--limit N]

The held-out trials of ``leak_eval.py`` (and the clean full-year series of the same households, for
false incidents) go the way real meter data goes: every row of a flow matrix becomes one water meter
(``normally_zero`` left at its default, ``"auto"``) that publishes its cumulative register in
litres at the end of every bin (hourly here; any ``[leaks] step_s`` in general) over MQTT (QoS 1)
to a real Mosquitto; a real ``meterd run`` derives consumption and writes it to a real InfluxDB
1.x; then ``meterd leaks --json`` (the CLI, as a
subprocess) replays detection. Its incidents are scored exactly like the in-process method, and
both tables are printed with a check that the incidents are identical. ``MqttReplay(rates=True)``
publishes each observed bin's ``flow_m3h`` at the bin's start instead, as a flow sensor with no
register does.

Mapping (fixed so the numbers can be reproduced):
- Grid time 0 of ``leak_eval`` (1970-01-01, a Thursday, local midnight of the UTC-labelled
  DAIAD series) maps to 2015-01-01T00:00Z, also a Thursday; the site time zone is UTC, so hours
  of the day and of the week line up. Incident times are mapped back.
- Register reading ``b`` (time ``T0 + b h``) is the litres used in bins ``[0, b)``. A NaN bin in
  a run of two or more adds one litre: meterd leaves such a run unknown only because use happened
  in it whose hour is not known (a long interval with no use is known zeros).
- A NaN bin publishes nothing. The reading at the end of every observed bin is published, and the
  reading at its start when the bin before it is not observed: the NaN run between is then one
  interval longer than ``max_interval_s`` over two or more bins, which meterd leaves unknown.
- After a single NaN bin the observed bin's reading is published early, a quarter of a step into
  the bin: its interval is then 1.25 steps, within ``max_interval_s``, and fills that bin only, as
  a late meter's reading does. Where neither works (a single NaN bin right after such an early
  reading, or a ``max_interval_s`` that does not allow it), the next bin is lost with the run,
  nothing is invented, and the run is counted and reported.
- ``meterd leaks --start T0`` fetches ``history_days`` of (empty) history before ``T0``; the
  detectors are causal, so leading empty bins change nothing (checked by comparing incidents).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
from leak_eval import Method, make_trials, methods, score, split, table, trial_args
from numpy.typing import NDArray
from tqdm import tqdm

from meterd.analysis.hourly import FloatArray, Grid
from meterd.analysis.incidents import Incident
from meterd.config import load_config
from meterd.fields import CONSUMPTION_MEASUREMENT
from meterd.leaks.config import LeaksConfig
from meterd.leaks.daiad import read_daiad
from meterd.leaks.engine import MeterInfo
from meterd.leaks.io import fetch_flow
from meterd.sinks.influx.query import InfluxQL
from simulators.local_servers import InfluxServer, MosquittoServer

T0_REAL = 1_420_070_400  # 2015-01-01T00:00Z, a Thursday like the epoch
REPO = Path(__file__).resolve().parents[1]


def source_digest(package: Path) -> str:
    """SHA-256 over a package's ``.py`` files (path and content), to pin the code that ran."""
    h = hashlib.sha256()
    for f in sorted(package.rglob("*.py")):
        h.update(str(f.relative_to(package)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


# Others edit meterd/ while this runs; the daemon and CLI subprocesses run a snapshot taken now,
# right after this process imported it, so both paths run the same detector code.
LOADED_DIGEST = source_digest(REPO / "meterd")
BoolArray = NDArray[np.bool_]


EARLY = 0.25  # steps into its bin at which a reading after a single NaN bin is published


def publish_plan(observed: BoolArray, gap_bins: float
                 ) -> tuple[NDArray[np.float64], NDArray[np.int64], int]:
    """Register readings one meter publishes so meterd rebuilds exactly the observed bins.

    Parameters
    ----------
    observed : array of bool, shape (n,)
        Which bins of the flow row are known (not NaN).
    gap_bins : float
        ``max_interval_s / step_s``: longer intervals over two or more bins are unknown to
        meterd's ``bin_consumption``; shorter ones fill the bin that holds their end.

    Returns
    -------
    (times, boundaries, unreproducible)
        Reading times in steps after ``T0`` (sorted), the bin boundary whose register value each
        reading carries, and the NaN runs no choice of readings keeps unknown while keeping the
        next bin (the next bin is then lost with the run).
    """
    times: list[float] = []
    bounds: list[int] = []
    bad = 0
    last_early = False
    prev = -1
    for i in np.flatnonzero(observed).tolist():
        run = i - prev - 1
        early = False
        if prev < 0 or (run >= 2 and run > gap_bins):
            times.append(float(i))
            bounds.append(i)
        elif run == 1 and not last_early and gap_bins >= 1 + EARLY:
            early = True
        elif run > 0:
            bad += 1
        times.append(i + EARLY if early else float(i + 1))
        bounds.append(i + 1)
        last_early, prev = early, i
    return np.array(times), np.array(bounds, dtype=np.int64), bad


def register_litres(flow: FloatArray, step_h: float = 1.0) -> FloatArray:
    """Cumulative litres at each bin boundary (length n + 1) of a flow row in m³/h over bins of
    ``step_h`` hours; a NaN run of 2+ bins adds 1 L a bin."""
    nan = np.isnan(flow)
    lone = nan & ~np.r_[False, nan[:-1]] & ~np.r_[nan[1:], False]
    litres = np.round(np.where(nan, np.where(lone, 0.0, 1.0), flow * 1000.0 * step_h), 6)
    return np.round(np.concatenate([[0.0], np.cumsum(litres)]), 6)


def _litre_text(v: float) -> int | float:
    return int(v) if v == int(v) else v


@dataclass
class ReplayStats:
    """What one replay did and how long each stage took (seconds)."""

    meters: int = 0
    span: str = ""  # the real times the readings cover, ISO
    readings: int = 0
    points: int = 0
    unreproducible_runs: int = 0
    nan_mismatch_bins: int = 0
    max_abs_flow_diff_m3h: float = 0.0
    daemon_log_problems: list[str] = field(default_factory=list)  # WARNING/ERROR lines of meterd
    seconds: dict[str, float] = field(default_factory=dict)


class MqttReplay:
    """A ``leak_eval`` :data:`Method` that replays each flow matrix through MQTT and the daemon.

    Every call starts its own InfluxDB, Mosquitto and ``meterd run`` in a temporary directory,
    so calls are independent; ``stats`` holds one :class:`ReplayStats` per call.
    """

    def __init__(self, workdir: Path | None = None, progress: bool = True,
                 settings: LeaksConfig | None = None, code_dir: Path | None = None,
                 rates: bool = False, origin_s: int = T0_REAL) -> None:
        self.workdir = workdir
        self.origin_s = origin_s  # the real time of the grid's first bin
        self.rates = rates  # publish flow_m3h per bin (a flow sensor) instead of a register
        self.code_dir = code_dir or REPO
        self.progress = progress
        self.settings = settings or LeaksConfig()
        if self.settings != LeaksConfig(step_s=self.settings.step_s):
            raise ValueError("the replay's meterd.toml carries only [leaks] step_s; other "
                             "[leaks] settings would differ between the two paths")
        self.stats: list[ReplayStats] = []

    def __call__(self, flow: FloatArray, grid: Grid) -> list[Incident]:
        if grid.step_s != self.settings.step_s:
            raise ValueError(f"grid step {grid.step_s} s != [leaks] step_s {self.settings.step_s}")
        with tempfile.TemporaryDirectory(prefix="meterd-replay-", dir=self.workdir) as tmp:
            real = Grid(self.origin_s, grid.n, grid.step_s)
            stats = ReplayStats(meters=flow.shape[0],
                                span=f"{_iso(real.t0_s)} to {_iso(_ts(real, real.n))}")
            self.stats.append(stats)
            return _replay(Path(tmp), flow, grid, real, self.settings, stats, self.progress,
                           self.code_dir, self.rates)


def _ts(real: Grid, steps: float) -> int:
    return real.t0_s + round(steps * real.step_s)


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def _meter_id(row: int) -> str:
    return f"hh{row:05d}"


def _config(tmp: Path, influx: InfluxServer, broker: MosquittoServer, n_meters: int,
            step_s: int) -> Path:
    meters = "".join(
        f'[[meters]]\nid = "{_meter_id(r)}"\nkind = "water"\n'
        f'mqtt_topic = "replay/water/{_meter_id(r)}"\nmqtt_scale = {{ volume_m3 = 0.001 }}\n'
        for r in range(n_meters))
    cfg = tmp / "meterd.toml"
    cfg.write_text(f"""[site]
timezone = "UTC"
[influxdb]
url = "{influx.url}"
database = "replay"
flush_interval_s = 0.2
[spool]
dir = "{tmp / 'spool'}"
[metrics]
enabled = false
[leaks]
step_s = {step_s}
[mqtt]
url = "{broker.url}"
client_id = "meterd-replay-{uuid.uuid4().hex[:8]}"
{meters}""")
    return cfg


Messages = tuple[list[tuple[str, str]], list[tuple[str, str]]]


def _messages(flow: FloatArray, grid: Grid, settings: LeaksConfig, stats: ReplayStats
              ) -> Messages:
    """(first reading of each meter, every later reading in time order) as (topic, payload)."""
    max_iv = settings.max_interval_s or 1.5 * grid.step_s
    per_meter = []
    for r in range(flow.shape[0]):
        times, bounds, bad = publish_plan(~np.isnan(flow[r]), max_iv / grid.step_s)
        stats.unreproducible_runs += bad
        reg = register_litres(flow[r], grid.step_h)
        per_meter.append([(t, f"replay/water/{_meter_id(r)}",
                           json.dumps({"ts": _ts(grid, t), "volume_m3": _litre_text(reg[b])}))
                          for t, b in zip(times.tolist(), bounds.tolist(), strict=True)])
    first, rest = _in_time_order(per_meter)
    stats.readings = len(first) + len(rest)
    stats.points = len(rest)  # every reading after a meter's first yields one consumption point
    return first, rest


def _rate_messages(flow: FloatArray, grid: Grid, stats: ReplayStats) -> Messages:
    """A flow sensor's readings: ``flow_m3h`` of every observed bin, stamped at its start."""
    first, rest = _in_time_order(
        [[(float(i), f"replay/water/{_meter_id(r)}",
           json.dumps({"ts": _ts(grid, i), "flow_m3h": float(flow[r, i])}))
          for i in np.flatnonzero(~np.isnan(flow[r])).tolist()] for r in range(flow.shape[0])])
    stats.readings = stats.points = len(first) + len(rest)
    return first, rest


def _in_time_order(per_meter: list[list[tuple[float, str, str]]]) -> Messages:
    """Each meter's first (time, topic, payload) apart, then all later ones in time order, as
    (topic, payload): a campus publishes hour by hour; the stable sort keeps each meter's order."""
    first = [msgs[0][1:] for msgs in per_meter if msgs]
    rest = sorted((m for msgs in per_meter for m in msgs[1:]), key=lambda m: m[0])
    return first, [m[1:] for m in rest]


def _count(influx: InfluxServer, select: str) -> int:
    try:
        series = influx.query(f"SELECT {select}", db="replay")
    except Exception:  # the database is created by meterd's first write
        return -1
    return int(series[0]["values"][0][1]) if series else 0  # type: ignore[index]


class _Publisher:
    """A gateway: paho at QoS 1 with a unique client id, a bounded number of unacked messages."""

    def __init__(self, port: int, window: int = 2000) -> None:
        self.acked = 0
        self.window = window
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=f"replay-gw-{uuid.uuid4().hex[:8]}")
        self.client.max_inflight_messages_set(window)
        self.client.on_publish = self._on_publish
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_publish(self, *_args: object) -> None:
        self.acked += 1

    def publish(self, msgs: list[tuple[str, str]], bar: tqdm | None = None) -> None:
        sent = self.acked
        for topic, body in msgs:
            while sent - self.acked >= self.window:
                time.sleep(0.002)
            self.client.publish(topic, body, qos=1)
            sent += 1
            if bar is not None:
                bar.update(1)
        while self.acked < sent:
            time.sleep(0.01)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _wait(cond: Callable[[], int], target: int, timeout_s: float, what: str,
          daemon: subprocess.Popen[bytes], bar: tqdm | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while (n := cond()) < target:
        if bar is not None:
            bar.update(max(n, 0) - bar.n)
        if daemon.poll() is not None:
            raise RuntimeError(f"meterd run exited ({daemon.returncode}) while waiting for {what}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: {n} of {target} after {timeout_s:.0f} s")
        time.sleep(0.5)
    if bar is not None:
        bar.update(target - bar.n)


def _meterd(code_dir: Path, *args: str) -> dict[str, Any]:
    """Popen/run arguments for ``meterd ARGS`` importing meterd from ``code_dir``."""
    env = {**os.environ, "PYTHONPATH": str(code_dir)}
    return {"args": [sys.executable, "-m", "meterd", *args], "cwd": code_dir, "env": env}


def _replay(tmp: Path, flow: FloatArray, grid: Grid, real: Grid, settings: LeaksConfig,
            stats: ReplayStats, progress: bool, code_dir: Path, rates: bool = False
            ) -> list[Incident]:
    """Replay ``flow`` with bin 0 at ``real``'s start; incidents come back in ``grid`` time."""
    (tmp / "influxd").mkdir()
    (tmp / "mosquitto").mkdir()
    t_start = time.monotonic()
    with InfluxServer(tmp / "influxd") as influx, MosquittoServer(tmp / "mosquitto") as broker:
        cfg = _config(tmp, influx, broker, flow.shape[0], grid.step_s)
        first, rest = (_rate_messages(flow, real, stats) if rates
                       else _messages(flow, real, settings, stats))
        with (tmp / "meterd.log").open("ab") as log:
            daemon = subprocess.Popen(**_meterd(code_dir, "run", "-c", str(cfg)), stdout=log,
                                      stderr=subprocess.STDOUT)
        try:
            _ingest(influx, broker, daemon, first, rest, stats, progress, rates)
        finally:
            daemon.send_signal(signal.SIGTERM)
            rc = daemon.wait(120)
        log_text = (tmp / "meterd.log").read_text(errors="replace")
        stats.daemon_log_problems = [ln for ln in log_text.splitlines()
                                     if "WARNING" in ln or "ERROR" in ln or "Traceback" in ln]
        if rc != 0:
            raise RuntimeError(f"meterd run exited {rc}:\n{log_text[-3000:]}")
        t_cli = time.monotonic()
        incidents = _leaks_cli(cfg, grid, real, code_dir)
        stats.seconds["meterd leaks"] = time.monotonic() - t_cli
        _check_flow(cfg, flow, real, settings, stats)
    stats.seconds["total"] = time.monotonic() - t_start
    return incidents


def _ingest(influx: InfluxServer, broker: MosquittoServer, daemon: subprocess.Popen[bytes],
            first: list[tuple[str, str]], rest: list[tuple[str, str]], stats: ReplayStats,
            progress: bool, rates: bool = False) -> None:
    field = "flow_m3h" if rates else "volume_m3"
    points = "count(flow_m3h) FROM water" if rates else (
        f"count(volume_m3) FROM {CONSUMPTION_MEASUREMENT}")
    gw = _Publisher(broker.port)
    try:
        t0 = time.monotonic()
        # meterd subscribes in chunks after it connects; a meter's first reading is harmless to
        # repeat (same point; the deriver ignores a non-newer reading), so it proves the subscription.
        for _ in range(60):
            gw.publish(first)
            try:
                _wait(lambda: _count(influx, f"count({field}) FROM water"), len(first), 3,
                      "first readings", daemon)
                break
            except TimeoutError:
                continue
        stats.seconds["subscribe"] = time.monotonic() - t0
        t1 = time.monotonic()
        with tqdm(total=len(rest), desc="publish", unit="msg", disable=not progress) as bar:
            gw.publish(rest, bar)
        stats.seconds["publish"] = time.monotonic() - t1
        with tqdm(total=stats.points, desc="in InfluxDB", unit="pt", disable=not progress) as bar:
            _wait(lambda: _count(influx, points), stats.points, 120 + stats.points / 500,
                  "points", daemon, bar)
        stats.seconds["publish + ingest"] = time.monotonic() - t1
    finally:
        gw.close()


def _leaks_cli(cfg: Path, grid: Grid, real: Grid, code_dir: Path) -> list[Incident]:
    """``meterd leaks --json`` over the ``real`` span, incidents mapped back to rows and grid time."""
    end = _ts(real, real.n)
    out = subprocess.run(**_meterd(code_dir, "leaks", "-c", str(cfg), "--start", _iso(real.t0_s),
                                   "--end", _iso(end), "--json"),
                         capture_output=True, text=True, check=False, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"meterd leaks exited {out.returncode}: {out.stderr.strip()}")
    return [_incident(d, grid.t0_s - real.t0_s) for d in json.loads(out.stdout)]


def _back(iso: str | None, shift_s: int) -> int | None:
    if iso is None:
        return None
    return int(datetime.fromisoformat(iso).timestamp()) + shift_s


def _incident(d: dict[str, Any], shift_s: int) -> Incident:
    start, detected = _back(d["start"], shift_s), _back(d["detected_at"], shift_s)
    assert start is not None and detected is not None
    return Incident(meter=str(int(d["meter"].removeprefix("hh"))), type=d["type"], start=start,
                    detected_at=detected, end=_back(d["end"], shift_s), rate_m3h=d["rate_m3h"],
                    volume_m3=d["volume_m3"], cost=d["cost"], detectors=d["detectors"])


def _check_flow(cfg_path: Path, flow: FloatArray, real: Grid, settings: LeaksConfig,
                stats: ReplayStats) -> None:
    """Fetch the flow grid back the way ``meterd leaks`` does and compare it with the input."""
    cfg = load_config(cfg_path)
    meters = [MeterInfo(_meter_id(r), normally_zero=None) for r in range(flow.shape[0])]
    back = fetch_flow(InfluxQL(cfg.influxdb).query, meters, real, settings.max_interval_s)
    stats.nan_mismatch_bins = int(np.sum(np.isnan(back) != np.isnan(flow)))
    both = ~np.isnan(back) & ~np.isnan(flow)
    stats.max_abs_flow_diff_m3h = float(np.max(np.abs(back[both] - flow[both]), initial=0.0))


def same_incidents(a: list[Incident], b: list[Incident], rel: float = 1e-9) -> list[str]:
    """Differences between two incident lists (empty when identical up to float rounding)."""
    def key(i: Incident) -> tuple[int, str, int, int, int]:
        return (int(i.meter), i.type, i.start, i.detected_at, -1 if i.end is None else i.end)
    xs, ys = sorted(a, key=key), sorted(b, key=key)
    diffs = [f"{len(xs)} in-process vs {len(ys)} replayed incidents"] if len(xs) != len(ys) else []
    for x, y in zip(xs, ys, strict=False):
        if key(x) != key(y) or x.detectors != y.detectors:
            diffs.append(f"in-process {x} != replayed {y}")
        elif not all(math.isclose(p, q, rel_tol=rel, abs_tol=1e-12) for p, q in
                     ((x.rate_m3h, y.rate_m3h), (x.volume_m3, y.volume_m3), (x.cost, y.cost))):
            diffs.append(f"amounts differ: in-process {x} vs replayed {y}")
    return diffs


class _Recorder:
    """Wrap a Method and keep what each call returned, to compare the two paths call by call."""

    def __init__(self, method: Method) -> None:
        self.method = method
        self.calls: list[list[Incident]] = []

    def __call__(self, flow: FloatArray, grid: Grid) -> list[Incident]:
        out = self.method(flow, grid)
        self.calls.append(out)
        return out


def snapshot_meterd(into: Path) -> Path:
    """Copy ``meterd/`` as this process imported it into ``into``; fail if it changed since."""
    shutil.copytree(REPO / "meterd", into / "meterd", ignore=shutil.ignore_patterns("__pycache__"))
    if source_digest(into / "meterd") != LOADED_DIGEST:
        raise RuntimeError("meterd/ changed between this process importing it and the snapshot "
                           "(someone is editing it); run again")
    return into


def run(zip_path: Path, which: str, seed: int, n_onsets: int, limit: int | None,
        progress: bool = True, ramp_h: float = 0.0
        ) -> tuple[dict[str, dict[str, object]], list[str], MqttReplay]:
    """Score in-process meterd and the MQTT replay on the same trials; also list differences."""
    with tempfile.TemporaryDirectory(prefix="meterd-code-") as code:
        return _run(zip_path, which, seed, n_onsets, limit, progress, snapshot_meterd(Path(code)),
                    ramp_h)


def _run(zip_path: Path, which: str, seed: int, n_onsets: int, limit: int | None,
         progress: bool, code_dir: Path, ramp_h: float = 0.0
         ) -> tuple[dict[str, dict[str, object]], list[str], MqttReplay]:
    names, _, flow = read_daiad(zip_path)
    rows = split(names, which)
    trials, truth = make_trials(flow, rows, n_onsets, np.random.default_rng(seed), ramp_h)
    if limit is not None:
        trials, truth = trials[:limit], [t for t in truth if t["row"] < limit]
        rows = rows[: max(1, math.ceil(limit / n_onsets))]  # the households of those trials
    settings = LeaksConfig()
    local = _Recorder(methods(settings)["meterd"])
    replay = MqttReplay(progress=progress, settings=settings, code_dir=code_dir)
    remote = _Recorder(replay)
    results = {"meterd in-process": score(local, flow, rows, trials, truth),
               "meterd via MQTT + daemon + CLI": score(remote, flow, rows, trials, truth)}
    diffs = [d for a, b in zip(local.calls, remote.calls, strict=True) for d in same_incidents(a, b)]
    return results, diffs, replay


def main(argv: list[str] | None = None) -> int:
    ap = trial_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    ap.add_argument("--limit", type=int, default=None,
                    help="first N trials only, and the clean series of the first ceil(N / onsets) households")
    args = ap.parse_args(argv)
    if not args.zip.exists():
        print(f"DAIAD data not found at {args.zip}", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    results, diffs, replay = run(args.zip, args.split, args.seed, args.onsets, args.limit,
                                 ramp_h=args.ramp_days * 24)
    wall = time.monotonic() - t0
    n = len(results["meterd in-process"]["hits"])  # type: ignore[arg-type]
    print(f"\nDAIAD trial A, {args.split} half, {n} injected leaks/bursts, seed {args.seed}\n")
    print(table(results))
    print()
    for what, s in zip(("trials", "clean series"), replay.stats, strict=False):
        secs = ", ".join(f"{k} {v:.1f} s" for k, v in s.seconds.items())
        print(f"- {what}: {s.meters} meters, {s.readings} readings, {s.points} consumption points; "
              f"flow read back: {s.nan_mismatch_bins} NaN-pattern mismatches, max |diff| "
              f"{s.max_abs_flow_diff_m3h:.3g} m³/h, {s.unreproducible_runs} unreproducible NaN runs; "
              f"{secs}; {len(s.daemon_log_problems)} warning/error lines in the daemon log")
        for line in s.daemon_log_problems[:5]:
            print(f"    {line}")
    print(f"- wall time of the whole run {wall:.1f} s")
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, check=False).stdout.strip()
    print(f"- meterd code: HEAD {head}, meterd/ sources sha256 {LOADED_DIGEST[:12]} (both paths)")
    if source_digest(REPO / "meterd") != LOADED_DIGEST:
        print("- meterd/ changed during the run; both paths ran the snapshot taken at the start")
    if diffs:
        print(f"\nINCIDENTS DIFFER ({len(diffs)}):")
        print("\n".join(f"  {d}" for d in diffs[:40]))
        return 1
    print("\nIncidents identical (meter, type, start, detected_at, end, detectors; amounts to 1e-9).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
