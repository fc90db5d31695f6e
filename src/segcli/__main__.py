"""`python -m segcli` (and `torchrun -m segcli`) runs the command-line interface."""

from segcli.cli.app import main

main()
