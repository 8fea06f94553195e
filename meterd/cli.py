"""The ``meterd`` command: each subcommand lives beside the feature it drives."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from meterd import __version__

# Each module exposes ``register(subparsers)`` that adds its parser and sets ``func(args) -> int``.
COMMAND_MODULES = (
    "meterd.daemon",
    "meterd.check",
    "simulators.cli",
    "meterd.leaks.cli",
    "meterd.canteens.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meterd",
        description="Campus energy and water metering monitor: Modbus/MQTT meters into InfluxDB, "
                    "leak detection and canteen savings reports.")
    parser.add_argument("--version", action="version", version=f"meterd {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
                continue  # feature not installed in this build
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
