"""De-identification, pure: what may leave the gateway of each reading."""
