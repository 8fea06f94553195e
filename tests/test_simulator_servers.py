"""The simulated campus over the wire: a pymodbus client and an MQTT subscriber see the model."""

from __future__ import annotations

import asyncio
import json
import math
import struct
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException

from meterd.profiles import builtin_profiles
from simulators.campus import build_campus, values_at
from simulators.campus.campus_config import PROFILES, mqtt_meters, mqtt_topic
from simulators.campus.clock import SimClock
from simulators.campus.faults import HUGE, parse_fault
from simulators.campus.modbus_server import CampusModbusServer
from simulators.campus.mqtt_publisher import CampusMqttPublisher, payload
from simulators.campus.truth import TruthLog, read_truth
from simulators.local_servers import free_port

ORIGIN = 1_773_792_000.0  # 2026-03-18 08:00 local


def _decode(words: list[int], scale: float) -> float:
    return struct.unpack(">f", struct.pack(">HH", *words))[0] * scale


async def _with_server(faults, tmp_path: Path, body):
    campus = build_campus(8, seed=3, origin_s=ORIGIN)
    truth = TruthLog(tmp_path / "truth.jsonl")
    server = CampusModbusServer(campus, SimClock(ORIGIN, speed=0.0), truth,
                                [parse_fault(f) for f in faults], port=free_port())
    await server.start()
    client = AsyncModbusTcpClient("127.0.0.1", port=server.port, timeout=0.5, retries=0)
    await client.connect()
    try:
        return await body(campus, client)
    finally:
        client.close()
        await server.stop()
        truth.close()


async def _read(client, unit: int, fc: int, address: int, count: int):
    read = client.read_holding_registers if fc == 3 else client.read_input_registers
    return await read(address, count=count, device_id=unit)


def test_every_profile_serves_the_model_values(tmp_path):
    async def body(campus, client):
        seen = {}
        for unit in (1, 2, 3, 4):
            meter = next(m for m in campus.meters if m.unit_id == unit)
            prof = builtin_profiles()[meter.profile]
            want = {k: float(v[0]) for k, v in values_at(campus, meter, [ORIGIN]).items()}
            for reg in prof.registers:
                rr = await _read(client, unit, prof.function, reg.address, 2)
                assert not rr.isError(), (meter.id, reg.field, rr)
                got = _decode(rr.registers, reg.scale)
                assert got == pytest.approx(want[reg.field], rel=1e-6), (meter.id, reg.field)
            seen[meter.profile] = want
        return seen

    seen = asyncio.run(_with_server([], tmp_path, body))
    assert sorted(seen) == sorted(PROFILES)
    assert all(v["power_kw"] > 0 and v["energy_kwh"] > 0 for v in seen.values())
    served = [e for e in read_truth(tmp_path / "truth.jsonl") if e["event"] == "served"]
    assert len(served) == sum(len(builtin_profiles()[p].registers) for p in PROFILES)
    assert all(e["ts"] == ORIGIN and len(e["fields"]) == 1 for e in served)


def test_chint_answers_both_function_codes_eastron_only_its_own(tmp_path):
    async def body(campus, client):
        out = {}
        for unit, address in ((2, 0x2012), (4, 0x2004)):  # chint-dtsu666, chint-ddsu666
            h = await _read(client, unit, 3, address, 2)
            i = await _read(client, unit, 4, address, 2)
            out[unit] = (h.registers, i.registers)
        out["eastron_fc3"] = await _read(client, 1, 3, 0x34, 2)
        return out

    out = asyncio.run(_with_server([], tmp_path, body))
    for unit in (2, 4):
        holding, inputs = out[unit]
        assert holding == inputs and holding != [0, 0]
    assert out["eastron_fc3"].isError() and out["eastron_fc3"].exception_code == 1


def test_faults_are_visible_as_they_should_be(tmp_path):
    faults = ["1:timeout", "2:exception=6", "3:garbage", "4:rollover=1000", "5:replacement"]

    async def body(campus, client):
        with pytest.raises(ModbusIOException):
            await _read(client, 1, 4, 0x0000, 2)
        with pytest.raises(ModbusIOException):  # no meter at 200: silence, like a gateway
            await _read(client, 200, 4, 0x0000, 2)
        busy = await _read(client, 2, 3, 0x2012, 2)
        garbage = [await _read(client, 3, 4, a, 2) for a in (0x000C, 0x0048)]
        rolled = await _read(client, 4, 4, 0x4000, 2)
        replaced = await _read(client, 5, 4, 0x0048, 2)
        healthy = await _read(client, 7, 4, 0x0048, 2)  # the connection survived the timeout
        return busy, garbage, rolled, replaced, healthy

    busy, garbage, rolled, replaced, healthy = asyncio.run(_with_server(faults, tmp_path, body))
    assert busy.isError() and busy.exception_code == 6
    assert math.isnan(_decode(garbage[0].registers, 0.001))
    assert _decode(garbage[1].registers, 1.0) == pytest.approx(HUGE, rel=1e-6)
    # Frozen clock: the rollover and replacement happen at the origin.
    assert _decode(rolled.registers, 1.0) == 0.0
    assert _decode(replaced.registers, 1.0) == pytest.approx(0.01)
    assert _decode(healthy.registers, 1.0) > 1000
    events = read_truth(tmp_path / "truth.jsonl")
    kinds = {(e["event"], e.get("unit")) for e in events}
    assert {("timeout", 1), ("exception", 2), ("served", 3), ("served", 4)} <= kinds
    garb = [e for e in events if e["event"] == "served" and e["unit"] == 3]
    assert garb[0]["fields"] == {"power_kw": None} and garb[0]["fault"] == ["garbage"]
    assert [e["fault"] for e in events if e.get("unit") == 4] == [["rollover"]]


def test_mqtt_messages_arrive_at_the_broker(mosquitto, client_id, tmp_path):
    campus = build_campus(4, seed=3, origin_s=ORIGIN)
    wanted = {mqtt_topic(campus, m): m for m in mqtt_meters(campus)}
    got: dict[str, dict] = {}
    done = threading.Event()

    def on_message(_c, _u, msg):
        got[msg.topic] = json.loads(msg.payload)
        if wanted.keys() <= got.keys():
            done.set()

    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    sub.on_message = on_message
    sub.on_connect = lambda c, *_: c.subscribe("campus/#", qos=1)
    sub.connect("127.0.0.1", mosquitto.port)
    sub.loop_start()
    truth = TruthLog(tmp_path / "truth.jsonl")
    pub = CampusMqttPublisher(campus, SimClock(ORIGIN, 0.0), truth, mosquitto.url, interval_s=0.2)

    async def run():
        stop = asyncio.Event()
        pub.start()
        task = asyncio.create_task(pub.run(stop))
        await asyncio.to_thread(done.wait, 20)
        stop.set()
        await task
        pub.stop()

    asyncio.run(run())
    sub.loop_stop()
    sub.disconnect()
    truth.close()
    assert done.is_set(), f"missing topics: {sorted(wanted.keys() - got.keys())}"
    for topic, meter in wanted.items():
        model = {k: float(v[0]) for k, v in values_at(campus, meter, [ORIGIN]).items()}
        assert got[topic] == payload(ORIGIN, model)
    assert got["campus/demo/water/w-zone-01"].keys() == {"ts", "volume_m3", "flow_m3h"}
    assert got["campus/demo/weather/wx-1"].keys() == {"ts", "air_temp_c"}
    published = [e for e in read_truth(tmp_path / "truth.jsonl") if e["event"] == "published"]
    assert {e["topic"] for e in published} == wanted.keys()
    assert all(e["payload"] == got[e["topic"]] for e in published)
