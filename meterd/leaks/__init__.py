"""Leak detection feature: config, InfluxQL adapter, scheduled job and the `meterd leaks` CLI."""
