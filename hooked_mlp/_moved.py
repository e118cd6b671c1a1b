"""Old module names that moved in 0.3, kept importable: each warns once with its new name.

`MOVED` maps an old dotted module name to the modules that now hold its names (looked up in
order). Importing an old name gives a module whose attributes are read from the new modules,
with one `DeprecationWarning` per old module naming where it went. `analyses` registers its
own moves the same way (`register`), so that this core module names nothing above it.

`RENAMED` does the same for names renamed inside a module (`analyses.fourier.frequency_power`
is now `power_spectrum`): it maps `"module.old_name"` to `"module.new_name"`; the module reads
its old names through `__getattr__ = renamed(__name__)`, one warning per old name.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types
import warnings
from collections.abc import Callable
from importlib import import_module
from typing import Any

MOVED: dict[str, tuple[str, ...]] = {}
RENAMED: dict[str, str] = {}
_warned: set[str] = set()


def _warn(old: str, new: str) -> None:
    if old not in _warned:
        _warned.add(old)
        warnings.warn(f"{old} moved to {new} in hooked-mlp 0.3; import it from there (the old "
                      "name will be removed in 0.4)", DeprecationWarning, stacklevel=4)


class _MovedModule(types.ModuleType):
    """An old module name: its attributes are those of the modules that now hold them."""

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        for target in MOVED[self.__name__]:
            module = import_module(target)
            if hasattr(module, attr):
                _warn(self.__name__, target)
                return getattr(module, attr)
        raise AttributeError(f"module {self.__name__!r} (moved to "
                             f"{' and '.join(MOVED[self.__name__])}) has no attribute {attr!r}")

    def __dir__(self) -> list[str]:
        return sorted({n for t in MOVED[self.__name__] for n in dir(import_module(t))})


class _Loader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return _MovedModule(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        module.__doc__ = f"Moved to {' and '.join(MOVED[module.__name__])}."


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, _Loader())


def renamed(module: str) -> Callable[[str], Any]:
    """A module-level `__getattr__` for `module` that gives each of its old names (the rows of
    `RENAMED` under `module.`) the object of its new name, with one `DeprecationWarning`."""

    def __getattr__(attr: str) -> Any:  # noqa: N807 (the module hook Python looks for)
        new = RENAMED.get(f"{module}.{attr}")
        if new is None:
            raise AttributeError(f"module {module!r} has no attribute {attr!r}")
        old = f"{module}.{attr}"
        if old not in _warned:
            _warned.add(old)
            warnings.warn(f"{old} was renamed {new} in hooked-mlp 0.3; use the new name (the "
                          "old one will be removed in 0.4)", DeprecationWarning, stacklevel=2)
        target, _, name = new.rpartition(".")
        return getattr(import_module(target), name)

    return __getattr__


def register(moves: dict[str, tuple[str, ...]]) -> None:
    """Make each old module name in `moves` importable (see the module's docstring)."""
    MOVED.update(moves)
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.append(_Finder())


register({
    "hooked_mlp.io": ("hooked_mlp.files.checkpoints", "hooked_mlp.files.format"),
    "hooked_mlp.importers": ("hooked_mlp.files.importers",),
    "hooked_mlp.trainer": ("hooked_mlp.training.trainer",),
    "hooked_mlp.backends": ("hooked_mlp.training.backends",),
    "hooked_mlp.cpu_kernel": ("hooked_mlp.training.c_kernel",),
    "hooked_mlp.runs": ("hooked_mlp.training.runs",),
    "hooked_mlp.snapshots": ("hooked_mlp.training.snapshots", "hooked_mlp.files.series"),
})
