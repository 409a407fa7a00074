"""One registry mechanism for every kind of pluggable backend.

Registries today: ``POLICIES`` (policy families, ``policies/base.py``), ``SAMPLERS`` (diffusion
samplers, ``policies/diffusion.py``), ``INTEGRATORS`` (flow integrators, ``policies/flow.py``),
``TASKS`` and ``EXPERTS`` (sim tasks and their scripted experts, ``sim/__init__.py``). Hardware
backends (arms, cameras, teleop devices) are meant to register the same way.

Backends register with a decorator; lookups by an unknown name raise an error that lists
the known names. No if/elif chains over backend names anywhere else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> object mapping for one kind of backend."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@TASKS.register("lift")``."""

        def deco(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is already registered")
            self._entries[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "(none)"
            raise KeyError(f"unknown {self.kind} '{name}'; known: {known}") from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries
