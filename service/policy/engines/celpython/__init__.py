"""The reference engine: cel-python, pure Python (docs/adr/0002, docs/adr/0009)."""

from service.policy.engines.celpython.engine import CelPython

__all__ = ["CelPython"]
