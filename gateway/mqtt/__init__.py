"""MQTT ingest: the paho-mqtt source (persistent session, QoS 1, manual ack after the durable
hand-off) and its bulk receive/ack client."""

from gateway.mqtt.source import Message, MessageSource, PahoSource

__all__ = ["Message", "MessageSource", "PahoSource"]
