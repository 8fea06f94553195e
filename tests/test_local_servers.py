"""The fixtures themselves: each server starts on loopback and answers."""

from __future__ import annotations

import subprocess

import requests


def test_influxd_answers_queries(influxd):
    influxd.query("CREATE DATABASE probe")
    names = [v[0] for v in influxd.query("SHOW DATABASES")[0]["values"]]
    assert "probe" in names


def test_mosquitto_round_trip(mosquitto, client_id):
    sub = subprocess.Popen(["mosquitto_sub", "-p", str(mosquitto.port), "-h", "127.0.0.1",
                            "-i", client_id, "-t", "probe", "-C", "1", "-W", "10"],
                           stdout=subprocess.PIPE, text=True)
    import time
    time.sleep(0.3)
    subprocess.run(["mosquitto_pub", "-p", str(mosquitto.port), "-h", "127.0.0.1",
                    "-t", "probe", "-m", "hello", "-q", "1"], check=True)
    out, _ = sub.communicate(timeout=15)
    assert out.strip() == "hello"


def test_victoria_accepts_v2_write(victoria):
    r = requests.post(f"{victoria.url}/api/v2/write", params={"bucket": "b", "org": "o"},
                      data="water,meter=m1 volume_m3=1.5 1700000000000000000")
    assert r.status_code == 204
    victoria.flush()
    r = requests.get(f"{victoria.url}/api/v1/export", params={"match[]": '{__name__=~"water.*"}'})
    assert '"meter":"m1"' in r.text and "1.5" in r.text
