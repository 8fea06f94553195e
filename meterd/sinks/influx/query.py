"""InfluxQL over HTTP ``/query``: what the analysis adapters and ``meterd check`` read with.

For ``api = "v1"`` the database is ``database`` (and ``retention_policy``) with basic auth; for
``api = "v2"`` InfluxDB 2.x/3.x serve the same v1-compatible ``/query`` endpoint, with
``Authorization: Token ...`` and the bucket as the database.
"""

from __future__ import annotations

import re
from typing import Any

import requests

from meterd.config import InfluxConfig
from meterd.secrets import read_secret
from meterd.sinks.influx import SinkError

PASSWORD_ENV = "METERD_INFLUX_PASSWORD"
TOKEN_ENV = "INFLUX_TOKEN"


class QueryError(SinkError):
    """The query failed; the message carries the server's own error text."""


def tag_regex(values: list[str]) -> str:
    """An InfluxQL regex literal matching exactly these tag values (``"meter" =~ ...``)."""
    return "/^(" + "|".join(re.escape(v).replace("/", r"\/") for v in values) + ")$/"


def v1_auth(cfg: InfluxConfig) -> tuple[str, str] | None:
    """Basic-auth credentials for ``username``, or None when no user is configured."""
    if not cfg.username:
        return None
    password = read_secret(cfg.password_file, PASSWORD_ENV)
    if password is None:
        raise SinkError(f"influxdb.username is {cfg.username!r} but there is no password: set "
                        f"influxdb.password_file or ${PASSWORD_ENV}")
    return (cfg.username, password)


def v2_token(cfg: InfluxConfig) -> str:
    token = read_secret(cfg.token_file, TOKEN_ENV)
    if token is None:
        raise SinkError(f"influxdb api = 'v2' needs a token: set influxdb.token_file or ${TOKEN_ENV}")
    return token


def server_message(resp: requests.Response) -> str:
    """The ``error``/``message`` text of an InfluxDB error response, else the start of its body."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        for key in ("error", "message"):
            if isinstance(body.get(key), str):
                return str(body[key])
    return resp.headers.get("X-Influxdb-Error") or resp.text.strip()[:300] or resp.reason


class InfluxQL:
    """Run InfluxQL statements against the configured server.

    Parameters
    ----------
    cfg
        The ``[influxdb]`` section; credentials are read once, here.
    """

    def __init__(self, cfg: InfluxConfig, session: requests.Session | None = None) -> None:
        self.cfg = cfg
        self.session = session or requests.Session()
        if cfg.api == "v2":
            self.session.headers["Authorization"] = f"Token {v2_token(cfg)}"
            self.db: str = str(cfg.bucket)
            self.rp = None
        else:
            self.session.auth = v1_auth(cfg)
            self.db = cfg.database
            self.rp = cfg.retention_policy

    def query(self, q: str, epoch: str = "s", db: bool = True) -> list[dict[str, Any]]:
        """Every series of every statement in ``q``, as the server's dicts.

        Each dict has ``name``, ``columns``, ``values`` and, for grouped queries, ``tags``.
        ``db=False`` sends no database (for ``SHOW DATABASES``, ``CREATE DATABASE``).
        Raises :class:`QueryError` with the server's message.
        """
        params = {"q": q, "epoch": epoch}
        if db:
            params["db"] = self.db
            if self.rp:
                params["rp"] = self.rp
        try:
            # POST: CREATE/DROP need it, and long queries do not fit in a URL.
            resp = self.session.post(f"{self.cfg.url}/query", data=params, timeout=self.cfg.timeout_s)
        except requests.RequestException as exc:
            raise QueryError(f"InfluxDB at {self.cfg.url} unreachable: {exc}") from None
        if resp.status_code != 200:
            raise QueryError(f"InfluxDB query failed ({resp.status_code}): {server_message(resp)}")
        try:
            results = resp.json()["results"]
        except (ValueError, KeyError, TypeError):
            raise QueryError(f"InfluxDB at {self.cfg.url} sent no query results: "
                             f"{resp.text[:200]!r}") from None
        series: list[dict[str, Any]] = []
        for result in results:
            if "error" in result:
                raise QueryError(f"InfluxDB query failed: {result['error']}")
            series.extend(result.get("series", []))
        return series

    def close(self) -> None:
        self.session.close()
