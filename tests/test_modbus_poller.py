"""The Modbus poller against real peers: pyModbusTCP (not pymodbus) for TCP, pymodbus for RTU framing.

Cycles are driven one at a time (``LinkPoller.cycle``) wherever the test is about what is read,
so nothing depends on timing; only the dead-gateway test runs the real scheduler.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from meterd.config import Config, ConfigError, load_config, parse_config
from meterd.normalise.rejects import REJECTS
from meterd.profiles import builtin_profiles
from meterd.reading import Reading
from meterd.sources.modbus.poller import Backoff, LinkPoller, ModbusPoller
from tests.modbus_peer import DeadGateway, ModbusPeer, Unit, as_float32, load_device

CASES = Path(__file__).parent / "cases" / "modbus"


def polls(link: str, result: str) -> float:
    return REGISTRY.get_sample_value("meterd_modbus_polls_total", {"link": link, "result": result}) or 0.0


def link_cfg(name: str, url: str, **kw: float) -> dict[str, object]:
    return {"name": name, "url": url, "interval_s": 0.05, "timeout_s": 0.3, "retries": 0, **kw}


def meter(mid: str, link: str, unit: int, profile: str, **kw: object) -> dict[str, object]:
    return {"id": mid, "kind": "electricity", "link": link, "unit_id": unit, "profile": profile,
            "campus": "north", "building": "b1", **kw}


async def cycles(poller: ModbusPoller, n: int = 1) -> None:
    stop = asyncio.Event()
    for _ in range(n):
        for lp in poller.links:
            await lp.cycle(stop)
    for lp in poller.links:
        lp._drop_client()


def fill(unit: Unit, profile: str, seed: float) -> dict[str, float]:
    """Put a distinct value in every register of ``profile``; return the expected fields."""
    expected = {}
    for i, reg in enumerate(builtin_profiles()[profile].registers):
        raw = seed + i * 1.37
        unit.put(reg.address, raw, reg.type, reg.order)
        expected[reg.field] = as_float32(raw) * reg.scale + reg.offset
    return expected


# --- every built-in profile and a map defined in the config, values exact ---------------------

WATER_MAP = {"function": 3, "max_gap": 0, "registers": [
    {"field": "volume_m3", "address": 100, "type": "uint32", "order": "CDAB", "scale": 0.001},
    {"field": "flow_m3h", "address": 102, "type": "float32", "order": "DCBA", "scale": 1.0,
     "offset": -0.5}]}


def test_all_builtin_profiles_and_a_config_map_read_exactly() -> None:
    units = {u: Unit(function=builtin_profiles()[p].function) for u, p in
             [(1, "chint-dtsu666"), (2, "chint-ddsu666"), (3, "eastron-sdm120"), (4, "eastron-sdm630")]}
    expected = {f"m{u}": fill(units[u], p, 200.0 + 10 * u) for u, p in
                [(1, "chint-dtsu666"), (2, "chint-ddsu666"), (3, "eastron-sdm120"),
                 (4, "eastron-sdm630")]}
    water = Unit(function=3)
    water.put(100, 123_456_789, "uint32", "CDAB")
    water.put(102, 3.3, "float32", "DCBA")
    units[9] = water
    expected["w9"] = {"volume_m3": 123_456_789 * 0.001, "flow_m3h": as_float32(3.3) - 0.5}
    with ModbusPeer(units) as peer:
        url = f"tcp://127.0.0.1:{peer.port}"
        cfg = parse_config({
            "links": [link_cfg("all-profiles", url)],
            "profiles": {"campus-water": WATER_MAP},
            "meters": [meter("m1", "all-profiles", 1, "chint-dtsu666"),
                       meter("m2", "all-profiles", 2, "chint-ddsu666"),
                       meter("m3", "all-profiles", 3, "eastron-sdm120"),
                       meter("m4", "all-profiles", 4, "eastron-sdm630", canteen="c1"),
                       {**meter("w9", "all-profiles", 9, "campus-water"), "kind": "water"}]})
        got: list[Reading] = []
        asyncio.run(cycles(ModbusPoller(cfg, got.extend)))
        requests = {u: peer.requests_for(u) for u in units}
    assert {r.meter: r.fields for r in got} == expected
    assert {r.meter: r.measurement for r in got}["w9"] == "water"
    assert {r.meter: r.tags for r in got}["m4"] == {"meter": "m4", "campus": "north",
                                                     "building": "b1", "canteen": "c1"}
    assert requests == {1: 2, 2: 2, 3: 2, 4: 2, 9: 1}  # as planned: no meter needs more


# --- data-driven cases: tests/cases/modbus/<name>/ --------------------------------------------

def case_dirs() -> list[Path]:
    return sorted(p for p in CASES.iterdir() if (p / "meterd.toml").exists())


@pytest.mark.parametrize("case", case_dirs(), ids=lambda p: p.name)
def test_case(case: Path, tmp_path: Path) -> None:
    with ModbusPeer(load_device(case / "device.toml")) as peer:
        text = (case / "meterd.toml").read_text().replace("PEER_PORT", str(peer.port))
        (tmp_path / "meterd.toml").write_text(text)
        cfg = load_config(tmp_path / "meterd.toml")
        lines = [json.loads(x) for x in (case / "expected.jsonl").read_text().splitlines() if x.strip()]
        want_rejects = {k: v for line in lines for k, v in line.get("rejected", {}).items()}
        before = {k: REJECTS.counts.get(("modbus", k), 0) for k in want_rejects}
        got: list[Reading] = []
        asyncio.run(cycles(ModbusPoller(cfg, got.extend)))
    want = [ln for ln in lines if "meter" in ln]
    assert sorted(({"meter": r.meter, "measurement": r.measurement, "tags": r.tags,
                    "fields": r.fields} for r in got), key=lambda d: d["meter"]) == \
        sorted(want, key=lambda d: d["meter"])
    assert {k: REJECTS.counts.get(("modbus", k), 0) - before[k] for k in want_rejects} == want_rejects


# --- failures: exception responses, dead meters, dead gateways, lost connections --------------

def test_exception_response_is_counted_and_other_reads_still_land() -> None:
    unit = Unit(function=4, holes={0x4000})  # the energy block answers "illegal data address"
    expected = fill(unit, "chint-ddsu666", 50.0)
    before = REJECTS.counts.get(("modbus", "exception_illegal_data_address"), 0)
    with ModbusPeer({5: unit}) as peer:
        cfg = parse_config({"links": [link_cfg("exc-link", f"tcp://127.0.0.1:{peer.port}")],
                            "meters": [meter("d5", "exc-link", 5, "chint-ddsu666")]})
        got: list[Reading] = []
        ok_before, exc_before = polls("exc-link", "ok"), polls("exc-link", "exception")
        asyncio.run(cycles(ModbusPoller(cfg, got.extend), 3))
    assert [r.fields for r in got] == [{k: v for k, v in expected.items()
                                        if k not in ("energy_kwh", "energy_export_kwh")}] * 3
    assert REJECTS.counts[("modbus", "exception_illegal_data_address")] - before == 3
    assert polls("exc-link", "exception") - exc_before == 3
    assert polls("exc-link", "ok") == ok_before


def test_function_override_reads_input_registers() -> None:
    unit = Unit(function=4)  # this DTSU666 answers only function 4
    expected = fill(unit, "chint-dtsu666", 10.0)
    with ModbusPeer({7: unit}) as peer:
        url = f"tcp://127.0.0.1:{peer.port}"
        cfg = parse_config({"links": [link_cfg("fn-link", url)], "meters": [
            meter("as-profile", "fn-link", 7, "chint-dtsu666"),
            meter("overridden", "fn-link", 7, "chint-dtsu666", function=4)]})
        got: list[Reading] = []
        asyncio.run(cycles(ModbusPoller(cfg, got.extend)))
    assert {r.meter: r.fields for r in got} == {"overridden": expected}


def test_timed_out_meter_backs_off_without_holding_up_its_neighbour() -> None:
    healthy, dead = Unit(function=4), Unit(function=4, silent=True)
    expected = fill(healthy, "eastron-sdm120", 1.0)
    with ModbusPeer({1: healthy, 2: dead}) as peer:
        url = f"tcp://127.0.0.1:{peer.port}"
        cfg = parse_config({"links": [link_cfg("backoff-link", url, timeout_s=0.15, retries=2)],
                            "meters": [meter("dead", "backoff-link", 2, "eastron-sdm120"),
                                       meter("alive", "backoff-link", 1, "eastron-sdm120")]})
        batches: list[list[Reading]] = []
        timeouts_before = polls("backoff-link", "timeout")
        asyncio.run(cycles(ModbusPoller(cfg, batches.append), 12))
        dead_requests = peer.requests_for(2)
    # Cycle 1: 1 + 2 retries; then one probe at cycles 3, 6 and 11 (skipping 1, 2, 4 cycles).
    assert dead_requests == 3 + 3
    assert polls("backoff-link", "timeout") - timeouts_before == 4
    assert [[r.meter for r in b] for b in batches] == [["alive"]] * 12
    assert all(b[0].fields == expected for b in batches)


def test_backoff_schedule_doubles_up_to_its_cap() -> None:
    b = Backoff(max_skip=5)
    tried = []
    for cycle in range(40):
        if b.due():
            tried.append(cycle)
            b.failed()
    assert tried == [0, 2, 5, 10, 16, 22, 28, 34]
    b.succeeded()
    assert b.due() and b.failures == 0


def test_dead_gateway_never_delays_a_healthy_link() -> None:
    unit = Unit(function=4)
    fill(unit, "eastron-sdm120", 5.0)

    async def scenario(peer_port: int, dead_port: int) -> tuple[int, float]:
        cfg = parse_config({"links": [
            link_cfg("dead-gw", f"tcp://127.0.0.1:{dead_port}", timeout_s=30.0),
            link_cfg("live-gw", f"tcp://127.0.0.1:{peer_port}")],
            "meters": [meter("behind-dead", "dead-gw", 1, "eastron-sdm120"),
                       meter("behind-live", "live-gw", 1, "eastron-sdm120")]})
        got: list[Reading] = []
        stop = asyncio.Event()
        task = asyncio.create_task(ModbusPoller(cfg, got.extend).run(stop))
        for _ in range(600):  # a bound against hanging, not a speed assertion
            if len(got) >= 5:
                break
            await asyncio.sleep(0.05)
        dead_outcomes = sum(polls("dead-gw", r) for r in ("ok", "timeout", "connect_failed"))
        stop.set()
        await task  # stop abandons the 30 s request at once
        return len(got), dead_outcomes

    with ModbusPeer({1: unit}) as peer, DeadGateway() as dead:
        n, dead_outcomes = asyncio.run(scenario(peer.port, dead.port))
        assert dead.conns, "the dead gateway was never even connected to"
    assert n >= 5
    assert dead_outcomes == 0  # five live polls landed while the dead link's first request hung


def test_reconnects_after_the_gateway_restarts() -> None:
    unit = Unit(function=4)
    fill(unit, "eastron-sdm120", 7.0)
    peer = ModbusPeer({1: unit})
    peer.start()
    cfg = parse_config({"links": [link_cfg("flaky-gw", f"tcp://127.0.0.1:{peer.port}")],
                        "meters": [meter("m", "flaky-gw", 1, "eastron-sdm120")]})
    got: list[Reading] = []
    poller = ModbusPoller(cfg, got.extend)
    lp = poller.links[0]

    async def scenario() -> list[int]:
        stop = asyncio.Event()
        counts = []
        await lp.cycle(stop)
        counts.append(len(got))
        peer.stop()
        for _ in range(3):
            await lp.cycle(stop)
        counts.append(len(got))
        peer.start()
        for _ in range(8):  # connect backoff skips a cycle or two after the refusals
            await lp.cycle(stop)
        counts.append(len(got))
        lp._drop_client()
        return counts

    try:
        counts = asyncio.run(scenario())
    finally:
        peer.stop()
    assert counts[0] == 1 and counts[1] == 1
    assert counts[2] > 1


def test_submit_failure_is_counted_and_polling_goes_on() -> None:
    unit = Unit(function=4)
    fill(unit, "eastron-sdm120", 9.0)
    calls = []

    def failing_submit(batch: list[Reading]) -> None:
        calls.append(batch)
        if len(calls) == 1:
            raise OSError("disk full")

    with ModbusPeer({1: unit}) as peer:
        cfg = parse_config({"links": [link_cfg("submit-link", f"tcp://127.0.0.1:{peer.port}")],
                            "meters": [meter("m", "submit-link", 1, "eastron-sdm120")]})
        failed_before, ok_before = polls("submit-link", "submit_failed"), polls("submit-link", "ok")
        asyncio.run(cycles(ModbusPoller(cfg, failing_submit), 2))
    assert len(calls) == 2
    assert polls("submit-link", "submit_failed") - failed_before == 1
    assert polls("submit-link", "ok") - ok_before == 1


def test_profile_with_fields_foreign_to_the_meter_kind_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"meters\[id=tap\].*not water fields"):
        parse_config({"links": [link_cfg("l", "tcp://127.0.0.1:1")],
                      "meters": [{**meter("tap", "l", 1, "eastron-sdm120"), "kind": "water"}]})


# --- RTU framing: over TCP and over a serial line --------------------------------------------

def rtu_config(url: str) -> Config:
    return parse_config({"links": [link_cfg("rtu-link", url, timeout_s=1.0)],
                         "meters": [meter("r1", "rtu-link", 3, "eastron-sdm630"),
                                    meter("r2", "rtu-link", 4, "eastron-sdm630")]})


def rtu_devices() -> tuple[list[object], dict[str, dict[str, float]]]:
    # pyModbusTCP speaks only MBAP framing, so the RTU peer is pymodbus's own server: it shares
    # code with the client, which is why the expected values come from struct, not pymodbus.
    from pymodbus.simulator.simdata import DataType, SimData
    from pymodbus.simulator.simdevice import SimDevice

    devices, expected = [], {}
    for unit, mid in ((3, "r1"), (4, "r2")):
        u = Unit(function=4)
        expected[mid] = fill(u, "eastron-sdm630", 100.0 * unit)
        words = [u.words.get(a, 0) for a in range(0x50)]
        devices.append(SimDevice(id=unit, simdata=[SimData(address=0, values=words,
                                                           datatype=DataType.REGISTERS)]))
    return devices, expected


def test_rtu_over_tcp() -> None:
    from pymodbus.framer import FramerType
    from pymodbus.server import ModbusTcpServer

    from simulators.local_servers import free_port

    devices, expected = rtu_devices()
    port = free_port()

    async def scenario() -> list[Reading]:
        server = ModbusTcpServer(devices, framer=FramerType.RTU, address=("127.0.0.1", port))
        await server.serve_forever(background=True)
        got: list[Reading] = []
        try:
            await cycles(ModbusPoller(rtu_config(f"rtu+tcp://127.0.0.1:{port}"), got.extend), 2)
        finally:
            await server.shutdown()
        return got

    got = asyncio.run(scenario())
    assert [(r.meter, r.fields) for r in got] == [(m, expected[m]) for _ in range(2) for m in ("r1", "r2")]


@pytest.fixture
def pty_pair(tmp_path: Path) -> Iterator[tuple[str, str]]:
    if shutil.which("socat") is None:
        pytest.skip("socat not installed (apt-get install -y socat)")
    a, b = tmp_path / "ttyA", tmp_path / "ttyB"
    proc = subprocess.Popen(["socat", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
                            stderr=subprocess.DEVNULL)
    for _ in range(100):
        if a.exists() and b.exists():
            break
        time.sleep(0.05)
    yield str(a), str(b)
    proc.terminate()
    proc.wait(5)


def test_rtu_over_a_serial_line(pty_pair: tuple[str, str]) -> None:
    from pymodbus.framer import FramerType
    from pymodbus.server import ModbusSerialServer

    server_end, client_end = pty_pair
    devices, expected = rtu_devices()

    async def scenario() -> list[Reading]:
        server = ModbusSerialServer(devices, framer=FramerType.RTU, port=server_end,
                                    baudrate=38400)
        await server.serve_forever(background=True)
        got: list[Reading] = []
        try:
            poller = ModbusPoller(rtu_config(f"rtu://{client_end}?baudrate=38400"), got.extend)
            assert poller.links[0].link.inter_frame_gap_s == 0.00175
            await cycles(poller, 2)
        finally:
            await server.shutdown()
        return got

    got = asyncio.run(scenario())
    assert [(r.meter, r.fields) for r in got] == [(m, expected[m]) for _ in range(2) for m in ("r1", "r2")]


def test_link_poller_is_built_per_link_with_meters_only() -> None:
    cfg = parse_config({"links": [link_cfg("used", "tcp://127.0.0.1:1"),
                                  link_cfg("unused", "rtu:///dev/null")],
                        "meters": [meter("m", "used", 1, "eastron-sdm120")]})
    poller = ModbusPoller(cfg, lambda batch: None)
    assert [lp.link.name for lp in poller.links] == ["used"]
    assert isinstance(poller.links[0], LinkPoller)
