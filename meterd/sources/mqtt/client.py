"""The MQTT source: a paho-mqtt 2.x client that acknowledges a message only once it is spooled.

Two threads: paho's network thread only queues incoming messages; a worker thread drains the
queue in batches, parses them (:mod:`.payload`), hands all their readings to ``submit`` in one
call, and only then sends each message's PUBACK. Until the PUBACK the broker keeps the message in
the persistent session, so a crash, a failing spool or a restart loses nothing: the broker
delivers it again.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions
from prometheus_client import Counter

from meterd.config import Config, ConfigError, MeterConfig, MqttConfig
from meterd.normalise.rejects import REJECTS
from meterd.normalise.validate import Invalid
from meterd.reading import Reading
from meterd.secrets import read_secret
from meterd.sources.mqtt.payload import parse_payload

log = logging.getLogger("meterd.mqtt")

PASSWORD_ENV = "METERD_MQTT_PASSWORD"
SUBSCRIBE_CHUNK = 500  # topics per SUBSCRIBE packet; thousands in one packet strain small brokers
# Unacked QoS 1 messages the broker may have in flight to us (MQTT 5): bounds our queue's memory.
RECEIVE_MAXIMUM = 20_000
RECONNECT_MIN_S, RECONNECT_MAX_S = 1, 60

# prometheus_client adds the _total suffix.
MESSAGES = Counter("meterd_mqtt_messages", "MQTT messages processed, by result "
                   "(accepted, partial, rejected)", ["result"])
SUBMIT_FAILURES = Counter("meterd_mqtt_submit_failures",
                          "Batches whose submit raised; retried, not acked meanwhile")

Submit = Callable[[list[Reading]], None]
# parse(payload, meter, received_ns, tz) -> (readings, rejections); parse_payload unless a test plants a bug.
Parser = Callable[[bytes, MeterConfig, int, ZoneInfo], tuple[list[Reading], list[Invalid]]]


@dataclass(frozen=True, slots=True)
class _Message:
    topic: str
    payload: bytes
    mid: int
    qos: int
    received_ns: int
    connection: int  # a packet id is only meaningful on the connection that delivered it


@dataclass(slots=True)
class _Parsed:
    message: _Message
    readings: list[Reading]
    result: str


class MqttSource:
    """Subscribe to every meter's ``mqtt_topic`` and submit parsed readings in batches.

    ``submit`` must return only once the readings are durable (``Ingest.submit``), or raise;
    a raising submit is retried with backoff and its messages stay unacknowledged meanwhile.
    """

    def __init__(self, cfg: Config, submit: Submit, *, batch_max: int = 2000,
                 batch_wait_s: float = 0.05, retry_initial_s: float = 1.0,
                 retry_max_s: float = 60.0, parse: Parser = parse_payload) -> None:
        if cfg.mqtt is None:
            raise ConfigError("the MQTT source needs an [mqtt] section")
        self._mcfg: MqttConfig = cfg.mqtt
        self._tz = ZoneInfo(cfg.site.timezone)
        self._parse_payload = parse
        self._exact, self._wildcard = _topic_index(cfg.meters)
        self._submit = submit
        self.batch_max, self.batch_wait_s = batch_max, batch_wait_s
        self.retry_initial_s, self.retry_max_s = retry_initial_s, retry_max_s
        self._queue: queue.Queue[_Message] = queue.Queue()
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # orders acks against connection changes
        self._connection = 0
        self._pending_subs: dict[int, list[str]] = {}
        self._worker: threading.Thread | None = None
        self.ready = threading.Event()  # connected and every subscription acknowledged
        self._client = self._make_client()

    @property
    def topics(self) -> list[str]:
        return sorted({*self._exact, *(sub for sub, _ in self._wildcard)})

    def start(self) -> None:
        """Connect in the background (retrying with backoff) and start the worker thread."""
        if self._worker is not None:
            raise RuntimeError("MqttSource.start() called twice; create a new source instead")
        self._worker = threading.Thread(target=self._run, name="meterd-mqtt-worker", daemon=True)
        self._worker.start()
        url = urlsplit(self._mcfg.url)
        port = url.port or (8883 if url.scheme == "mqtts" else 1883)
        kwargs: dict[str, Any] = {"keepalive": self._mcfg.keepalive_s}
        if self._mcfg.protocol == "5":
            # Never clean: the session holds what was published while meterd was down.
            kwargs.update(clean_start=False, properties=self._connect_properties())
        self._client.connect_async(url.hostname or "", port, **kwargs)
        self._client.loop_start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Finish (submit and ack) the batch in hand, then disconnect keeping the session."""
        self._stopping.set()
        if self._worker is not None:
            self._worker.join(timeout_s)
        self._client.disconnect()
        self._client.loop_stop()
        self.ready.clear()

    # -- connection (paho network thread) ------------------------------------------------

    def _make_client(self) -> mqtt.Client:
        c = self._mcfg
        v5 = c.protocol == "5"
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=c.client_id,
                             clean_session=None if v5 else False,
                             protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311, manual_ack=True)
        client.on_log = self._on_log
        client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
        if urlsplit(c.url).scheme == "mqtts":
            for key in ("ca_file", "cert_file", "key_file"):
                path = getattr(c, key)
                if path is not None and not path.is_file():
                    raise ConfigError(f"mqtt.{key}: {path} does not exist")
            client.tls_set(ca_certs=_str(c.ca_file), certfile=_str(c.cert_file),
                           keyfile=_str(c.key_file))
        password = read_secret(c.password_file, PASSWORD_ENV)
        if password is not None and not c.username:
            raise ConfigError(f"mqtt.username: a password is set (password_file or "
                              f"${PASSWORD_ENV}) but no username")
        if c.username:
            client.username_pw_set(c.username, password)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    def _connect_properties(self) -> Properties:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self._mcfg.session_expiry_s
        props.ReceiveMaximum = RECEIVE_MAXIMUM
        return props

    def _on_connect(self, client: mqtt.Client, _userdata: Any, flags: mqtt.ConnectFlags,
                    reason: Any, _props: Any) -> None:
        if reason.is_failure:
            log.error("MQTT broker %s refused the connection: %s", self._mcfg.url, reason)
            return
        with self._lock:
            self._connection += 1
        if flags.session_present:
            log.info("connected to %s, resuming the stored session", self._mcfg.url)
        else:
            log.warning("connected to %s with a new session: anything published while meterd "
                        "was away (first start, expired session, broker without persistence) "
                        "is not delivered", self._mcfg.url)
        self._subscribe(client)

    def _subscribe(self, client: mqtt.Client) -> None:
        # Resubscribing a present session is harmless and picks up meters added to the config.
        topics = self.topics
        opts: Any = SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)
        if self._mcfg.protocol != "5":
            opts = 1
        self._pending_subs.clear()
        for i in range(0, len(topics), SUBSCRIBE_CHUNK):
            chunk = topics[i:i + SUBSCRIBE_CHUNK]
            rc, mid = client.subscribe([(t, opts) for t in chunk])
            if rc != mqtt.MQTT_ERR_SUCCESS:
                log.error("subscribing to %d topics failed: %s", len(chunk), mqtt.error_string(rc))
                return  # the connection is going down; on_connect will subscribe again
            if mid is not None:
                self._pending_subs[mid] = chunk
        if not self._pending_subs:
            self.ready.set()

    def _on_subscribe(self, _client: mqtt.Client, _userdata: Any, mid: int,
                      reasons: list[Any], _props: Any) -> None:
        topics = self._pending_subs.pop(mid, [])
        refused = [t for t, r in zip(topics, reasons, strict=False) if r.is_failure]
        if refused:
            log.error("broker refused %d subscriptions (ACL?), no data from: %s",
                      len(refused), ", ".join(refused[:20]))
        if not self._pending_subs:
            self.ready.set()

    def _on_log(self, _client: mqtt.Client, _userdata: Any, level: int, text: str) -> None:
        # paho 2.2 logs "Client is not connected" at ERROR on every clean disconnect.
        quiet = level != mqtt.MQTT_LOG_ERR or self._stopping.is_set()
        log.log(logging.DEBUG if quiet else logging.WARNING, "paho: %s", text)

    def _on_connect_fail(self, _client: mqtt.Client, _userdata: Any) -> None:
        log.warning("cannot connect to MQTT broker %s; retrying with backoff", self._mcfg.url)

    def _on_disconnect(self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any,
                       _props: Any) -> None:
        self.ready.clear()
        with self._lock:
            self._connection += 1
        if not self._stopping.is_set():
            log.warning("disconnected from %s (%s); reconnecting", self._mcfg.url, reason)

    def _on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self._queue.put(_Message(msg.topic, bytes(msg.payload), msg.mid, msg.qos, time.time_ns(),
                                 self._connection))

    # -- worker thread ------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            batch = self._collect()
            if batch:
                self._process(batch)

    def _collect(self) -> list[_Message]:
        """Up to ``batch_max`` messages: wait ``batch_wait_s`` after the first for more."""
        try:
            batch = [self._queue.get(timeout=0.2)]
        except queue.Empty:
            return []
        deadline = time.monotonic() + self.batch_wait_s
        while len(batch) < self.batch_max:
            left = deadline - time.monotonic()
            try:
                batch.append(self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _process(self, batch: list[_Message]) -> None:
        parsed = [self._parse(m) for m in batch]
        delay = self.retry_initial_s
        while any(p.readings for p in parsed):
            try:
                self._submit([r for p in parsed for r in p.readings])
                break
            except Exception as exc:  # any failure: the broker still holds the unacked messages
                SUBMIT_FAILURES.inc()
                log.warning("submit of %d MQTT messages failed, retrying: %s", len(parsed), exc)
                if self._stopping.wait(delay):
                    return  # stopping: leave them unacked for redelivery next start
                delay = min(delay * 2, self.retry_max_s)
                # After a reconnect the broker redelivers these itself; drop our stale copies.
                parsed = [p for p in parsed if p.message.connection == self._connection]
        self._ack([p.message for p in parsed])
        for p in parsed:
            MESSAGES.labels(p.result).inc()

    def _parse(self, msg: _Message) -> _Parsed:
        meters = self._meters_for(msg.topic)
        if not meters:
            REJECTS.reject("mqtt", "unknown_topic", f"{msg.topic}: no meter has this mqtt_topic")
            return _Parsed(msg, [], "rejected")
        readings: list[Reading] = []
        rejected = 0
        for meter in meters:
            try:
                good, bad = self._parse_payload(msg.payload, meter, msg.received_ns, self._tz)
            except Exception as exc:  # a parser bug must not stall the session on one message
                log.exception("parsing a message on %s for meter %s failed", msg.topic, meter.id)
                good, bad = [], [Invalid("internal_error", f"meter {meter.id}: {exc!r}")]
            readings += good
            rejected += len(bad)
            for inv in bad:
                REJECTS.reject("mqtt", inv.reason, f"{msg.topic}: {inv.detail}")
        result = "rejected" if not readings else "partial" if rejected else "accepted"
        return _Parsed(msg, readings, result)

    def _ack(self, messages: list[_Message]) -> None:
        with self._lock:
            for m in messages:
                # A stale id would ack whatever the broker now sends under that id.
                if m.qos > 0 and m.connection == self._connection:
                    self._client.ack(m.mid, m.qos)

    def _meters_for(self, topic: str) -> list[MeterConfig]:
        found = self._exact.get(topic, [])
        if self._wildcard:
            found = found + [m for sub, m in self._wildcard if mqtt.topic_matches_sub(sub, topic)]
        return found


def _topic_index(meters: list[MeterConfig]) -> tuple[dict[str, list[MeterConfig]],
                                                      list[tuple[str, MeterConfig]]]:
    """Exact topics for a dict lookup; wildcard subscriptions matched one by one."""
    exact: dict[str, list[MeterConfig]] = {}
    wildcard: list[tuple[str, MeterConfig]] = []
    for m in meters:
        if m.mqtt_topic is None:
            continue
        if "+" in m.mqtt_topic or "#" in m.mqtt_topic:
            wildcard.append((m.mqtt_topic, m))
        else:
            exact.setdefault(m.mqtt_topic, []).append(m)
    return exact, wildcard


def _str(path: object) -> str | None:
    return None if path is None else str(path)
