"""Vendor codecs: pure functions from (topic, payload) to canonical readings, and back."""
