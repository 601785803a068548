"""A tiny name -> factory registry, one per extension point (timm-style).

Adding a dataset / model / optimizer / loader / recorder is one new function
plus one decorator line; nothing else needs an if-chain.
"""
from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, key: str):
        self.kind = kind  # e.g. "model"
        self.key = key  # the config key that selects an entry, e.g. "model.arch"
        self._entries: dict[str, T] = {}
        self._help: dict[str, str] = {}

    def register(self, name: str, help: str = "") -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._entries[name] = obj
            self._help[name] = help or (getattr(obj, "__doc__", "") or "").strip().split("\n")[0]
            return obj

        return deco

    def get(self, name: str) -> T:
        """Look ``name`` up (case-insensitively as a fallback: ``--optimizer sgd`` finds ``SGD``)."""
        return self._entries[self.canonical(name)]

    def canonical(self, name: str) -> str:
        """The registered spelling of ``name`` (``ResNet18`` -> ``resnet18``): what configs store and compare."""
        if name in self._entries:
            return name
        folded = [key for key in self._entries if key.lower() == str(name).lower()]
        if len(folded) == 1:
            return folded[0]
        raise ConfigError(self.unknown_message(name))

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, self.names(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"{self.key}: unknown {self.kind} {name!r}{hint}; choose one of: {', '.join(self.names())}"

    def describe(self, name: str) -> str:
        return self._help[name]

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def names(self) -> list[str]:
        return sorted(self._entries)

    def items(self) -> Iterator[tuple[str, str]]:
        for name in self.names():
            yield name, self._help[name]
