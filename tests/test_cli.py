"""The ``meterd`` command line: help for every command, and ``meterd check`` against real servers."""

from __future__ import annotations

import subprocess

import pytest

from simulators.local_servers import free_port
from tests.e2e import METERD, write_config
from tests.modbus_peer import ModbusPeer, Unit


def _meterd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([METERD, *args], capture_output=True, text=True, timeout=60)


def test_every_command_has_help():
    top = _meterd("--help")
    assert top.returncode == 0
    for command in ("run", "check", "simulate", "leaks", "canteens", "activity"):
        assert command in top.stdout, f"{command} missing from meterd --help"
        sub = _meterd(command, "--help")
        assert sub.returncode == 0 and "usage:" in sub.stdout, command


def test_check_reaches_every_server(tmp_path, influxd, mosquitto, client_id):
    with ModbusPeer({1: Unit()}) as peer:
        body = (f'[[links]]\nname = "gw"\nurl = "tcp://127.0.0.1:{peer.port}"\n'
                f'[[links]]\nname = "dead-gw"\nurl = "tcp://127.0.0.1:{free_port()}"\n'
                '[[meters]]\nid = "m1"\nkind = "water"\nmqtt_topic = "t/m1"\n')
        cfg = write_config(tmp_path, influxd, body, client_id=client_id, mqtt_url=mosquitto.url)
        out = _meterd("check", "-c", str(cfg))
    assert out.returncode == 1, out.stdout + out.stderr
    assert "config: OK (1 meters" in out.stdout
    assert "influxdb: OK" in out.stdout and "mqtt: OK" in out.stdout
    assert "link gw: OK" in out.stdout
    assert "link dead-gw: FAIL" in out.stdout and "refused" in out.stdout.lower()


@pytest.mark.parametrize("body", ['[[meters]]\nid = "x"\nkind = "water"\n'])
def test_check_reports_config_errors_with_exit_2(tmp_path, influxd, body):
    cfg = write_config(tmp_path, influxd, body)
    out = _meterd("check", "-c", str(cfg))
    assert out.returncode == 2
    assert "meters[id=x]: set either 'link'" in out.stdout


def test_run_refuses_a_bad_config_without_a_traceback(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[influxdb]\napi = "v3"\n')
    out = _meterd("run", "-c", str(cfg))
    assert out.returncode == 2
    assert "influxdb.api" in out.stdout and "Traceback" not in out.stdout + out.stderr
