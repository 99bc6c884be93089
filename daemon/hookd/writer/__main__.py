"""``python -m hookd.writer``: the writer process, started by the daemon and by ``hookd import``."""

import sys

from hookd.writer.writer import main

sys.exit(main())
