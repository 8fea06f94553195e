"""Nothing lost, nothing doubled: a QoS 1 stream survives InfluxDB being killed and meterd SIGKILLed.

Everything here is real: Debian's influxd and mosquitto, ``meterd run`` as a subprocess, paho as the
publishing gateway. InfluxDB is killed mid-stream and started again later; meterd is SIGKILLed in
between and restarted. Afterwards every reading is stored exactly once, and the derived consumption
is neither lost nor counted twice.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from simulators.local_servers import InfluxServer, MosquittoServer
from tests.e2e import count, start_meterd, wait_for, write_config

METERS = 50
READINGS = 10_000
T0 = 1_767_225_600
WATER = "count(volume_m3) FROM water"


def _value(k: int) -> tuple[str, int, float]:
    i, step = k % METERS, k // METERS
    return f"w{i:02d}", T0 + step * 60, round(100.0 + i + step * 0.125, 3)


def _config(tmp: Path, influx: InfluxServer, broker: MosquittoServer) -> Path:
    meters = "".join(f'[[meters]]\nid = "w{i:02d}"\nkind = "water"\ncampus = "east"\n'
                     f'building = "b{i % 5}"\nmqtt_topic = "campus/east/water/w{i:02d}"\n'
                     for i in range(METERS))
    return write_config(tmp, influx, meters, client_id="meterd-noloss", mqtt_url=broker.url)


class Gateway:
    """Publishes readings k = 0..READINGS-1 at QoS 1, as a meter gateway would."""

    def __init__(self, port: int) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="gateway-noloss")
        self.client.max_inflight_messages_set(200)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.sent = 0

    def publish(self, ks: range, pause_every: int = 0) -> None:
        for k in ks:
            meter, ts, vol = _value(k)
            body = json.dumps({"ts": ts, "volume_m3": vol, "flow_m3h": 0.5})
            self.client.publish(f"campus/east/water/{meter}", body, qos=1).wait_for_publish(30)
            self.sent = k + 1
            if pause_every and k % pause_every == 0:
                time.sleep(0.01)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.mark.slow
def test_stream_survives_influx_kill_and_meterd_sigkill(tmp_path, influxd, mosquitto):
    cfg = _config(tmp_path, influxd, mosquitto)
    log = tmp_path / "meterd.log"
    meterd = start_meterd(cfg, log)
    gw = Gateway(mosquitto.port)
    try:
        # The first reading of each meter doubles as proof that meterd has subscribed; republishing
        # is harmless (same timestamp, same point).
        for _ in range(30):
            gw.publish(range(METERS))
            try:
                wait_for(lambda: count(influxd, WATER) >= METERS, 3, "warm-up")
                break
            except AssertionError:
                continue
        stream = threading.Thread(target=gw.publish, args=(range(METERS, READINGS), 50))
        stream.start()
        wait_for(lambda: gw.sent > READINGS * 0.2, 120, "20% published")
        influxd.kill()
        time.sleep(3)  # long enough for the writer to fail and back off
        wait_for(lambda: gw.sent > READINGS * 0.4, 120, "40% published")
        meterd.kill()
        meterd.wait()
        time.sleep(2)  # the broker queues for the offline persistent session
        wait_for(lambda: gw.sent > READINGS * 0.5, 120, "50% published")
        meterd = start_meterd(cfg, log)
        time.sleep(2)
        wait_for(lambda: gw.sent > READINGS * 0.7, 120, "70% published")
        influxd.start()
        stream.join(300)
        wait_for(lambda: count(influxd, WATER) == READINGS, 240, f"all {READINGS} readings in InfluxDB")
        # Derived consumption: the first reading of each meter only sets the counter state.
        wait_for(lambda: count(influxd, "count(volume_m3) FROM consumption") == READINGS - METERS,
              120, "every consumption interval")
    finally:
        gw.close()
        meterd.send_signal(signal.SIGTERM)
        rc = meterd.wait(60)
    assert rc == 0, log.read_text()[-3000:]
    assert "retry" in log.read_text().lower(), "InfluxDB outage never seen by the writer"

    rows = influxd.query("SELECT volume_m3 FROM water GROUP BY meter", db="campus")
    stored = {(s["tags"]["meter"], t): v for s in rows for t, v in s["values"]}
    expected = {(m, ts * 1_000_000_000): v for m, ts, v in map(_value, range(READINGS))}
    assert stored == expected
    sums = influxd.query("SELECT sum(volume_m3) FROM consumption GROUP BY meter", db="campus")
    per_meter = {s["tags"]["meter"]: s["values"][0][1] for s in sums}
    steps = READINGS // METERS - 1
    assert per_meter == pytest.approx({f"w{i:02d}": steps * 0.125 for i in range(METERS)}, abs=1e-6)
