"""Publish the campus water, gas and weather meters over MQTT (QoS 1), as IoT gateways do.

Topic ``campus/<campus>/<kind>/<meter>``; payload the generic JSON
``{"ts": <epoch s>, "volume_m3": ..., "flow_m3h": ...}`` (weather: ``{"ts": ..., "air_temp_c": ...}``)
with ``ts`` in model time. Volumes are rounded to 0.1 L, flows to 0.1 L/h, temperatures to 0.01 °C,
like a gateway would; the truth log holds exactly what was sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import uuid
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt

from simulators.campus.campus_config import mqtt_meters, mqtt_topic
from simulators.campus.clock import SimClock
from simulators.campus.model import Campus, LiveMeter
from simulators.campus.truth import TruthLog

log = logging.getLogger("simulators.mqtt")
DECIMALS = {"volume_m3": 4, "flow_m3h": 4, "air_temp_c": 2}


def payload(ts: float, values: dict[str, float]) -> dict[str, float]:
    """The JSON object a gateway sends for one reading."""
    return {"ts": round(ts, 3), **{k: round(v, DECIMALS.get(k, 4)) for k, v in values.items()}}


class CampusMqttPublisher:
    """Publishes every non-Modbus meter every ``interval_s`` wall seconds."""

    def __init__(self, campus: Campus, clock: SimClock, truth: TruthLog, url: str,
                 interval_s: float = 10.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError(f"--mqtt-url: expected mqtt://host:port, got {url!r}")
        self.host, self.port = parts.hostname, parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        self.clock, self.truth, self.interval_s = clock, truth, interval_s
        self.meters = [(LiveMeter(campus, m), mqtt_topic(campus, m)) for m in mqtt_meters(campus)]
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=f"meterd-sim-{os.getpid()}-{uuid.uuid4().hex[:6]}")
        if parts.scheme == "mqtts":
            self.client.tls_set()
        if parts.username:
            self.client.username_pw_set(parts.username, parts.password)
        self._pending: list[mqtt.MQTTMessageInfo] = []
        self.published = 0

    def start(self) -> None:
        # connect_async: a broker that starts after us is fine; paho keeps retrying.
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()

    def publish_once(self) -> int:
        """Publish every meter's current reading; return how many were handed to the client."""
        t = self.clock.now()
        sent = 0
        for live, topic in self.meters:
            body = payload(t, live.values(t))
            info = self.client.publish(topic, json.dumps(body), qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                log.warning("publish to %s failed: %s", topic, mqtt.error_string(info.rc))
                continue
            self._pending.append(info)
            self.truth.write("published", ts=body["ts"], meter=live.meter.id, topic=topic,
                             payload=body)
            sent += 1
        self._pending = [i for i in self._pending if not i.is_published()]
        self.published += sent
        return sent

    async def run(self, stop: asyncio.Event) -> None:
        """Publish on every tick while connected, until ``stop`` is set."""
        while not stop.is_set():
            if self.client.is_connected():
                self.publish_once()
            else:
                log.info("waiting for MQTT broker %s:%d", self.host, self.port)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval_s)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Wait (bounded) for the broker to acknowledge what was sent, then disconnect."""
        for info in self._pending:
            if self.client.is_connected():
                try:
                    info.wait_for_publish(timeout_s)
                except (RuntimeError, ValueError):
                    break
        self.client.disconnect()
        self.client.loop_stop()
