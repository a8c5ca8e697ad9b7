"""Simulated device fleets that publish through a real MQTT broker (R7).

Generation (`fleet`, `people`, `malformed`, `traffic`) is pure and deterministic given a seed,
so tests can replay it without a broker; only `publisher` and `cli` do I/O. Nothing here may
import `gateway`: the simulator must see the gateway only as a broker subscriber would.
"""
