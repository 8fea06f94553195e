"""``meterd simulate``: the written config loads, the process serves, and SIGTERM stops it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pymodbus.client import ModbusTcpClient

from meterd.cli import main
from meterd.config import load_config
from simulators.campus.campus_config import PROFILES
from simulators.campus.truth import read_truth
from simulators.local_servers import free_port

REPO = Path(__file__).resolve().parent.parent


def test_write_config_loads_with_load_config(tmp_path):
    path = tmp_path / "campus.toml"
    rc = main(["simulate", "--meters", "9", "--seed", "4", "--campus", "east", "--duration-s", "0",
               "--write-config", str(path), "--modbus-port", "5999",
               "--fault", "2:rollover=50000:10", "--mqtt-url", "mqtt://127.0.0.1:1999"])
    assert rc == 0
    cfg = load_config(path)
    modbus = [m for m in cfg.meters if m.link]
    assert {m.profile for m in modbus} == set(PROFILES)
    assert [m.unit_id for m in modbus] == list(range(1, 10))
    assert cfg.links[0].url == "tcp://127.0.0.1:5999"
    assert cfg.meter("e-dormitory-002").register_max == 50000
    child = cfg.meter("w-canteen-001")
    assert child.parent == "w-zone-01" and child.tags["canteen"] == "canteen-001"
    assert child.mqtt_topic == "campus/east/water/w-canteen-001"
    assert cfg.meter("wx-1").mqtt_map == {"air_temp_c": "air_temp_c"}
    assert {m.kind for m in cfg.meters} == {"electricity", "water", "gas", "weather"}
    assert all(m.tags["campus"] == "east" for m in cfg.meters)
    assert cfg.calendar.breaks and cfg.mqtt is not None


def test_bad_arguments_give_clear_errors(tmp_path, capsys):
    assert main(["simulate", "--meters", "300", "--duration-s", "0"]) == 2
    assert "--meters must be 1..247" in capsys.readouterr().err
    assert main(["simulate", "--fault", "9:timeout", "--meters", "4", "--duration-s", "0"]) == 2
    assert "beyond --meters 4" in capsys.readouterr().err
    assert main(["simulate", "--leak", "w-zone-01:lots", "--duration-s", "0"]) == 2
    assert "METER:FLOW_M3H" in capsys.readouterr().err
    assert main(["simulate", "--leak", "w-zone-01:0.1:0:60:9", "--duration-s", "0"]) == 2
    assert "RAMP_S" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["simulate", "--fault", "1:melt"])
    assert "KIND" in capsys.readouterr().err


def test_simulate_serves_until_sigterm(tmp_path):
    port = free_port()
    truth = tmp_path / "truth.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "meterd", "simulate", "--meters", "4", "--no-mqtt",
         "--modbus-port", str(port), "--speed", "600", "--truth", str(truth),
         "--fault", "3:exception", "--write-config", str(tmp_path / "c.toml")],
        cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        assert "Modbus units 1..4" in proc.stderr.readline()
        client = ModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=1)
        assert client.connect()
        first = client.read_input_registers(0x48, count=2, device_id=1)
        time.sleep(0.5)  # a little model time must pass; only the direction is asserted
        second = client.read_input_registers(0x48, count=2, device_id=1)
        failing = client.read_input_registers(0x48, count=2, device_id=3)
        client.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(20)
    assert rc == 0
    energy = [client.convert_from_registers(r.registers, client.DATATYPE.FLOAT32)
              for r in (first, second)]
    assert energy[1] > energy[0] > 1000
    assert failing.isError() and failing.exception_code == 4
    events = read_truth(truth)
    assert events[0]["event"] == "campus" and events[0]["faults"][0]["meter"] == "e-office-003"
    assert [e["event"] for e in events][-1] == "stopped"
    served = [e for e in events if e["event"] == "served"]
    assert [e["fields"]["energy_kwh"] for e in served] == pytest.approx(energy, rel=1e-6)
