"""The HTTP surface: REST API, live events and metrics over the engine."""

from canaryguard.api.app import create_app

__all__ = ["create_app"]
