"""Run the daemon with Settings fields given as JSON: a way for tests to configure retention
without a config file. Not a test module (no ``test_`` prefix); used by tests/test_retention.py.

    python tests/serve_settings.py '{"max_age": 3600, "retention_interval": 0.2}'

Paths come from the environment (HOOKD_HOME) as for ``hookd run``. ``wal_truncate_bytes``
overrides wal.TRUNCATE_BYTES (read by ``wal.should_truncate`` at each checkpoint).
"""

from __future__ import annotations

import json
import logging
import sys

import uvloop

from hookd import wal
from hookd.daemon import app
from hookd.paths import resolve
from hookd.settings import Settings


def main() -> int:
    fields = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    wal.TRUNCATE_BYTES = fields.pop("wal_truncate_bytes", wal.TRUNCATE_BYTES)  # type: ignore[misc]
    logging.basicConfig(level="INFO", stream=sys.stderr, format="hookd: %(levelname)s: %(message)s")
    settings = Settings(paths=resolve(), **fields).validate()
    return uvloop.run(app.serve(settings))


if __name__ == "__main__":
    sys.exit(main())
