"""`python -m segcli` (and `torchrun -m segcli`) runs the command-line interface."""

from segcli.cli import main

main()
