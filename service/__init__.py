"""Handshake: connection policies as code."""

__version__ = "0.1.0"
