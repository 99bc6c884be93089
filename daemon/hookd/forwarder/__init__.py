"""The forwarder process: committed events from the local database to a central PostgreSQL.

Runs no event loop and imports nothing of the daemon or the writer (tests/test_layout.py)."""
