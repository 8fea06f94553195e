"""The SQLite spool: FIFO order, atomic state, full policies, bounded disk, SIGKILL durability."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from meterd.spool import Spool, SpoolError, SpoolFull

REPO = Path(__file__).resolve().parent.parent
LINE = "water,meter=m{0},building=b volume_m3={0}.5 17000000000000{0:05d}"


def lines(start: int, n: int) -> list[str]:
    return [LINE.format(i) for i in range(start, start + n)]


def dropped_total() -> float:
    return REGISTRY.get_sample_value("meterd_spool_dropped_total") or 0.0


def test_fifo_peek_and_delete(tmp_path: Path):
    with Spool(tmp_path) as spool:
        spool.append(lines(0, 5))
        spool.append(lines(5, 5))
        got = spool.peek(3)
        assert [line for _, line in got] == lines(0, 3)
        spool.delete_upto(got[-1][0])
        assert spool.pending() == 7
        assert [line for _, line in spool.peek(100)] == lines(3, 7)


def test_state_commits_with_lines_and_survives_reopen(tmp_path: Path):
    with Spool(tmp_path) as spool:
        spool.append(lines(0, 2), {"m1/volume_m3": "10.0", "m2/volume_m3": "3.0"})
        spool.append([], {"m1/volume_m3": "11.0"})
    with Spool(tmp_path) as spool:
        assert spool.load_state() == {"m1/volume_m3": "11.0", "m2/volume_m3": "3.0"}
        assert spool.pending() == 2


def test_a_line_with_a_newline_is_refused_whole_batch(tmp_path: Path):
    with Spool(tmp_path) as spool:
        with pytest.raises(ValueError, match="line 1 contains a newline"):
            spool.append(["a v=1.0 1", "b v=1.0 1\nc v=1.0 1"], {"k": "v"})
        assert spool.pending() == 0 and spool.load_state() == {}


def test_block_raises_spool_full_and_stores_nothing_of_that_batch(tmp_path: Path):
    with Spool(tmp_path, max_bytes=256 * 1024, on_full="block") as spool:
        n = 0
        with pytest.raises(SpoolFull, match="is full"):
            while True:
                spool.append(lines(n, 100), {"n": str(n + 100)})
                n += 100
        # The refused batch left neither its lines nor its state behind.
        assert spool.pending() == n
        assert spool.load_state() == {"n": str(n)}
        assert spool.size_bytes() <= 256 * 1024
        spool.delete_upto(spool.peek(n // 2)[-1][0])
        spool.append(lines(n, 100))  # room again once the writer caught up
        assert spool.pending() == n - n // 2 + 100


def test_drop_oldest_keeps_newest_and_counts(tmp_path: Path):
    before = dropped_total()
    with Spool(tmp_path, max_bytes=256 * 1024, on_full="drop_oldest") as spool:
        for n in range(0, 10_000, 100):
            spool.append(lines(n, 100))
        kept = spool.pending()
        assert 0 < kept < 10_000
        assert spool.size_bytes() <= 256 * 1024
        assert [line for _, line in spool.peek(kept)][-100:] == lines(9_900, 100)
        assert dropped_total() - before == 10_000 - kept


def test_ids_are_never_reused_after_a_full_drain(tmp_path: Path):
    # The writer deletes "up to id N" after a write; a reused id would delete unwritten points.
    with Spool(tmp_path) as spool:
        spool.append(lines(0, 3))
        last = spool.peek(3)[-1][0]
        spool.delete_upto(last)
        spool.append(lines(3, 1))
        assert spool.peek(1)[0][0] > last
    with Spool(tmp_path) as spool:
        spool.delete_upto(10**9)
        spool.append(lines(4, 1))
        assert spool.peek(1)[0][0] > last + 1


def test_disk_stays_bounded_over_fill_drain_cycles(tmp_path: Path):
    with Spool(tmp_path) as spool:
        sizes = []
        for cycle in range(12):
            for n in range(0, 5000, 1000):
                spool.append(lines(n + cycle * 5000, 1000))
            spool.delete_upto(spool.peek(5000)[-1][0])
            sizes.append(sum(p.stat().st_size for p in tmp_path.glob("spool.db*")))
        assert spool.pending() == 0
        # The WAL grows to its auto-checkpoint size (about 4 MB) in the first cycles; after that
        # freed pages and WAL frames are reused, so the files stop growing (without reuse each
        # cycle would add the ~0.9 MB it writes; B-tree fragmentation may add a few pages).
        assert max(sizes[6:]) < 1.1 * max(sizes[:6])


def test_threads_append_while_another_deletes(tmp_path: Path):
    with Spool(tmp_path) as spool:
        deleted = 0

        def producer(k: int) -> None:
            for i in range(50):
                spool.append(lines(k * 1000 + i * 10, 10), {f"p{k}": str(i)})

        def consumer() -> None:
            nonlocal deleted
            for _ in range(100):
                batch = spool.peek(37)
                if batch:
                    spool.delete_upto(batch[-1][0])
                    deleted += len(batch)

        threads = [threading.Thread(target=producer, args=(k,)) for k in range(4)]
        threads.append(threading.Thread(target=consumer))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert deleted + spool.pending() == 4 * 50 * 10
        assert len(spool.peek(10_000)) == spool.pending()
        assert spool.load_state() == {f"p{k}": "49" for k in range(4)}


CHILD = """
import sys
from pathlib import Path
from meterd.spool import Spool
spool = Spool(Path(sys.argv[1]))
n = 0
while True:
    spool.append([f"water,meter=m volume_m3={n + i}.0 {n + i}" for i in range(100)], {"n": str(n + 100)})
    n += 100
    print(n, flush=True)
"""


def test_committed_appends_survive_sigkill(tmp_path: Path):
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)], cwd=REPO,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    committed = 0
    while committed < 3000:
        committed = int(child.stdout.readline())
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    with Spool(tmp_path) as spool:
        stored = spool.pending()
        state = int(spool.load_state()["n"])
        # Everything acknowledged is there; the batch in flight is all there or not at all.
        assert stored >= committed and stored % 100 == 0
        assert state == stored
        assert [line for _, line in spool.peek(stored)] == \
            [f"water,meter=m volume_m3={i}.0 {i}" for i in range(stored)]


def test_closed_or_unusable_spool_raises_spool_error(tmp_path: Path):
    spool = Spool(tmp_path)
    spool.close()
    with pytest.raises(SpoolError, match="closed"):
        spool.append(lines(0, 1))
    (tmp_path / "file").write_text("")
    with pytest.raises(SpoolError, match="cannot open spool"):
        Spool(tmp_path / "file" / "sub")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "spool.db").write_bytes(b"not a database " * 100)
    with pytest.raises(SpoolError, match="file is not a database"):
        Spool(tmp_path / "bad")


def test_block_accepts_one_oversized_batch_into_an_empty_spool(tmp_path: Path):
    # Refusing it would wedge the source for ever: the spool can never get emptier than empty.
    with Spool(tmp_path, max_bytes=64 * 1024, on_full="block") as spool:
        spool.append(lines(0, 2000))
        assert spool.size_bytes() > 64 * 1024
        with pytest.raises(SpoolFull):
            spool.append(lines(2000, 1))
        assert spool.pending() == 2000
