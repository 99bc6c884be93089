"""Runs in the daemon process (``hookd run``): the uvloop event loop and everything on it.

Sockets, framing of lines into rows, batching, acknowledgements, control commands, systemd
notifications. Nothing here touches SQLite or the mirror for writing: batches go to the writer
process through ``hookd.wire`` only (tests/test_layout.py checks the imports).
"""
