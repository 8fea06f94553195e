"""MQTT -> InfluxDB drain rate: meterd (durable) against a bare non-durable script, in the same run.

A backlog of N QoS 1 readings is queued in Mosquitto for each consumer's persistent session while it
is offline; then the consumer starts and we time until all N readings are in InfluxDB. meterd is
measured as it runs in production (``meterd run`` in a subprocess, spool on disk with fsync).
Rounds alternate bare/meterd so drift on a noisy machine hits both alike.

    .venv/bin/python benchmarks/ingest_bench.py --readings 50000 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from simulators.local_servers import InfluxServer, MosquittoServer

REPO = Path(__file__).resolve().parent.parent
METERS = 100
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z


def write_config(path: Path, influx: InfluxServer, broker: MosquittoServer, db: str, spool: Path) -> None:
    meters = "".join(
        f'[[meters]]\nid = "w{i:03d}"\nkind = "water"\ncampus = "bench"\nmqtt_topic = "bench/w{i:03d}"\n'
        for i in range(METERS))
    path.write_text(f"""
[influxdb]
url = "{influx.url}"
database = "{db}"
[mqtt]
url = "{broker.url}"
client_id = "meterd-{db}"
[spool]
dir = "{spool}"
[metrics]
enabled = false
{meters}""")


def publish_backlog(port: int, n: int, offset_s: int) -> None:
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{offset_s}")
    pub.max_inflight_messages_set(1000)
    pub.max_queued_messages_set(0)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    infos = []
    for k in range(n):
        i, step = k % METERS, k // METERS
        body = {"ts": T0 + offset_s + step * 60, "volume_m3": 1000.0 + step * 0.01 + i,
                "flow_m3h": 0.6 + (k % 7) * 0.01}
        infos.append(pub.publish(f"bench/w{i:03d}", json.dumps(body), qos=1))
    for info in infos:
        info.wait_for_publish(60)
    pub.disconnect()
    pub.loop_stop()


def count(influx: InfluxServer, db: str) -> int:
    try:
        series = influx.query("SELECT count(volume_m3) FROM water", db=db)
    except RuntimeError:
        return 0
    return int(series[0]["values"][0][1]) if series else 0


def wait_count(influx: InfluxServer, db: str, n: int, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while count(influx, db) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{db}: only {count(influx, db)} of {n} readings arrived")
        time.sleep(0.1)


def run_bare(influx: InfluxServer, broker: MosquittoServer, n: int, rnd: int) -> float:
    db, cid = f"bare{rnd}", f"bare-{rnd}"
    influx.query(f"CREATE DATABASE {db}")
    cmd = [sys.executable, str(REPO / "benchmarks" / "bare_mqtt_to_influx.py"),
           "--mqtt-port", str(broker.port), "--influx-url", influx.url, "--db", db,
           "--client-id", cid, "--expect", "0"]
    subprocess.run(cmd, check=True, capture_output=True)  # creates the persistent session
    publish_backlog(broker.port, n, rnd * 10_000_000)
    start = time.perf_counter()
    cmd[-1] = str(n)
    subprocess.run(cmd, check=True, capture_output=True)
    wait_count(influx, db, n)
    return time.perf_counter() - start


def run_meterd(influx: InfluxServer, broker: MosquittoServer, n: int, rnd: int, work: Path) -> float:
    db = f"meterd{rnd}"
    cfg = work / f"{db}.toml"
    write_config(cfg, influx, broker, db, work / f"spool-{db}")
    cmd = [str(REPO / ".venv" / "bin" / "meterd"), "run", "-c", str(cfg)]
    # A first start creates the persistent session and the database: one warm-up reading per meter
    # proves it is subscribed. Then it stops cleanly and the backlog is queued while it is down.
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _attempt in range(12):  # republishing is idempotent: same timestamps, same points
        publish_backlog(broker.port, METERS, rnd * 10_000_000 + 4_000_000)
        try:
            wait_count(influx, db, METERS, timeout_s=5)
            break
        except TimeoutError:
            continue
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    publish_backlog(broker.port, n, rnd * 10_000_000 + 5_000_000)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_count(influx, db, n + METERS)
        return time.perf_counter() - start
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--readings", type=int, default=50_000)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="meterd-bench-") as tmp:
        work = Path(tmp)
        (work / "influx").mkdir()
        (work / "mqtt").mkdir()
        with InfluxServer(work / "influx") as influx, MosquittoServer(work / "mqtt") as broker:
            bare, durable = [], []
            for rnd in range(args.rounds):
                bare.append(args.readings / run_bare(influx, broker, args.readings, rnd))
                durable.append(args.readings / run_meterd(influx, broker, args.readings, rnd, work))
    b, d = statistics.median(bare), statistics.median(durable)
    print("| pipeline | readings | rounds | median readings/s | runs |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| bare paho -> /write (no durability) | {args.readings} | {args.rounds} | {b:,.0f} | "
          f"{', '.join(f'{x:,.0f}' for x in bare)} |")
    print(f"| meterd run (spool fsync, derive, write) | {args.readings} | {args.rounds} | {d:,.0f} | "
          f"{', '.join(f'{x:,.0f}' for x in durable)} |")
    print(f"\nmeterd / bare = {d / b:.2f} (target >= 0.80)")


if __name__ == "__main__":
    main()
