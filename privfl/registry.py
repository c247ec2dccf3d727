"""One registry for every "config name -> component" table (Opacus'
``accountants/registry.py`` shape, STYLE.md section 2): aggregation rules, poisoning attacks,
engines, data sets, partitioners, server optimizers.

A :class:`Registry` is a read-only mapping filled by :meth:`Registry.register`, which refuses a
key given twice (two classes claiming one config name would otherwise leave whichever came
last). The config's ``Literal`` names are built from its keys, so the name lives in one place.

>>> from privfl.registry import Registry
>>> shapes = Registry[str, type]("shape")
>>> shapes.register("square", dict)
<class 'dict'>
>>> shapes.register("square", list)
Traceback (most recent call last):
...
ValueError: shape 'square' registered twice (<class 'dict'>, then <class 'list'>)
>>> shapes.create("square", a=1)
{'a': 1}
>>> list(shapes)
['square']
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Registry(Mapping[K, V], Generic[K, V]):
    """Named components of one kind, in registration order.

    Args:
        what: what a key names (used in messages), e.g. ``"engine"``.
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self._items: dict[K, V] = {}

    @classmethod
    def of(cls, what: str, items: Iterable[tuple[K, V]]) -> Registry[K, V]:
        """A registry holding ``items`` (``(key, value)`` pairs), each registered in turn."""
        out: Registry[K, V] = cls(what)
        for key, value in items:
            out.register(key, value)
        return out

    @classmethod
    def by_attribute(cls, what: str, attribute: str, classes: Iterable[Any]) -> Registry[Any, Any]:
        """A registry of ``classes`` keyed by each one's ``attribute`` (the key lives in the
        class, once)."""
        return cls.of(what, ((getattr(c, attribute), c) for c in classes))

    def register(self, key: K, value: V) -> V:
        """Add ``value`` under ``key``; raises ValueError when ``key`` is taken."""
        if key in self._items:
            raise ValueError(
                f"{self.what} {key!r} registered twice ({self._items[key]}, then {value})"
            )
        self._items[key] = value
        return value

    def create(self, key: K, *args: Any, **kwargs: Any) -> Any:
        """Call the factory registered under ``key`` with ``args`` and ``kwargs``."""
        factory: Callable[..., Any] = self[key]  # type: ignore[assignment]
        return factory(*args, **kwargs)

    def __getitem__(self, key: K) -> V:
        try:
            return self._items[key]
        except KeyError:
            known = ", ".join(repr(k) for k in self._items)
            raise KeyError(f"unknown {self.what} {key!r}; registered: {known}") from None

    def __iter__(self) -> Iterator[K]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.what!r}, {list(self._items)!r})"


__all__ = ["Registry"]
