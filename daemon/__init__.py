"""corral's daemon: the aiohttp app (app.py), its routes, the scheduler that keeps models
in memory, and `corral serve` (serve.py), which runs it on a Unix socket."""

import corral.runtime  # noqa: F401  first: it tunes OpenBLAS's threads before NumPy loads
