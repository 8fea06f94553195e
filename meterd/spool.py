"""The durable queue between ingest and the InfluxDB writer: SQLite in WAL mode.

Sources hand readings to the spool and only then acknowledge them (MQTT PUBACK), so an append must be
on disk when it returns: WAL with ``synchronous=FULL`` fsyncs the log on every commit, and a whole
batch is one transaction, so a batch of 1000 lines costs one fsync, not 1000.

One connection is shared by every thread (MQTT callback thread, asyncio poller, writer thread) and
guarded by a lock: SQLite serialises writers anyway, and one connection keeps the WAL small.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

from prometheus_client import Counter, Gauge

log = logging.getLogger("meterd.spool")

SPOOL_FILE = "spool.db"
DEFAULT_MAX_BYTES = 2 * 1024**3

PENDING = Gauge("meterd_spool_pending", "Line-protocol points waiting in the spool")
SIZE = Gauge("meterd_spool_bytes", "Bytes of spool pages in use")
DROPPED = Counter("meterd_spool_dropped_total", "Oldest points dropped because the spool was full")

# Rows and pages cost more than the line text; this keeps the full-check estimate conservative.
_ROW_OVERHEAD = 1.25
# Give freed pages back to the file system once this share of the file is free: pages are reused
# anyway, but a spool that grew during a long outage should not keep its peak size for ever.
_VACUUM_FREE_SHARE = 0.5
_WAL_LIMIT_BYTES = 64 * 1024**2
_DROP_LOG_INTERVAL_S = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS lines (id INTEGER PRIMARY KEY AUTOINCREMENT, line TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class SpoolError(RuntimeError):
    """The spool cannot be opened or used."""


class SpoolFull(SpoolError):
    """The spool holds ``max_bytes`` and ``on_full = "block"``: the caller must withhold its ack."""


class Spool:
    """A durable FIFO of line-protocol lines plus a small key/value state table.

    Parameters
    ----------
    dir
        Directory for ``spool.db`` and its WAL; created if missing.
    max_bytes
        Bound on the bytes of database pages in use.
    on_full
        ``"block"``: :meth:`append` raises :class:`SpoolFull`; ``"drop_oldest"``: the oldest lines
        are deleted (counted in ``meterd_spool_dropped_total`` and logged) to make room.
    """

    def __init__(self, dir: Path, max_bytes: int = DEFAULT_MAX_BYTES,
                 on_full: Literal["block", "drop_oldest"] = "block") -> None:
        if on_full not in ("block", "drop_oldest"):
            raise ValueError(f"on_full: expected 'block' or 'drop_oldest', got {on_full!r}")
        self.path = Path(dir) / SPOOL_FILE
        self.max_bytes = max_bytes
        self.on_full = on_full
        self._lock = threading.Lock()
        self._last_drop_log = -math.inf
        self._unlogged_drops = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db: sqlite3.Connection | None = self._open()
        except (OSError, sqlite3.Error) as exc:
            raise SpoolError(f"cannot open spool {self.path}: {exc}") from None
        self._pending = int(self._conn.execute("SELECT COUNT(*) FROM lines").fetchone()[0])
        self._publish()

    def _open(self) -> sqlite3.Connection:
        # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE ... COMMIT) so one append is one.
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        # auto_vacuum only takes effect before the first table exists, i.e. on a new file.
        db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        if db.execute("PRAGMA journal_mode=WAL").fetchone()[0].lower() != "wal":
            raise SpoolError(f"{self.path}: the file system does not support SQLite WAL mode")
        db.execute("PRAGMA synchronous=FULL")
        db.execute(f"PRAGMA journal_size_limit={_WAL_LIMIT_BYTES}")
        db.executescript(_SCHEMA)
        return db

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise SpoolError(f"spool {self.path} is closed")
        return self._db

    # -- writing -------------------------------------------------------------------------------

    def append(self, lines: Sequence[str], state: Mapping[str, str] | None = None) -> None:
        """Store ``lines`` and upsert ``state`` in one transaction; durable when this returns.

        Raises :class:`SpoolFull` when full and ``on_full = "block"`` (nothing is stored then), and
        :class:`ValueError` for a line holding a newline (it would split into two points).
        """
        bad = next((i for i, ln in enumerate(lines) if "\n" in ln or "\r" in ln), None)
        if bad is not None:
            raise ValueError(f"spool line {bad} contains a newline: {lines[bad][:80]!r}")
        if not lines and not state:
            return
        incoming = math.ceil(sum(len(ln) for ln in lines) * _ROW_OVERHEAD)
        with self._lock:
            db = self._conn
            db.execute("BEGIN IMMEDIATE")
            try:
                dropped = self._make_room(db, incoming) if lines else 0
                db.executemany("INSERT INTO lines (line) VALUES (?)", ((ln,) for ln in lines))
                if state:
                    db.executemany("INSERT INTO state (key, value) VALUES (?, ?) "
                                   "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                                   state.items())
                db.execute("COMMIT")
            except BaseException as exc:
                # SQLite rolls back by itself on some errors (disk full); don't mask the cause.
                if db.in_transaction:
                    db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise SpoolError(f"cannot append to spool {self.path}: {exc}") from exc
                raise
            self._pending += len(lines) - dropped
            self._publish()
            if dropped:
                self._log_dropped(dropped)

    def _log_dropped(self, dropped: int) -> None:
        DROPPED.inc(dropped)
        # A spool that stays full drops on every append; one line a minute is enough to notice.
        self._unlogged_drops += dropped
        now = time.monotonic()
        if now - self._last_drop_log >= _DROP_LOG_INTERVAL_S:
            log.warning("spool full (%d bytes, on_full = drop_oldest): dropped the %d oldest points",
                        self.max_bytes, self._unlogged_drops)
            self._last_drop_log, self._unlogged_drops = now, 0

    def _make_room(self, db: sqlite3.Connection, incoming: int) -> int:
        """Apply the ``on_full`` policy inside the open transaction; return how many lines went."""
        if self._used_bytes(db) + incoming <= self.max_bytes:
            return 0
        if self.on_full == "block" and self._pending == 0:
            return 0  # a batch bigger than the whole spool must not be refused for ever
        if self.on_full == "block":
            raise SpoolFull(f"spool {self.path} is full ({self._used_bytes(db)} of {self.max_bytes} "
                            f"bytes, {self._pending} points waiting for InfluxDB)")
        dropped = 0
        while self._used_bytes(db) + incoming > self.max_bytes:
            remaining = self._pending - dropped
            if remaining <= 0:
                break
            # Delete in chunks sized to the shortfall so a full spool does not re-check per row.
            chunk = max(1, min(remaining, max(1000, remaining // 100)))
            cur = db.execute("DELETE FROM lines WHERE id IN "
                             "(SELECT id FROM lines ORDER BY id LIMIT ?)", (chunk,))
            dropped += cur.rowcount
        return dropped

    def delete_upto(self, last_id: int) -> None:
        """Forget every line with id <= ``last_id`` (they were acknowledged by the sink)."""
        with self._lock:
            db = self._conn
            cur = db.execute("DELETE FROM lines WHERE id <= ?", (last_id,))
            self._pending -= max(cur.rowcount, 0)
            self._maybe_vacuum(db)
            self._publish()

    def _maybe_vacuum(self, db: sqlite3.Connection) -> None:
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        free = db.execute("PRAGMA freelist_count").fetchone()[0]
        if pages and free / pages >= _VACUUM_FREE_SHARE:
            db.execute("PRAGMA incremental_vacuum")

    # -- reading -------------------------------------------------------------------------------

    def load_state(self) -> dict[str, str]:
        with self._lock:
            return dict(self._conn.execute("SELECT key, value FROM state").fetchall())

    def peek(self, limit: int) -> list[tuple[int, str]]:
        """The oldest ``limit`` lines as ``(id, line)``, oldest first; they stay until deleted."""
        with self._lock:
            rows = self._conn.execute("SELECT id, line FROM lines ORDER BY id LIMIT ?",
                                      (limit,)).fetchall()
        return [(int(i), str(s)) for i, s in rows]

    def pending(self) -> int:
        with self._lock:
            return self._pending

    def size_bytes(self) -> int:
        """Bytes of database pages in use (free pages are reused before the file grows)."""
        with self._lock:
            return self._used_bytes(self._conn)

    @staticmethod
    def _used_bytes(db: sqlite3.Connection) -> int:
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        free = db.execute("PRAGMA freelist_count").fetchone()[0]
        size = db.execute("PRAGMA page_size").fetchone()[0]
        return int((pages - free) * size)

    def _publish(self) -> None:
        PENDING.set(self._pending)
        SIZE.set(self._used_bytes(self._conn))

    def close(self) -> None:
        """Checkpoint the WAL into the database and close; later calls raise :class:`SpoolError`."""
        with self._lock:
            if self._db is None:
                return
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                self._db.close()
                self._db = None

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
