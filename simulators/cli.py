"""``meterd simulate``: serve a simulated campus over Modbus TCP and MQTT (see simulators/README.md)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from simulators.campus.campus_config import MAX_UNITS, build_campus, config_toml, write_config
from simulators.campus.clock import SimClock
from simulators.campus.faults import KINDS, Fault, FaultSpecError, parse_fault
from simulators.campus.modbus_server import CampusModbusServer
from simulators.campus.model import Campus
from simulators.campus.mqtt_publisher import CampusMqttPublisher
from simulators.campus.truth import TruthLog
from simulators.local_servers import free_port

log = logging.getLogger("simulators.cli")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "simulate", help="serve a simulated campus (Modbus TCP + MQTT) for demos and tests",
        description="Serve a deterministic simulated campus: electricity meters of the four "
                    "built-in profiles on one Modbus TCP port (one unit id each), water/gas/"
                    "weather meters published over MQTT, optional faults and leaks, and a "
                    "JSONL truth log of everything served.")
    p.add_argument("--seed", type=int, default=1, help="model seed: same seed, same campus (1)")
    p.add_argument("--meters", type=int, default=12, metavar="N",
                   help=f"buildings = Modbus meters, unit ids 1..N, at most {MAX_UNITS} (12)")
    p.add_argument("--campus", default="demo", help="campus name, used in tags and topics (demo)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind Modbus to (127.0.0.1)")
    p.add_argument("--modbus-port", type=int, default=5020, help="Modbus TCP port, 0 = any free (5020)")
    p.add_argument("--mqtt-url", default="mqtt://127.0.0.1:1883",
                   help="broker to publish to (mqtt://127.0.0.1:1883)")
    p.add_argument("--no-mqtt", action="store_true", help="do not publish water/gas/weather meters")
    p.add_argument("--publish-interval-s", type=float, default=10.0,
                   help="wall seconds between MQTT publishes (10)")
    p.add_argument("--speed", type=float, default=1.0,
                   help="model seconds per wall second; 0 freezes time at --start (1)")
    p.add_argument("--start", type=_parse_start, default=None,
                   help="model start, ISO 8601 or epoch seconds (default: now, or now minus "
                        "speed x duration so an accelerated run ends at the present)")
    p.add_argument("--duration-s", type=float, default=None,
                   help="stop after this many wall seconds; 0 = only write files (run until signal)")
    p.add_argument("--truth", type=Path, default=None, metavar="FILE",
                   help="append a JSONL truth log of every served/published value and fault")
    p.add_argument("--fault", action="append", default=[], type=_fault, metavar="SPEC",
                   help=f"UNIT:KIND[=PARAM][:AT_S[:DURATION_S]], KIND in {', '.join(KINDS)}; "
                        "repeatable (times are wall seconds after start)")
    p.add_argument("--leak", action="append", default=[], metavar="METER:FLOW_M3H[:AT_S[:RAMP_S]]",
                   help="add a leak to a water meter (a w-zone-NN meter: between the zone inlet "
                        "and its buildings) AT_S wall seconds after the start; with RAMP_S it "
                        "grows linearly to FLOW_M3H over that many wall seconds (incipient), "
                        "else it is constant; repeatable")
    p.add_argument("--write-config", type=Path, default=None, metavar="FILE",
                   help="write a meterd TOML config for this campus (validated with load_config)")
    p.add_argument("--influx-url", default="http://127.0.0.1:8086",
                   help="InfluxDB URL put in the written config")
    p.add_argument("--spool-dir", type=Path, default=None,
                   help="spool dir put in the written config (default: beside it, ./spool)")
    p.add_argument("--poll-interval-s", type=float, default=10.0,
                   help="Modbus poll interval put in the written config (10)")
    p.set_defaults(func=run)


def _parse_start(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ISO 8601 time or epoch seconds, got {text!r}"
                                         ) from None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


def _fault(text: str) -> Fault:
    try:
        return parse_fault(text)
    except FaultSpecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _origin(args: argparse.Namespace) -> float:
    if args.start is not None:
        return float(args.start)
    if args.speed > 1 and args.duration_s:
        # An accelerated run replays the recent past and ends at the present, so that MQTT
        # timestamps (model time) are never in the future.
        return time.time() - (args.speed - 1) * args.duration_s
    return time.time()


def _with_leaks(campus: Campus, specs: list[str], speed: float) -> Campus:
    for spec in specs:
        parts = spec.split(":")
        try:
            meter, flow = parts[0], float(parts[1])
            at_s = float(parts[2]) if len(parts) > 2 else 0.0
            ramp_s = float(parts[3]) if len(parts) > 3 else 0.0
            if len(parts) > 4:
                raise ValueError
        except (ValueError, IndexError):
            raise ValueError(f"--leak {spec!r}: expected METER:FLOW_M3H[:AT_S[:RAMP_S]]") from None
        campus = campus.with_leak(meter, flow, campus.origin_s + speed * at_s, speed * ramp_s)
    return campus


def build(args: argparse.Namespace) -> tuple[Campus, list[Fault], int]:
    """The campus, faults and Modbus port the arguments describe; ValueError names the option."""
    if args.speed < 0:
        raise ValueError(f"--speed must be >= 0, got {args.speed}")
    campus = build_campus(args.meters, args.seed, _origin(args), args.campus)
    campus = _with_leaks(campus, args.leak, args.speed)
    bad = sorted({f.unit for f in args.fault if f.unit > args.meters})
    if bad:
        raise ValueError(f"--fault unit ids {bad} are beyond --meters {args.meters}")
    return campus, list(args.fault), args.modbus_port or free_port()


def run(args: argparse.Namespace) -> int:
    try:
        campus, faults, port = build(args)
        if args.write_config:
            path: Path = args.write_config
            text = config_toml(campus, modbus_url=f"tcp://{args.host}:{port}",
                               mqtt_url=None if args.no_mqtt else args.mqtt_url,
                               influx_url=args.influx_url,
                               spool_dir=(args.spool_dir or path.parent / "spool").resolve(),
                               faults=faults, interval_s=args.poll_interval_s)
            write_config(path, text)
            log.info("wrote %s", path)
    except (ValueError, OSError) as exc:
        print(f"meterd simulate: {exc}", file=sys.stderr)
        return 2
    if args.duration_s == 0:
        return 0
    truth = TruthLog(args.truth)
    try:
        return asyncio.run(serve(campus, faults, args, port, truth))
    except OSError as exc:  # e.g. the port is taken
        print(f"meterd simulate: {exc}", file=sys.stderr)
        return 1
    finally:
        truth.close()


async def serve(campus: Campus, faults: list[Fault], args: argparse.Namespace, port: int,
                truth: TruthLog) -> int:
    """Run the Modbus server and MQTT publisher until SIGTERM/SIGINT or ``--duration-s``."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    clock = SimClock(campus.origin_s, args.speed)
    units = {m.unit_id: m.id for m in campus.meters if m.unit_id is not None}
    truth.write("campus", name=campus.name, seed=campus.seed, origin_s=campus.origin_s,
                speed=args.speed, modbus=f"{args.host}:{port}",
                meters=[m.id for m in campus.meters],
                leaks=[vars(lk) for lk in campus.leaks],
                faults=[{**vars(f), "meter": units[f.unit], "model_ts": clock.model_at(f.at_s)}
                        for f in faults])
    server = CampusModbusServer(campus, clock, truth, faults, args.host, port)
    await server.start()
    publisher = None if args.no_mqtt else CampusMqttPublisher(
        campus, clock, truth, args.mqtt_url, args.publish_interval_s)
    task = None
    if publisher:
        publisher.start()
        task = asyncio.create_task(publisher.run(stop))
    if args.duration_s:
        loop.call_later(args.duration_s, stop.set)
    print(f"meterd simulate: campus {campus.name!r} seed {campus.seed}, Modbus units "
          f"1..{len(server.units)} on {args.host}:{port}", file=sys.stderr, flush=True)
    await stop.wait()
    if task:
        await task
    await server.stop()
    if publisher:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(publisher.stop)
    truth.write("stopped", elapsed_s=clock.elapsed())
    return 0
