"""The command line: the argparse tree (app.py) and one module per command. The only code that reads argv or
prints."""

from edge_agent.cli.app import build_parser, main

__all__ = ["build_parser", "main"]
