"""Adapters: concrete implementations of the engine's ports."""
