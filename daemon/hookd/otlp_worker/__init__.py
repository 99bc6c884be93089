"""The OTLP decoding process (``python -m hookd.otlp_worker``), started by the daemon."""
