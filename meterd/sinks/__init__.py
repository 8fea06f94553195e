"""Sinks: plugins that write spooled readings to time-series databases."""
