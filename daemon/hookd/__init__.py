"""hookd: a local event-ingest daemon for hooks."""

__version__ = "0.1.0"
