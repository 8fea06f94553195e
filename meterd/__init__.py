"""meterd: campus energy and water metering monitor."""

__version__ = "0.1.0"
