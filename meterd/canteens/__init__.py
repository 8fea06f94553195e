"""Per-canteen consumption against savings targets: config, InfluxQL adapter, report and CLI.

The statistics live in :mod:`meterd.analysis.baseline` and :mod:`meterd.analysis.savings`;
this package fetches their arrays and presents their results. See ``docs/canteens.md``.
"""
