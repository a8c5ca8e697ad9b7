"""Time-series storage: InfluxDB writers and the line-protocol encoder."""
