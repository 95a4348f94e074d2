"""Utilities on top of the core API, as in Ray's ``ray.util``."""
from rayx.util import scheduling_strategies  # noqa: F401

__all__ = ["scheduling_strategies"]
