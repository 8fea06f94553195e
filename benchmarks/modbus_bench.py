"""Modbus polling rate against the simulator, and meterd's resident memory with 10,000 meters.

1. Meters polled per second and requests per meter per cycle: meterd's poller (coalesced reads)
   against a naive poller in the same run (one request per register, the way many scripts do it),
   both over the same simulated gateway.
2. Resident memory of ``meterd run`` with 100 and with 10,000 configured Modbus meters (40 links ×
   247 unit ids on the simulator), read from /proc after the first poll cycles.

    .venv/bin/python benchmarks/modbus_bench.py [--meters 200] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from prometheus_client import REGISTRY
from pymodbus.client import AsyncModbusTcpClient

from meterd.config import Config, load_config
from meterd.reading import Reading
from meterd.sources.modbus.poller import ModbusPoller
from simulators.campus.campus_config import build_campus, config_toml
from simulators.local_servers import free_port

REPO = Path(__file__).resolve().parent.parent
METERD = str(REPO / ".venv" / "bin" / "meterd")


def start_simulator(meters: int, port: int, work: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([METERD, "simulate", "--meters", str(meters), "--no-mqtt", "--modbus-port",
                             str(port), "--write-config", str(work / "sim.toml")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not (work / "sim.toml").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)
    return proc


def campus_config(meters: int, port: int, work: Path, links: int = 1, interval_s: float = 0.001) -> Path:
    campus = build_campus(meters, seed=1, origin_s=time.time())
    text = config_toml(campus, modbus_url=f"tcp://127.0.0.1:{port}", mqtt_url=None,
                       influx_url="http://127.0.0.1:9", spool_dir=work / "spool", interval_s=interval_s)
    text = text.replace("[spool]", "[metrics]\nenabled = false\n\n[spool]")
    if links > 1:
        text = _replicate_links(text, links)
    path = work / f"bench-{meters}x{links}.toml"
    path.write_text(text)
    return path


def _replicate_links(text: str, links: int) -> str:
    """The same gateway behind ``links`` link names: links × units meters in the config."""
    text = text.split("[calendar]")[0]
    head, _, meters = text.partition("[[meters]]")
    meters = "[[meters]]" + meters
    blocks = [b for b in meters.split("[[meters]]") if 'link = "campus-modbus"' in b]
    link_table = head[head.index("[[links]]"):].split("\n\n")[0]
    out = [head.replace(link_table, "")]
    for i in range(links):
        out.append(link_table.replace('"campus-modbus"', f'"gw-{i:02d}"') + "\n\n")
        for b in blocks:
            out.append("[[meters]]" + b.replace('"campus-modbus"', f'"gw-{i:02d}"')
                       .replace('id = "', f'id = "g{i:02d}-').replace('parent = "', f'parent = "g{i:02d}-'))
    return "".join(out)


async def poll_meterd(cfg: Config, seconds: float) -> tuple[float, float]:
    readings = 0

    def submit(batch: list[Reading]) -> None:
        nonlocal readings
        readings += len(batch)

    stop = asyncio.Event()
    poller = ModbusPoller(cfg, submit)
    before = REGISTRY.get_sample_value("meterd_modbus_requests_total", {"link": "campus-modbus"}) or 0
    start = time.perf_counter()
    task = asyncio.create_task(poller.run(stop))
    await asyncio.sleep(seconds)
    stop.set()
    await task
    elapsed = time.perf_counter() - start
    requests = (REGISTRY.get_sample_value("meterd_modbus_requests_total", {"link": "campus-modbus"})
                or 0) - before
    return readings / elapsed, requests / max(readings, 1)


async def poll_naive(cfg: Config, port: int, seconds: float) -> tuple[float, float]:
    """One read per register, meter after meter: the baseline without request planning."""
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=1.0)
    await client.connect()
    meters = [(m, cfg.profile_for(m)) for m in cfg.meters if m.link]
    polled = requests = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for m, prof in meters:
            read = client.read_holding_registers if prof.function == 3 else client.read_input_registers
            for reg in prof.registers:
                await read(reg.address, count=reg.width, device_id=m.unit_id or 0)
                requests += 1
            polled += 1
    client.close()
    return polled / (time.perf_counter() - start), requests / polled


def rss_of_daemon(cfg: Path, settle_s: float) -> tuple[int, int]:
    proc = subprocess.Popen([METERD, "run", "-c", str(cfg)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    time.sleep(settle_s)
    status = Path(f"/proc/{proc.pid}/status").read_text()
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    kb = {line.split(":")[0]: int(line.split()[1]) for line in status.splitlines()
          if line.startswith(("VmRSS", "VmHWM"))}
    return kb["VmRSS"], kb["VmHWM"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--meters", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="meterd-modbus-bench-") as tmp:
        work = Path(tmp)
        port = free_port()
        sim = start_simulator(247, port, work)
        try:
            cfg = load_config(campus_config(args.meters, port, work))
            naive = asyncio.run(poll_naive(cfg, port, args.seconds))
            ours = asyncio.run(poll_meterd(cfg, args.seconds))
            small = campus_config(100, port, work, interval_s=60)
            large = campus_config(247, port, work, links=40, interval_s=60)
            n_large = len(load_config(large).meters)
            rss_small = rss_of_daemon(small, 15)
            rss_large = rss_of_daemon(large, 30)
        finally:
            sim.send_signal(signal.SIGTERM)
            sim.wait(30)
    print(f"Modbus TCP, simulator with {args.meters} meters of the four profiles, "
          f"{args.seconds:.0f} s each\n")
    print("| poller | meters polled/s | requests per meter per cycle |")
    print("| --- | ---: | ---: |")
    print(f"| naive (one request per register) | {naive[0]:,.0f} | {naive[1]:.2f} |")
    print(f"| meterd (coalesced reads) | {ours[0]:,.0f} | {ours[1]:.2f} |")
    print(f"\nmeterd / naive = {ours[0] / naive[0]:.2f}x\n")
    print("| meterd run | VmRSS MiB | VmHWM MiB |")
    print("| --- | ---: | ---: |")
    print(f"| 100 meters, 1 link | {rss_small[0] / 1024:.0f} | {rss_small[1] / 1024:.0f} |")
    print(f"| {n_large:,} meters, 40 links | {rss_large[0] / 1024:.0f} | {rss_large[1] / 1024:.0f} |")


if __name__ == "__main__":
    sys.exit(main())
