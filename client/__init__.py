"""corral's client side: the wire types (api/), the `Client` class (http.py), the `corral`
command (cli.py) and its chat loop (repl.py). It talks to the daemon only over HTTP."""
