"""
A Nevow-compatible page API on Python 3 and current Twisted.

C{from tlcache.nevow import rend, loaders, tags as T, inevow, url,
appserver}: Nevow's pages, templates, stan, contexts and site, rendered by
a precompiling flattener. L{installAlias} makes C{import nevow} load this
package, so Nevow applications run after only their Python 3 edits.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType
from typing import Any, Dict, Optional, Sequence

__all__ = ["installAlias", "namespace", "uninstallAlias"]

namespace = "http://nevow.com/ns/nevow/0.1"

_ALIAS = "nevow"
_TARGET = __name__


class _AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """
    Finds C{nevow} and C{nevow.*} as the modules of this package.
    """

    def __init__(self) -> None:
        self._specs: Dict[str, Any] = {}

    def find_spec(
        self, fullname: str, path: Optional[Sequence[str]], target: Any = None
    ) -> Optional[importlib.machinery.ModuleSpec]:
        if fullname != _ALIAS and not fullname.startswith(_ALIAS + "."):
            return None
        real = _TARGET + fullname[len(_ALIAS) :]
        if importlib.util.find_spec(real) is None:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(_TARGET + spec.name[len(_ALIAS) :])
        self._specs[module.__name__] = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # The module is this package's, already imported and run; the import
        # system gave it the alias's spec, so give it its own back.
        module.__spec__ = self._specs.pop(module.__name__)


_finder: Optional[_AliasFinder] = None


def installAlias() -> None:
    """
    Make C{import nevow}, C{from nevow import rend} and the like import
    this package's modules. Undo with L{uninstallAlias}.
    """
    global _finder
    if _finder is None:
        _finder = _AliasFinder()
        sys.meta_path.insert(0, _finder)


def uninstallAlias() -> None:
    """
    Undo L{installAlias}: C{nevow} is no longer importable as this package
    (modules that already imported it keep what they have).
    """
    global _finder
    if _finder is None:
        return
    if _finder in sys.meta_path:
        sys.meta_path.remove(_finder)
    _finder = None
    for name in list(sys.modules):
        if name == _ALIAS or name.startswith(_ALIAS + "."):
            module = sys.modules[name]
            if getattr(module, "__name__", "").startswith(_TARGET):
                del sys.modules[name]
