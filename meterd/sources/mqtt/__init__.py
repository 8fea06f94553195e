"""MQTT source: JSON payload parsing (pure, :mod:`.payload`) and a paho-mqtt client that sends
each PUBACK only after the readings are durable in the spool (:mod:`.client`). See README.md."""

from meterd.sources.mqtt.payload import parse_payload

__all__ = ["parse_payload"]
