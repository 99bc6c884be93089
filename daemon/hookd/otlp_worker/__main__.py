"""``python -m hookd.otlp_worker``: the OTLP decoding process, started by the daemon."""

import sys

from hookd.otlp_worker.worker import main

sys.exit(main())
