"""CLI errors: a message and what to do, never a traceback."""
from __future__ import annotations


class CliError(Exception):
    """Raised by commands for expected failures; printed as one red line, exit status 1."""
