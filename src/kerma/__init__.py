"""Kerma: an open registry of patient radiation dose.

The public Python API is :class:`kerma.Registry`; see ``README.md``.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["Registry", "__version__"]


def __getattr__(name: str) -> object:
    """Import :class:`kerma.api.Registry` lazily, so ``import kerma`` stays light."""
    if name == "Registry":
        from kerma.api import Registry

        return Registry
    raise AttributeError(f"module 'kerma' has no attribute {name!r}")
