"""Operator commands that run in the CLI process and only read, ask or install: ``hookd status``,
``tail``, ``query``, ``install-service``, ``hooks install-git``.

They reach a running daemon through its control socket, and the store read-only; they never
import ``hookd.daemon`` (tests/test_layout.py checks the imports).
"""
