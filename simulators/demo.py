"""The demo: a simulated campus feeds ``meterd run`` into a local InfluxDB, and you watch it arrive.

Starts InfluxDB 1.x and Mosquitto on free loopback ports (data under ``demo-run/``), the campus
simulator (Modbus TCP meters of the four built-in profiles, MQTT water/gas/weather meters) and the
daemon, then prints what InfluxDB holds every few seconds. Ctrl-C stops everything cleanly.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from simulators.local_servers import InfluxServer, MosquittoServer, free_port

REPO = Path(__file__).resolve().parent.parent
MEASUREMENTS = ("electricity", "water", "gas", "weather", "consumption")


def _meterd(*args: str, log: Path) -> subprocess.Popen[bytes]:
    exe = Path(sys.executable).with_name("meterd")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "meterd"]
    return subprocess.Popen([*cmd, *args], stdout=log.open("ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _counts(influx: InfluxServer) -> dict[str, int]:
    out = {}
    for m in MEASUREMENTS:
        try:
            series = influx.query(f'SELECT count(*) FROM "{m}"', db="campus")
        except RuntimeError:
            series = []
        out[m] = max((int(v) for v in series[0]["values"][0][1:] if v), default=0) if series else 0
    return out


def _latest(influx: InfluxServer) -> list[str]:
    rows = []
    for m, field in (("electricity", "power_kw"), ("water", "flow_m3h"), ("gas", "flow_m3h")):
        with contextlib.suppress(RuntimeError, IndexError, KeyError):
            for s in influx.query(f'SELECT last("{field}") FROM "{m}" GROUP BY meter', db="campus"):
                rows.append(f"  {s['tags']['meter']:<28} {m:<12} {field:<10} {s['values'][0][1]:>10.3f}")
    return rows


def _wait_for_file(path: Path, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"the simulator did not start; see {log}")
        time.sleep(0.1)


def run(args: argparse.Namespace) -> int:
    work = Path(args.dir).resolve()
    shutil.rmtree(work, ignore_errors=True)
    for sub in ("influxd", "mosquitto"):
        (work / sub).mkdir(parents=True)
    procs: list[subprocess.Popen[bytes]] = []
    with InfluxServer(work / "influxd") as influx, MosquittoServer(work / "mosquitto") as broker:
        print(f"InfluxDB  {influx.url}  (database 'campus')\nMosquitto {broker.url}\n")
        cfg = work / "meterd.toml"
        sim_log, meterd_log = work / "simulate.log", work / "meterd.log"
        procs.append(_meterd(
            "simulate", "--seed", str(args.seed), "--meters", str(args.meters),
            "--modbus-port", str(free_port()), "--mqtt-url", broker.url, "--publish-interval-s", "2",
            "--poll-interval-s", "2", "--write-config", str(cfg), "--influx-url", influx.url,
            "--spool-dir", str(work / "spool"), "--truth", str(work / "truth.jsonl"), log=sim_log))
        _wait_for_file(cfg, procs[0], sim_log)
        procs.append(_meterd("-v", "run", "-c", str(cfg), log=meterd_log))
        print(f"simulated campus: {args.meters} Modbus meters + MQTT meters; config {cfg}")
        print(f"logs: {sim_log}, {meterd_log}\n")
        try:
            _watch(influx, procs, args.duration_s)
        except KeyboardInterrupt:
            print("\nstopping")
        finally:
            for p in reversed(procs):
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            codes = [p.wait(30) for p in procs]
        print("\nlatest readings:")
        print("\n".join(_latest(influx)) or "  (none)")
    print(f"\nmeterd exited with {codes[-1]}; data and logs are in {work}")
    return 0 if codes[-1] == 0 else 1


def _watch(influx: InfluxServer, procs: list[subprocess.Popen[bytes]], duration_s: float) -> None:
    print("  time   " + "".join(f"{m:>13}" for m in MEASUREMENTS))
    start = time.monotonic()
    while duration_s <= 0 or time.monotonic() - start < duration_s:
        time.sleep(3)
        for p in procs:
            if p.poll() is not None:
                raise SystemExit(f"a process exited early ({p.args!r}); see the logs")
        counts = _counts(influx)
        print(f"  {time.monotonic() - start:5.0f}s " + "".join(f"{counts[m]:>13}" for m in MEASUREMENTS),
              flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="./dev.sh demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration-s", type=float, default=45,
                    help="how long to run, seconds; 0 = until Ctrl-C (45)")
    ap.add_argument("--meters", type=int, default=12, help="simulated Modbus meters (12)")
    ap.add_argument("--seed", type=int, default=1, help="simulator seed (1)")
    ap.add_argument("--dir", default=str(REPO / "demo-run"), help="working directory (./demo-run)")
    return run(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
