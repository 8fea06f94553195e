"""The scheduled leak job: fetch, detect, and report each incident once, across restarts.

State lives in ``state_dir/leaks.sqlite`` (one transaction per run), so open incidents survive a
restart and an incident already reported is never reported again.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from meterd.analysis.hourly import Grid, local_calendar
from meterd.analysis.incidents import QUALITY_TYPES, Incident
from meterd.config import Config
from meterd.leaks.config import leaks_config
from meterd.leaks.engine import detect
from meterd.leaks.io import Query, fetch_flow, incident_lines, meter_tags, water_meters

SCHEMA = """CREATE TABLE IF NOT EXISTS incidents (
  id INTEGER PRIMARY KEY, meter TEXT NOT NULL, quality INTEGER NOT NULL,
  open INTEGER NOT NULL, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (id INTEGER PRIMARY KEY CHECK (id = 1), last_s INTEGER);"""


def break_ordinals(cfg: Config) -> list[tuple[int, int]]:
    return [(a.toordinal(), b.toordinal()) for a, b in cfg.calendar.breaks]


def grid_until(now_s: int, step_s: int, history_days: int) -> Grid:
    """The complete bins of the last ``history_days`` before ``now_s``."""
    end = now_s // step_s * step_s
    n = history_days * 86400 // step_s
    return Grid(end - n * step_s, n, step_s)


class LeakJob:
    """Run leak detection for ``cfg`` on demand; the daemon calls :meth:`run_once` on a schedule.

    Parameters
    ----------
    cfg : Config
        The whole config (meters, ``[leaks]``, ``[site]``, ``[calendar]``, ``[tariffs]``).
    query : callable
        ``query(influxql) -> list of series dicts`` (``InfluxQL(cfg.influxdb).query``).
    write_lines : callable
        Receives line protocol of incidents opened, grown or closed (the spool's append).
    state_dir : Path
        Where ``leaks.sqlite`` keeps the incidents between runs.
    """

    def __init__(self, cfg: Config, query: Query, write_lines: Callable[[list[str]], None],
                 state_dir: Path) -> None:
        self.cfg = cfg
        self.settings = leaks_config(cfg)
        self.query = query
        self.write_lines = write_lines
        Path(state_dir).mkdir(parents=True, exist_ok=True)
        # The daemon creates the job on its event loop's thread and runs it in a worker thread
        # (asyncio.to_thread), so the connection may not be tied to its creator; the lock keeps
        # any two calls from using it at once.
        self.db = sqlite3.connect(Path(state_dir) / "leaks.sqlite", check_same_thread=False)
        self._lock = threading.Lock()
        self.db.executescript(SCHEMA)
        self.meters = water_meters(cfg)
        self.tags = meter_tags(cfg)

    @property
    def interval_s(self) -> int:
        return self.settings.interval_s

    def open_incidents(self) -> list[Incident]:
        with self._lock:
            return [inc for _rid, inc in self._stored_open().values()]

    def _stored_open(self) -> dict[tuple[str, bool], tuple[int, Incident]]:
        """Open incidents by (meter, data quality?), with their row ids, in id order."""
        return {(meter, bool(quality)): (rid, Incident(**json.loads(doc)))
                for rid, meter, quality, doc in self.db.execute(
                    "SELECT id, meter, quality, doc FROM incidents WHERE open = 1 ORDER BY id")}

    def run_once(self, now: datetime) -> list[Incident]:
        """Detect up to ``now``; return incidents opened or closed by this run (each once)."""
        with self._lock:
            return self._run(now)

    def _run(self, now: datetime) -> list[Incident]:
        now_s = int(now.timestamp())
        s = self.settings
        stored = self._stored_open()
        grid = grid_until(now_s, s.step_s, self._history_days(now_s, stored))
        row = self.db.execute("SELECT last_s FROM runs WHERE id = 1").fetchone()
        # The first run ever has no last run: what it finds still open is a leak running now,
        # however long ago it began, and what closed before it is history.
        last_s = row[0] if row else None
        # The bins the last run read completely were counted then.
        new_from = None if last_s is None else last_s // s.step_s * s.step_s
        flow = fetch_flow(self.query, self.meters, grid, s.max_interval_s, new_from_s=new_from)
        cal = local_calendar(grid, self.cfg.site.timezone)
        found = detect(flow, grid, cal, self.meters, s, break_ordinals(self.cfg),
                       self.cfg.tariffs.water_per_m3)
        changed, events = self._reconcile(found, stored, last_s, now_s)
        if changed:
            self.write_lines(incident_lines(changed, s.measurement, self.tags))
        # State is committed only after the lines were accepted: a failed write is retried,
        # and rewriting the same point is idempotent in InfluxDB.
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO runs (id, last_s) VALUES (1, ?)", (now_s,))
            for rid, inc in self._pending:
                doc = json.dumps(inc.to_dict())
                if rid is None:
                    self.db.execute("INSERT INTO incidents (meter, quality, open, doc) "
                                    "VALUES (?, ?, ?, ?)",
                                    (inc.meter, inc.type in QUALITY_TYPES, inc.end is None, doc))
                else:
                    self.db.execute("UPDATE incidents SET open = ?, doc = ? WHERE id = ?",
                                    (inc.end is None, doc, rid))
        return events

    def _history_days(self, now_s: int,
                      stored: dict[tuple[str, bool], tuple[int, Incident]]) -> int:
        """``history_days``, or more while an incident is open: enough to hold ``history_days``
        before its start. The detectors then still see the leak against the meter's state before
        it, as when they first reported it, instead of learning it as normal once it has outlived
        the window (a zone's mains leak was closed 36 days after its onset)."""
        s = self.settings
        oldest = min((inc.start for _rid, inc in stored.values()), default=now_s)
        need = -(-(now_s - oldest) // 86400) + s.history_days
        return int(max(s.history_days, min(need, s.max_history_days)))

    def _reconcile(self, found: list[Incident],
                   stored: dict[tuple[str, bool], tuple[int, Incident]], last_s: int | None,
                   now_s: int) -> tuple[list[Incident], list[Incident]]:
        """Match detections to the stored open incidents: update them, add only new ones (those
        detected since ``last_s``, or on a first run, None, those still open)."""
        self._pending: list[tuple[int | None, Incident]] = []
        changed: list[Incident] = []
        events: list[Incident] = []
        seen: set[tuple[str, bool]] = set()
        for inc in found:
            key = (inc.meter, inc.type in QUALITY_TYPES)
            if key in stored and key not in seen:
                rid, old = stored[key]
                if inc.end is not None and inc.end <= old.detected_at:
                    continue  # an earlier episode still inside the history window
                seen.add(key)
                old.rate_m3h, old.volume_m3, old.cost = inc.rate_m3h, inc.volume_m3, inc.cost
                old.detectors = sorted(set(old.detectors) | set(inc.detectors))
                old.end = inc.end
                self._pending.append((rid, old))
                changed.append(old)
                if old.end is not None:
                    events.append(old)
            elif ((key not in stored or key in seen)  # in seen: a new one after it closed
                  and (inc.end is None if last_s is None else inc.detected_at > last_s)):
                self._pending.append((None, inc))
                changed.append(inc)
                events.append(inc)
        for key, (rid, old) in stored.items():
            if key not in seen:  # the alarm is gone and its episode left the window
                old.end = now_s // self.settings.step_s * self.settings.step_s
                self._pending.append((rid, old))
                changed.append(old)
                events.append(old)
        return changed, events

    def close(self) -> None:
        with self._lock:
            self.db.close()
