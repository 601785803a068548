"""A tiny name -> factory registry, one per extension point (timm-style).

Adding a dataset / model / optimizer / loader / recorder is one new function
plus one decorator line; nothing else needs an if-chain.
"""
from __future__ import annotations

import difflib
import re
from typing import Callable, Generic, Iterator, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, key: str):
        self.kind = kind  # e.g. "model"
        self.key = key  # the config key that selects an entry, e.g. "model.arch"
        self._entries: dict[str, T] = {}
        self._help: dict[str, str] = {}
        # name families such as ``wrn_D_W``: (template shown to users, full-match regex, builder)
        self._families: list[tuple[str, re.Pattern[str], Callable[[re.Match[str]], T]]] = []

    def register(self, name: str, help: str = "") -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._entries[name] = obj
            self._help[name] = help or (getattr(obj, "__doc__", "") or "").strip().split("\n")[0]
            return obj

        return deco

    def register_family(self, template: str, pattern: str, build: Callable[[re.Match[str]], T],
                        help: str) -> None:
        """Entries built on demand from their name, e.g. ``wrn_D_W`` for any WideResNet depth and width.

        ``build(match)`` gets the full match of ``pattern`` and raises ConfigError for
        values the family cannot take (one line naming the rule).
        """
        self._families.append((template, re.compile(pattern), build))
        self._help[template] = help

    def get(self, name: str) -> T:
        """Look ``name`` up (case-insensitively as a fallback: ``--optimizer sgd`` finds ``SGD``)."""
        key = self.canonical(name)
        if key in self._entries:
            return self._entries[key]
        return next(build(m) for _, pattern, build in self._families if (m := pattern.fullmatch(key)))

    def canonical(self, name: str) -> str:
        """The registered spelling of ``name`` (``ResNet18`` -> ``resnet18``): what configs store and compare."""
        if name in self._entries:
            return name
        if any(pattern.fullmatch(str(name)) for _, pattern, _ in self._families):
            return str(name)
        folded = [key for key in self._entries if key.lower() == str(name).lower()]
        if len(folded) == 1:
            return folded[0]
        raise ConfigError(self.unknown_message(name))

    def unknown_message(self, name: str) -> str:
        choices = self.names() + [template for template, _, _ in self._families]
        close = difflib.get_close_matches(name, choices, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"{self.key}: unknown {self.kind} {name!r}{hint}; choose one of: {', '.join(choices)}"

    def describe(self, name: str) -> str:
        return self._help[name]

    def __contains__(self, name: str) -> bool:
        return name in self._entries or any(p.fullmatch(str(name)) for _, p, _ in self._families)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def items(self) -> Iterator[tuple[str, str]]:
        """Every entry with its help, then every family's template (e.g. ``wrn_D_W``)."""
        for name in [*self.names(), *(template for template, _, _ in self._families)]:
            yield name, self._help[name]
