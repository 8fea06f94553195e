"""Sources: plugins that read meters (Modbus, MQTT) and hand Readings to the ingest stage."""
