"""One registry per extension point, with did-you-mean errors.

Merge methods, utility functions, composite strategies, backends and aligners each keep a :class:`Registry`
and register entries where they are defined::

    MERGE_METHODS = Registry[MergeMethod]("merge method")

    @MERGE_METHODS.register("ties", pretty_name="TIES", paper="https://arxiv.org/abs/2306.01708")
    def ties(...): ...
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from tutti.errors import TuttiError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """A registered object with its display metadata."""

    name: str
    obj: T
    pretty_name: str
    paper: str | None = None
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """A name -> object map whose lookups fail with a did-you-mean message.

    Args:
        kind: what the entries are, for error messages ("merge method", "utility").
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(
        self,
        name: str,
        *,
        pretty_name: str | None = None,
        paper: str | None = None,
        description: str = "",
        **extra: Any,
    ) -> Callable[[T], T]:
        """Decorator that registers ``obj`` under ``name`` and returns it unchanged."""

        def deco(obj: T) -> T:
            self.add(name, obj, pretty_name=pretty_name, paper=paper, description=description, **extra)
            return obj

        return deco

    def add(
        self,
        name: str,
        obj: T,
        *,
        pretty_name: str | None = None,
        paper: str | None = None,
        description: str = "",
        **extra: Any,
    ) -> None:
        """Register ``obj`` under ``name``; a name can be registered once."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        doc = (getattr(obj, "__doc__", None) or "").strip().splitlines()
        self._entries[name] = Entry(
            name=name,
            obj=obj,
            pretty_name=pretty_name or name,
            paper=paper,
            description=description or (doc[0] if doc else ""),
            extra=dict(extra),
        )

    def entry(self, name: str) -> Entry[T]:
        """The entry named ``name``, or a :class:`TuttiError` that suggests the closest names."""
        try:
            return self._entries[name]
        except KeyError:
            raise TuttiError(self.unknown_message(name)) from None

    def get(self, name: str) -> T:
        """The object registered as ``name`` (did-you-mean error if unknown)."""
        return self.entry(name).obj

    def unknown_message(self, name: str) -> str:
        """The one-line message for an unknown ``name``."""
        close = difflib.get_close_matches(name, list(self._entries), n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        return f"unknown {self.kind} {name!r}.{hint} Known: {', '.join(sorted(self._entries))}."

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._entries)

    def entries(self) -> Iterator[Entry[T]]:
        """Iterate over the entries in registration order."""
        return iter(self._entries.values())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)
