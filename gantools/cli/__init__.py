"""The command line: `gantools COMMAND`. It parses, calls the library and renders; nothing else."""

from .app import app, main

__all__ = ["app", "main"]
