"""Spool throughput: durable appends per batch size, and the writer draining into a local influxd.

Run: ``.venv/bin/python benchmarks/spool_bench.py [--drain-points 100000]``. Each append is one
transaction with one WAL fsync, so lines/s should grow almost linearly with the batch size.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from meterd.config import InfluxConfig
from meterd.sinks.influx.query import InfluxQL
from meterd.sinks.influx.v1 import V1Sink
from meterd.sinks.influx.writer import SpoolWriter
from meterd.spool import Spool
from simulators.local_servers import InfluxServer

T0 = 1_700_000_000_000_000_000


def line(i: int) -> str:
    return (f"electricity,building=b{i % 40},campus=north,meter=em-{i % 500:04d} "
            f"energy_kwh={i * 0.125!r},power_kw={i % 97 * 1.5!r} {T0 + i * 1_000_000_000}")


def bench_append(batch: int, seconds: float) -> tuple[int, float]:
    """Append batches of ``batch`` lines for about ``seconds``; return (appends, elapsed)."""
    with tempfile.TemporaryDirectory() as d, Spool(Path(d)) as spool:
        lines = [line(i) for i in range(batch)]
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            spool.append(lines)
            n += 1
        return n, time.perf_counter() - start


def bench_drain(points: int, batch_size: int) -> tuple[float, int]:
    """Spool ``points`` lines, then time the writer emptying the spool into a fresh influxd."""
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "influxd").mkdir()
        with InfluxServer(Path(d) / "influxd") as influxd:
            return _drain(Path(d), influxd, points, batch_size)


def _drain(d: Path, influxd: InfluxServer, points: int, batch_size: int) -> tuple[float, int]:
    """Time the writer emptying a spool of ``points`` lines into ``influxd``."""
    cfg = InfluxConfig(url=influxd.url, database="bench", batch_size=batch_size)
    sink = V1Sink(cfg)
    sink.ensure_database()
    spool = Spool(d / "spool")
    for start in range(0, points, 10_000):
        spool.append([line(i) for i in range(start, min(points, start + 10_000))])
    writer = SpoolWriter(spool, sink, batch_size, flush_interval_s=0.01, max_backoff_s=1.0)
    start = time.perf_counter()
    writer.start()
    while spool.pending():
        time.sleep(0.01)
    elapsed = time.perf_counter() - start
    writer.stop(flush=False)
    spool.close()
    got = InfluxQL(cfg).query('SELECT count("power_kw") FROM "electricity"')[0]["values"][0][1]
    return elapsed, int(got)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="time per append case")
    ap.add_argument("--drain-points", type=int, default=100_000)
    args = ap.parse_args()

    print("| case | batch | appends/s | lines/s |")
    print("| --- | ---: | ---: | ---: |")
    for batch in (1, 100, 1000):
        n, elapsed = bench_append(batch, args.seconds)
        print(f"| append (fsync per batch) | {batch} | {n / elapsed:,.0f} | {n * batch / elapsed:,.0f} |")
    for batch_size in (1000, 5000):
        elapsed, landed = bench_drain(args.drain_points, batch_size)
        print(f"| writer drain to influxd 1.x ({landed:,} points landed) | {batch_size} | "
              f"{args.drain_points / batch_size / elapsed:,.1f} | {args.drain_points / elapsed:,.0f} |")


if __name__ == "__main__":
    main()
