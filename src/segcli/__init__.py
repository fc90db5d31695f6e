"""segcli: a command-line experiment runner for 2-D semantic and instance segmentation."""

__version__ = "0.1.0"
