"""Upstream delivery from the outbox: MQTT today."""
