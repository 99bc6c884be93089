"""``python -m hookd.forwarder``: the forwarder process, started by the daemon."""

import sys

from hookd.forwarder.forwarder import main

sys.exit(main())
