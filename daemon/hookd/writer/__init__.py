"""Runs in the writer process (``python -m hookd.writer``) and in the operator commands that
write the store without a daemon (``hookd import``, ``rebuild``, ``vacuum``).

Synchronous code only: no asyncio, uvloop or aiosqlite, and nothing from ``hookd.daemon``
(tests/test_layout.py checks the imports). The writer owns the schema, the SQLite inserts, the
JSONL mirror and retention's deletions.
"""
