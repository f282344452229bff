"""One shape for iclkit's four registries (learners, LM backends, task sources, export formats): a name → value table
filled by ``register`` calls that run when a module is imported, plus the built-in names, mapped to the modules that
register them, so a run imports only what it uses (and, for backends, names declared by installed packages).
"""

from __future__ import annotations

import importlib
from typing import Callable, Generic, Mapping, TypeVar

from iclkit.errors import IclkitError

T = TypeVar("T")


class Registry(Generic[T]):
    """Registered values by name. ``what`` names an entry in messages ("method", "format"); ``field`` is the option
    a bad name came from; ``lazy``: built-in name → module that registers it on import; ``plugins``: more
    name → module pairs found at lookup time (entry points)."""

    def __init__(self, what: str, field: str, lazy: Mapping[str, str],
                 plugins: Callable[[], Mapping[str, str]] | None = None):
        self.what, self.field, self.lazy, self.plugins = what, field, dict(lazy), plugins
        self.values: dict[str, T] = {}

    def add(self, name: str, value: T) -> T:
        """Register ``value`` as ``name`` (a later registration replaces it); returns it, for decorators."""
        self.values[name] = value
        return value

    def remove(self, name: str) -> None:
        """Forget ``name`` if it was registered (unknown names are ignored)."""
        self.values.pop(name, None)

    def names(self) -> list[str]:
        """Every name a lookup accepts: registered, built in, or declared by a plugin; sorted."""
        return sorted(set(self.values) | set(self.lazy) | set(self.plugins() if self.plugins else ()))

    def get(self, name: str, *, file: str | None = None) -> T:
        """The value registered as ``name``, importing the module that registers it on first use; an IclkitError
        naming the valid names for an unknown one, or naming the import that failed for a plugin."""
        if name not in self.values:
            module = self.lazy.get(name) or (self.plugins() if self.plugins else {}).get(name)
            if module is not None:
                try:
                    importlib.import_module(module)
                except ImportError as e:  # a plugin whose own dependencies are missing: say which entry needs them
                    if name in self.lazy:
                        raise
                    raise IclkitError(f"{self.what} {name!r} cannot be imported: {e}", field=self.field) from e
        if name not in self.values:
            raise IclkitError(f"unknown {self.what} {name!r}", file=file, field=self.field,
                              hint=f"available: {', '.join(self.names())}")
        return self.values[name]
