"""The ``canaryguard`` command line."""

from canaryguard.cli.app import app, main

__all__ = ["app", "main"]
