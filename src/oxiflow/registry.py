"""The plugin registry: oxi name -> :class:`OxiSpec`.

Names come from the ``oxiflow.oxis`` entry-point group (built-ins and third parties alike) and
from :meth:`Registry.register` (tests, notebooks). A plugin's module is imported only when its
name is looked up, so listing names or validating one pipeline stays fast.
"""

from __future__ import annotations

import difflib
from typing import Any

from oxiflow.oxi import OxiSpec
from oxiflow.plugin_index import PluginEntry, entry_points

ENTRY_POINT_GROUP = "oxiflow.oxis"


class UnknownOxiError(KeyError):
    def __init__(self, name: str, suggestion: str | None) -> None:
        super().__init__(name)
        self.name = name
        self.suggestion = suggestion

    def __str__(self) -> str:
        text = f"unknown oxi {self.name!r}"
        if self.suggestion:
            text += f" (did you mean {self.suggestion!r}?)"
        return text


class PluginLoadError(RuntimeError):
    pass


class Registry:
    def __init__(self, *, load_entry_points: bool = True) -> None:
        self._specs: dict[str, OxiSpec] = {}
        self._entry_points: dict[str, PluginEntry] | None = None if load_entry_points else {}

    def _eps(self) -> dict[str, PluginEntry]:
        if self._entry_points is None:
            self._entry_points = entry_points(ENTRY_POINT_GROUP)
        return self._entry_points

    def register(self, target: Any) -> OxiSpec:
        """Register a class decorated with :func:`oxiflow.oxi.oxi` (or an ``OxiSpec``)."""
        spec = target if isinstance(target, OxiSpec) else target.spec
        self._specs[spec.name] = spec
        return spec

    def names(self) -> list[str]:
        return sorted(set(self._eps()) | set(self._specs))

    def __contains__(self, name: str) -> bool:
        return name in self._specs or name in self._eps()

    def suggest(self, name: str) -> str | None:
        matches = difflib.get_close_matches(name, self.names(), n=1, cutoff=0.6)
        return matches[0] if matches else None

    def get(self, name: str) -> OxiSpec:
        spec = self._specs.get(name)
        if spec is not None:
            return spec
        ep = self._eps().get(name)
        if ep is None:
            raise UnknownOxiError(name, self.suggest(name))
        try:
            loaded = ep.load()
        except Exception as exc:
            origin = f" from package {ep.dist_name!r}" if ep.dist_name is not None else ""
            raise PluginLoadError(f"oxi {name!r}{origin} failed to load ({ep.value}): {exc}") from exc
        spec = loaded if isinstance(loaded, OxiSpec) else getattr(loaded, "spec", None)
        if not isinstance(spec, OxiSpec):
            raise PluginLoadError(f"entry point {name!r} ({ep.value}) is not an oxi (no .spec)")
        if spec.name != name:
            raise PluginLoadError(f"entry point {name!r} ({ep.value}) registers oxi {spec.name!r}")
        self._specs[name] = spec
        return spec

    def origin(self, name: str) -> str:
        """Which package provides an oxi (for `plugins list`)."""
        ep = self._eps().get(name)
        if ep is None:
            return "registered in code"
        return ep.dist_name or "unknown"


_default: Registry | None = None


def default_registry() -> Registry:
    global _default
    if _default is None:
        _default = Registry()
    return _default
