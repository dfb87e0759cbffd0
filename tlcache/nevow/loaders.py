# -*- test-case-name: tests.unit.test_nevow_loaders -*-
"""
Document factories: where a page's template comes from.

L{stan} takes a stan tree, L{xmlstr} an XML string and L{xmlfile} an XML
file, which is read again whenever it changes on disk. Each precompiles
its document once (per macro factory class when the document uses macros)
and hands the same precompiled list to every render.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, Hashable, List, Optional, Sequence, Tuple

from twisted.python.components import registerAdapter
from twisted.python.filepath import FilePath
from zope.interface import implementer

from tlcache.nevow._precompile import precompileWithMacros
from tlcache.nevow._xml import parseTemplate
from tlcache.nevow.context import WebContext
from tlcache.nevow.inevow import IQ, IDocFactory, IMacroFactory

__all__ = ["stan", "xmlfile", "xmlstr"]

Preprocessor = Callable[[Any], Any]


@implementer(IDocFactory)
class _DocFactory:
    """
    Precompiles a document on first use and keeps the result.

    @ivar pattern: render only this pattern of the document.
    """

    pattern: Optional[str] = None
    _usesMacros = False

    def __init__(self) -> None:
        self._cache: Dict[Hashable, List[Any]] = {}

    def _document(self) -> Any:
        raise TypeError(f"{type(self).__name__} has no document")

    def load(
        self,
        ctx: Optional[WebContext] = None,
        preprocessors: Sequence[Preprocessor] = (),
    ) -> List[Any]:
        """
        The precompiled document.
        """
        self._checkFresh()
        key = self._cacheKey(ctx, preprocessors)
        compiled = self._cache.get(key)
        if compiled is None:
            document = self._document()
            for preprocessor in preprocessors:
                document = preprocessor(document)
            compiled, usedMacros = precompileWithMacros(document, ctx)
            if self.pattern is not None:
                compiled = [IQ(compiled).onePattern(self.pattern)]
            if usedMacros and not self._usesMacros:
                self._usesMacros = True
                key = self._cacheKey(ctx, preprocessors)
            self._cache[key] = compiled
        return compiled

    def _cacheKey(
        self, ctx: Optional[WebContext], preprocessors: Sequence[Preprocessor]
    ) -> Hashable:
        macroClass = None
        if self._usesMacros and ctx is not None:
            factory = IMacroFactory(ctx, None)
            macroClass = type(factory) if factory is not None else None
        if preprocessors:
            return (macroClass, tuple(preprocessors))
        return macroClass

    def _checkFresh(self) -> None:
        pass


class stan(_DocFactory):  # noqa: N801 - Nevow's name
    """
    A document given as a stan tree.
    """

    stan: Any = None

    def __init__(self, stan: Any = None, pattern: Optional[str] = None) -> None:
        super().__init__()
        if stan is not None:
            self.stan = stan
        if pattern is not None:
            self.pattern = pattern

    def _document(self) -> Any:
        return self.stan


class xmlstr(_DocFactory):  # noqa: N801 - Nevow's name
    """
    A document given as an XML string (C{nevow:} namespace
    C{http://nevow.com/ns/nevow/0.1}).
    """

    template: Any = None
    ignoreDocType = False
    ignoreComment = False

    def __init__(
        self,
        template: Any = None,
        pattern: Optional[str] = None,
        ignoreDocType: Optional[bool] = None,
        ignoreComment: Optional[bool] = None,
    ) -> None:
        super().__init__()
        if template is not None:
            self.template = template
        if pattern is not None:
            self.pattern = pattern
        if ignoreDocType is not None:
            self.ignoreDocType = ignoreDocType
        if ignoreComment is not None:
            self.ignoreComment = ignoreComment

    def _document(self) -> Any:
        return parseTemplate(self.template, self.ignoreDocType, self.ignoreComment)


class xmlfile(_DocFactory):  # noqa: N801 - Nevow's name
    """
    A document read from an XML file, and read again when the file's
    modification time or size changes.
    """

    template: Any = None
    templateDir: Any = None
    ignoreDocType = False
    ignoreComment = False

    def __init__(
        self,
        template: Any = None,
        pattern: Optional[str] = None,
        templateDir: Any = None,
        ignoreDocType: Optional[bool] = None,
        ignoreComment: Optional[bool] = None,
    ) -> None:
        super().__init__()
        if template is not None:
            self.template = (
                template.path if isinstance(template, FilePath) else template
            )
        if pattern is not None:
            self.pattern = pattern
        if templateDir is not None:
            self.templateDir = (
                templateDir.path if isinstance(templateDir, FilePath) else templateDir
            )
        if ignoreDocType is not None:
            self.ignoreDocType = ignoreDocType
        if ignoreComment is not None:
            self.ignoreComment = ignoreComment
        self._stamp: Optional[Tuple[int, int]] = None

    @property
    def path(self) -> str:
        """
        The template file's path.
        """
        if self.templateDir is not None:
            return os.path.join(self.templateDir, self.template)
        return str(self.template)

    def _checkFresh(self) -> None:
        info = os.stat(self.path)
        stamp = (info.st_mtime_ns, info.st_size)
        if stamp != self._stamp:
            self._cache.clear()
            self._stamp = stamp

    def _document(self) -> Any:
        path = self.path
        with open(path, "rb") as template:
            return parseTemplate(
                template.read(), self.ignoreDocType, self.ignoreComment, path
            )


@implementer(IQ)
class _DocFactoryQuery:
    """
    C{IQ(docFactory)}: pattern queries over the loaded document.
    """

    def __init__(self, original: Any) -> None:
        self.original = original

    def patternGenerator(self, pattern: str, default: Any = None) -> Any:
        return IQ(self.original.load()).patternGenerator(pattern, default)

    def allPatterns(self, pattern: str) -> Any:
        return IQ(self.original.load()).allPatterns(pattern)

    def onePattern(self, pattern: str) -> Any:
        return IQ(self.original.load()).onePattern(pattern)


registerAdapter(_DocFactoryQuery, IDocFactory, IQ)
