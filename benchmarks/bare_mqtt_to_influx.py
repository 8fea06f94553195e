"""The baseline meterd is measured against: paho -> line protocol -> /write, with no durability.

It acknowledges every message on receipt (paho's automatic QoS 1 PUBACK), keeps nothing on disk and
posts batches to InfluxDB 1.x straight from memory: the fastest honest pipeline without a spool.
Run as a script by ``ingest_bench.py``; prints the number of readings written.
"""

from __future__ import annotations

import argparse
import json
import queue
import threading
import time

import paho.mqtt.client as mqtt
import requests


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mqtt-port", type=int, required=True)
    ap.add_argument("--influx-url", required=True)
    ap.add_argument("--db", required=True)
    ap.add_argument("--client-id", required=True)
    ap.add_argument("--topic", default="bench/#")
    ap.add_argument("--expect", type=int, required=True)
    ap.add_argument("--batch", type=int, default=5000)
    args = ap.parse_args()

    q: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=args.client_id,
                         protocol=mqtt.MQTTv5)
    client.on_message = lambda _c, _u, msg: q.put(msg)
    subscribed = threading.Event()
    client.on_connect = lambda c, *_: c.subscribe(args.topic, qos=1)
    client.on_subscribe = lambda *_: subscribed.set()
    props = mqtt.Properties(mqtt.PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    client.connect("127.0.0.1", args.mqtt_port, clean_start=False, properties=props)
    client.loop_start()
    if not subscribed.wait(30):
        raise SystemExit("no SUBACK from the broker within 30 s")
    session = requests.Session()
    written = 0
    lines: list[str] = []
    last_flush = time.monotonic()
    while written < args.expect:
        try:
            msg = q.get(timeout=0.05)
            meter = msg.topic.rsplit("/", 1)[-1]
            body = json.loads(msg.payload)
            lines.append(f"water,meter={meter} volume_m3={float(body['volume_m3'])!r},"
                         f"flow_m3h={float(body['flow_m3h'])!r} {int(body['ts']) * 1_000_000_000}")
        except queue.Empty:
            pass
        if lines and (len(lines) >= args.batch or time.monotonic() - last_flush > 0.2):
            r = session.post(f"{args.influx_url}/write", params={"db": args.db, "precision": "ns"},
                             data="\n".join(lines).encode())
            r.raise_for_status()
            written += len(lines)
            lines = []
            last_flush = time.monotonic()
    client.disconnect()
    client.loop_stop()
    print(written)


if __name__ == "__main__":
    threading.current_thread().name = "bare"
    main()
