"""`python -m corral.client ...`: the `corral` command (the background start uses it)."""

from corral.client.cli import main

main(prog_name="corral")
