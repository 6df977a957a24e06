"""`python -m corral.daemon`: the daemon in the foreground (what `corral serve` runs)."""

import sys

from corral.daemon.serve import main

sys.exit(main())
