"""``meterd check``: validate the config, then reach every server and link it names."""

from __future__ import annotations

import argparse
import os
import socket
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from meterd.config import Config, ConfigError, LinkConfig, MqttConfig
from meterd.daemon import load_daemon_config

CHECK_TIMEOUT_S = 5.0


def check_influx(cfg: Config) -> str:
    from meterd.daemon import build_sink

    build_sink(cfg.influxdb).ping()
    return f"{cfg.influxdb.url} ({cfg.influxdb.api}) answers"


def check_mqtt(mc: MqttConfig) -> str:
    import paho.mqtt.client as mqtt

    from meterd.secrets import read_secret

    # A distinct client id: reusing the daemon's would disconnect a running meterd.
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{mc.client_id}-check-"
                         f"{uuid.uuid4().hex[:6]}")
    url = urlsplit(mc.url)
    if url.scheme == "mqtts":
        client.tls_set(ca_certs=str(mc.ca_file) if mc.ca_file else None,
                       certfile=str(mc.cert_file) if mc.cert_file else None,
                       keyfile=str(mc.key_file) if mc.key_file else None)
    if mc.username:
        client.username_pw_set(mc.username, read_secret(mc.password_file, "METERD_MQTT_PASSWORD"))
    done = threading.Event()
    result: dict[str, Any] = {}

    def on_connect(_c: Any, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        result["rc"] = rc
        done.set()

    client.on_connect = on_connect
    client.connect(url.hostname or "127.0.0.1", url.port or (8883 if url.scheme == "mqtts" else 1883))
    client.loop_start()
    try:
        if not done.wait(CHECK_TIMEOUT_S):
            raise TimeoutError(f"no CONNACK from {mc.url} within {CHECK_TIMEOUT_S:.0f} s")
        if result["rc"].is_failure:
            raise ConnectionError(f"broker refused the connection: {result['rc']}")
    finally:
        client.disconnect()
        client.loop_stop()
    return f"{mc.url} accepts connections"


def check_link(link: LinkConfig) -> str:
    url = urlsplit(link.url)
    if url.scheme == "rtu":
        if not os.access(url.path, os.R_OK | os.W_OK):
            raise FileNotFoundError(f"serial device {url.path} is missing or not read/writable")
        return f"serial device {url.path} is present"
    with socket.create_connection((url.hostname or "", url.port or 502), timeout=link.timeout_s * 3):
        pass
    return f"{url.hostname}:{url.port or 502} accepts TCP connections"


def _run_checks(cfg: Config) -> list[tuple[str, bool, str]]:
    checks: list[tuple[str, Callable[[], str]]] = [("influxdb", lambda: check_influx(cfg))]
    if cfg.mqtt is not None:
        mc = cfg.mqtt
        checks.append(("mqtt", lambda: check_mqtt(mc)))
    for link in cfg.links:
        checks.append((f"link {link.name}", lambda lk=link: check_link(lk)))  # type: ignore[misc]
    results = []
    for name, fn in checks:
        try:
            results.append((name, True, fn()))
        except Exception as exc:
            results.append((name, False, f"{type(exc).__name__}: {exc}"))
    return results


def cmd_check(args: argparse.Namespace) -> int:
    try:
        cfg = load_daemon_config(args.config)
    except ConfigError as exc:
        print(f"config: FAIL\n{exc}")
        return 2
    n_modbus = sum(1 for m in cfg.meters if m.link)
    print(f"config: OK ({len(cfg.meters)} meters: {n_modbus} Modbus, "
          f"{len(cfg.meters) - n_modbus} MQTT; {len(cfg.links)} links)")
    if args.offline:
        return 0
    results = _run_checks(cfg)
    for name, ok, detail in results:
        print(f"{name}: {'OK' if ok else 'FAIL'} - {detail}")
    return 0 if all(ok for _, ok, _ in results) else 1


def register(sub: Any) -> None:
    p = sub.add_parser("check", help="validate the config and reach each server and link",
                       description="Validate the config file (exit 2 on errors, naming each bad key), "
                                   "then reach InfluxDB, the MQTT broker and every Modbus link "
                                   "(exit 1 if any is unreachable).")
    p.add_argument("-c", "--config", required=True, type=Path, help="meterd TOML config file")
    p.add_argument("--offline", action="store_true", help="only validate the config")
    p.set_defaults(func=cmd_check)
