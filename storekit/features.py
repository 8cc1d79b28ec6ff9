"""State a feature module keeps per Database (a search column cache, "the events table
exists"), held by the feature itself rather than as private attributes of Database.

Entries live as long as their Database (weak keys); nothing here is on the per-call path.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class FeatureState(Generic[T]):
    """One value per Database, made by `factory` on first use."""

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._values: weakref.WeakKeyDictionary[Any, T] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def of(self, db: Any) -> T:
        try:
            return self._values[db]
        except KeyError:
            with self._lock:
                return self._values.setdefault(db, self._factory())

    def clear(self, db: Any) -> None:
        with self._lock:
            self._values.pop(db, None)
