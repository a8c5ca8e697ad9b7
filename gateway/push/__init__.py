"""HTTP push sources (R1, R8): carrier platforms (OneNET, CTWing) push NB-IoT devices' messages
to a listener in the ingest process; they reach the same pipeline as MQTT's, through a source
beside it, and each push is answered only after its durable hand-off."""
