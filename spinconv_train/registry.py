"""Explicit name -> class registries for models, datasets, trainers and loggers.

Entries are added with the ``register`` decorator in each module; the registries are
filled by importing the packages that define them (``populate``), never by globbing
the file system at import time.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

# Packages whose import registers every built-in entry.
_BUILTIN_PACKAGES = (
    "spinconv_train.models",
    "spinconv_train.datasets",
    "spinconv_train.tasks",
    "spinconv_train.loggers",
)


class RegistryError(KeyError):
    """Raised for an unknown or duplicate registry name."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


class Registry:
    """A mapping from names (and aliases) to registered objects of one kind."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Any] = {}

    def register(self, name: str, *aliases: str) -> Callable[[T], T]:
        """Decorator registering an object under ``name`` and any ``aliases``."""

        def decorator(obj: T) -> T:
            for key in (name, *aliases):
                existing = self._entries.get(key)
                if existing is not None and existing is not obj:
                    raise RegistryError(
                        f"{self.kind} name {key!r} is already registered to {existing!r}"
                    )
                self._entries[key] = obj
            return obj

        return decorator

    def get(self, name: str) -> Any:
        """Return the object registered as ``name``; the error lists the known names."""
        populate()
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "(none)"
            raise RegistryError(f"unknown {self.kind} {name!r}; known {self.kind}s: {known}") from None

    def names(self) -> list[str]:
        populate()
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        populate()
        return name in self._entries


MODELS = Registry("model")
DATASETS = Registry("dataset")
TRAINERS = Registry("trainer")
LOGGERS = Registry("logger")

_populated = False


def populate() -> None:
    """Import the built-in packages so that their entries are registered (idempotent)."""
    global _populated
    if _populated:
        return
    _populated = True
    for package in _BUILTIN_PACKAGES:
        try:
            importlib.import_module(package)
        except ModuleNotFoundError as err:
            # A package that does not exist yet is skipped; an import error inside one is not.
            if err.name != package:
                _populated = False
                raise
