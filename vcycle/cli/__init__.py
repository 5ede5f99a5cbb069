"""The faces: the ``vcycle`` command line (``main``) and what it prints."""

from vcycle.cli.main import main

__all__ = ["main"]
