"""Lazy package attributes (PEP 562): a package's public names load their module on first use,
so a light part of it (its settings, which the launch file reads on the system Python) imports
without the heavy ones."""
from __future__ import annotations

from collections.abc import Callable
from importlib import import_module


def attribute_loader(package: str, modules: dict[str, str]) -> Callable[[str], object]:
    """The package's `__getattr__`: `name` from `package.<modules[name]>`."""
    def __getattr__(name: str) -> object:
        if name not in modules:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(import_module(f"{package}.{modules[name]}"), name)
    return __getattr__
