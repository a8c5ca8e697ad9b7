"""Simulated device fleets that publish through a real MQTT broker (R7).

Generation (`fleet`, `people`, `malformed`, `traffic`) is pure and deterministic given a seed,
so tests can replay it without a broker; only `publisher`, `mqtt_tools` and `cli` do I/O.
Nothing here may import `gateway`: the simulator must see the gateway only as a broker
subscriber would.

A whole community at the seeds' scale (``gridgate simulate --households 3000``): `community`
(places, households, devices in a vendor-format mix, grid members, the fleet file), `schedule`
(simulated clock and per-device cadences), `formats` (vendor encoding and expected InfluxDB
points), `scenarios` (gas leak, fall, hostile input … at a place) and `community_cli`.
"""
