# -*- test-case-name: tests.unit.test_nevow_stan -*-
"""
Stan: documents written as Python expressions (C{div(id="x")["text"]}).

L{Tag} is the tree node: C{()} sets attributes and the specials (C{data},
C{render}, C{pattern}, C{remember}, C{key}, C{macro}), C{[]} appends
children. The markers L{directive}, L{slot}, L{xml}, L{raw}, L{Entity} and
the L{invisible} prototype complete the vocabulary, and L{cached} marks a
fragment whose bytes are cached (see L{tlcache.fragment}). Nothing here
renders: see L{tlcache.nevow.flat}.
"""

from __future__ import annotations

from numbers import Real
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from twisted.python.components import registerAdapter
from zope.interface import implementer

from tlcache.nevow.inevow import IQ

__all__ = [
    "Comment",
    "CommentProto",
    "Entity",
    "NodeNotFound",
    "PatternTag",
    "Proto",
    "patternsByName",
    "Tag",
    "TooManyNodes",
    "Unset",
    "cached",
    "cdata",
    "directive",
    "invisible",
    "raw",
    "slot",
    "specialMatches",
    "visit",
    "xml",
]


class _UnsetType:
    """
    The value of a special that was never set (false in a boolean test).
    """

    __slots__ = ()

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "Unset"

    def __reduce__(self) -> str:
        return "Unset"


Unset = _UnsetType()


class NodeNotFound(KeyError):  # noqa: N818 - Nevow's name
    """
    No pattern (or other node) of the requested name is in the document.
    """

    def __str__(self) -> str:
        kind, name = self.args[:2]
        return f"The {kind} named {name!r} was not found in the template."


class TooManyNodes(Exception):  # noqa: N818 - Nevow's name
    """
    C{onePattern} found more than one pattern of the requested name.
    """

    def __str__(self) -> str:
        kind, name = self.args[:2]
        return f"More than one {kind} named {name!r} was found."


class xml:  # noqa: N801 - Nevow's name
    """
    Markup that is already correct XML: it is written out as it is, never
    escaped.

    @ivar content: the markup, as C{str} (or UTF-8 C{bytes}).
    """

    __slots__ = ("content",)

    def __init__(self, content: Any) -> None:
        self.content = content

    def __repr__(self) -> str:
        return f"xml({self.content!r})"


class raw(str):  # noqa: N801 - Nevow's name
    """
    Text written out exactly as it is, never escaped (a C{str} subclass).
    Prefer L{xml}.
    """

    __slots__ = ()


def cdata(data: str) -> xml:
    """
    A CDATA section holding C{data}.
    """
    return xml(f"<![CDATA[{data}]]>")


class directive:  # noqa: N801 - Nevow's name
    """
    A name to be looked up at render time: C{render=directive("foo")} calls
    the page's C{render_foo}, C{data=directive("bar")} its C{data_bar} (or
    the current data's C{"bar"} item). C{"foo a,b"} passes arguments to a
    parameterised renderer.
    """

    __slots__ = ("name",)

    def __init__(self, name: Any) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"directive({self.name!r})"

    def __hash__(self) -> int:
        return hash((directive, self.name))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, directive):
            return bool(self.name == other.name)
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        if isinstance(other, directive):
            return bool(self.name != other.name)
        return NotImplemented


class slot:  # noqa: N801 - Nevow's name
    """
    A hole in a template, filled at render time by C{ctx.fillSlots(name,
    value)} or C{tag.fillSlots(name, value)} on an enclosing node.

    Children given with C{[]} are not rendered; they are searched for
    patterns.

    @ivar default: rendered when nothing filled the slot (C{None}: an unfilled
        slot is an error).
    """

    __slots__ = (
        "name",
        "children",
        "default",
        "filename",
        "lineNumber",
        "columnNumber",
    )

    def __init__(
        self,
        name: str,
        default: Any = None,
        filename: Optional[str] = None,
        lineNumber: Optional[int] = None,
        columnNumber: Optional[int] = None,
    ) -> None:
        self.name = name
        self.children: List[Any] = []
        self.default = default
        self.filename = filename
        self.lineNumber = lineNumber
        self.columnNumber = columnNumber

    def __repr__(self) -> str:
        return f"slot({self.name!r})"

    def __getitem__(self, children: Any) -> slot:
        if isinstance(children, (list, tuple)):
            self.children.extend(children)
        else:
            self.children.append(children)
        return self

    def __iter__(self) -> Iterator[Any]:
        raise TypeError("stan slots are not iterable")

    def clone(self, deep: bool = True) -> slot:
        """
        A copy of this slot (its children copied too when C{deep}).
        """
        new = slot(
            self.name, self.default, self.filename, self.lineNumber, self.columnNumber
        )
        new.children = (
            [_cloneNode(c) for c in self.children] if deep else self.children[:]
        )
        return new


_VARY_TYPES = (str, bytes, int, float)


def _checkSeconds(name: str, value: Any) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a number of seconds or None, not {value!r}")
    seconds = float(value)
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"{name} must be a positive, finite number of seconds")
    return seconds


class cached:  # noqa: N801 - the 2005 patch's name
    """
    A fragment whose flattened bytes are cached and spliced into the page
    as they are: C{cached(key="news", refresh=10)[children]}.

    The children are rendered apart from the page around them, in a context
    that has the page (its C{render_*} and C{data_*} methods, what it
    remembers) but no request, no session, and none of the data or slots of
    the enclosing tags, so a render is the same whether a request or the
    refresh timer asked for it. A renderer that asks for the request (or the
    session, or the URL segments) fails with
    L{tlcache.nevow._flatten.FragmentRequestError}, naming the fragment.

    @ivar key: the fragment's name (a non-empty C{str}); with C{version},
        the template C{digest} and the C{vary} values it makes the cache key.
        L{tlcache.fragment.FragmentCache.invalidate} takes it.
    @ivar refresh: re-render every C{refresh} seconds in the background (a
        jittered timer), so that only the very first render is waited for;
        or C{None}: render on demand and keep the bytes C{timeout} seconds.
    @ivar timeout: how long rendered bytes may be served: C{None} for as
        long as the cache keeps them. With C{refresh}, the limit on how
        stale the bytes may get while refreshes keep failing.
    @ivar vary: values that select one copy of the fragment among several
        (a language, say): each distinct tuple is cached apart.
    @ivar version: bump it to give the fragment new keys (the old bytes then
        age out).
    @ivar digest: the digest of the template this node came from (set by the
        XML loaders, so that editing a template gives its fragments new
        keys).
    @ivar cache: the L{tlcache.fragment.FragmentCache} to use; C{None}: the
        one remembered in the context (as
        L{tlcache.nevow.inevow.IFragmentCache}), else the process default.
    @ivar fullKey: the cache key, C{(key, version, digest, vary)}.
    """

    __slots__ = (
        "key",
        "refresh",
        "timeout",
        "vary",
        "version",
        "digest",
        "cache",
        "children",
        "fullKey",
    )

    def __init__(
        self,
        key: str,
        refresh: Optional[float] = None,
        timeout: Optional[float] = None,
        vary: Any = (),
        version: Any = "",
        cache: Any = None,
        digest: str = "",
    ) -> None:
        if not isinstance(key, str):
            raise TypeError(f"a cached fragment's key must be a str, not {key!r}")
        if not key:
            raise ValueError("a cached fragment needs a non-empty key")
        if isinstance(vary, _VARY_TYPES):
            vary = (vary,)
        varyValues: List[str] = []
        for value in vary:
            if not isinstance(value, _VARY_TYPES):
                raise TypeError(
                    f"fragment {key!r}: vary values must be str, bytes or numbers,"
                    f" not {value!r}"
                )
            if isinstance(value, bytes):
                value = value.decode("utf-8", "surrogateescape")
            varyValues.append(str(value))
        if not isinstance(version, (str, int)) or isinstance(version, bool):
            raise TypeError(f"fragment {key!r}: version must be a str, not {version!r}")
        self.key = key
        self.refresh = _checkSeconds("refresh", refresh)
        self.timeout = _checkSeconds("timeout", timeout)
        self.vary: Tuple[str, ...] = tuple(varyValues)
        self.version = str(version)
        self.digest = str(digest)
        self.cache = cache
        self.children: List[Any] = []
        self.fullKey: Tuple[str, str, str, Tuple[str, ...]] = (
            key,
            self.version,
            self.digest,
            self.vary,
        )

    def __getitem__(self, children: Any) -> cached:
        if isinstance(children, (list, tuple)):
            self.children.extend(children)
        else:
            self.children.append(children)
        return self

    def __iter__(self) -> Iterator[Any]:
        raise TypeError("cached fragments are not iterable; use .children")

    def withChildren(self, children: List[Any]) -> cached:
        """
        A copy of this node with C{children} (a list, not copied).
        """
        new = cached.__new__(cached)
        for name in cached.__slots__:
            setattr(new, name, getattr(self, name))
        new.children = children
        return new

    def clone(self, deep: bool = True) -> cached:
        """
        A copy of this node (its children copied too when C{deep}).
        """
        return self.withChildren(
            [_cloneNode(c) for c in self.children] if deep else self.children[:]
        )

    def __repr__(self) -> str:
        options = "".join(
            f", {name}={getattr(self, name)!r}"
            for name in ("refresh", "timeout", "vary", "version", "digest")
            if getattr(self, name)
        )
        return f"cached(key={self.key!r}{options})[{self.children!r}]"


class Entity:
    """
    A named character entity, written as C{&name;} for the XML ones and as a
    numeric reference otherwise.
    """

    __slots__ = ("name", "num", "description")

    def __init__(self, name: str, num: Any, description: str = "") -> None:
        self.name = name
        self.num = int(num)
        self.description = description

    def __repr__(self) -> str:
        return f"Entity({self.name!r}, {self.num!r}, {self.description!r})"

    def markup(self) -> str:
        """
        The entity as markup: C{&amp;} or C{&#160;}.
        """
        if self.name in ("amp", "lt", "gt", "quot", "apos"):
            return f"&{self.name};"
        return f"&#{self.num};"


def _cloneNode(node: Any, deep: bool = True) -> Any:
    clone = getattr(node, "clone", None)
    if clone is not None and not isinstance(node, type):
        return clone(deep)
    if isinstance(node, (list, tuple)):
        return [_cloneNode(x, deep) for x in node]
    return node


_SPECIALS = ("data", "render", "remember", "pattern", "key", "macro")


@implementer(IQ)
class Tag:
    """
    An element: a name, attributes, children and the render-time specials.

    C{tag(**attributes)} sets attributes (a trailing or leading C{_} is
    dropped, so C{class_="x"} sets C{class}) and specials; C{tag[children]}
    appends children. Both return the tag, so trees nest naturally. The
    empty name (L{invisible}) renders only the children.

    @ivar slotData: slots filled on this tag with L{fillSlots}, or C{None}.
    """

    specials = _SPECIALS

    # The specials live in the instance dict only when set; the class
    # attributes are their defaults.
    data: Any = Unset
    render: Any = Unset
    remember: Any = Unset
    pattern: Any = Unset
    key: Any = Unset
    macro: Any = Unset
    slotData: Optional[dict] = None
    filename: Optional[str] = None
    lineNumber: Optional[int] = None
    columnNumber: Optional[int] = None

    # Set by the sequence renderer on the clones it makes for one use only,
    # which the flattener then need not clone again before rendering.
    _fresh = False

    def __init__(
        self,
        tag: str,
        attributes: Optional[dict] = None,
        children: Optional[list] = None,
        specials: Optional[dict] = None,
        filename: Optional[str] = None,
        lineNumber: Optional[int] = None,
        columnNumber: Optional[int] = None,
    ) -> None:
        self.tagName = str(tag)
        self.attributes = {} if attributes is None else attributes
        self.children = [] if children is None else children
        if specials:
            for name, value in specials.items():
                if name not in _SPECIALS:
                    raise TypeError(f"{name!r} is not a stan special")
                setattr(self, name, value)
        if filename is not None:
            self.filename = filename
        if lineNumber is not None:
            self.lineNumber = lineNumber
        if columnNumber is not None:
            self.columnNumber = columnNumber

    def __call__(self, **kw: Any) -> Tag:
        """
        Set attributes and specials; return this tag.
        """
        for name, value in kw.items():
            if name in _SPECIALS:
                setattr(self, name, value)
                continue
            if name[-1:] == "_":
                name = name[:-1]
            elif name[:1] == "_":
                name = name[1:]
            self.attributes[name] = value
        return self

    def __getitem__(self, children: Any) -> Tag:
        """
        Append children (a list or tuple appends each of its items); return
        this tag.
        """
        if isinstance(children, (list, tuple)):
            self.children.extend(children)
        else:
            self.children.append(children)
        return self

    def __iter__(self) -> Iterator[Any]:
        raise TypeError("stan tags are not iterable; use tag.children")

    def fillSlots(self, slotName: str, slotValue: Any) -> Tag:
        """
        Fill the slots named C{slotName} below this tag with C{slotValue}.
        """
        if self.slotData is None:
            self.slotData = {}
        self.slotData[slotName] = slotValue
        return self

    def _clearSpecials(self) -> None:
        d = self.__dict__
        for name in _SPECIALS:
            d.pop(name, None)

    def clear(self) -> Tag:
        """
        Remove the children and the specials; return this tag.
        """
        self._clearSpecials()
        self.children = []
        return self

    def clone(self, deep: bool = True, clearPattern: bool = False) -> Tag:
        """
        A copy of this tag. With C{deep}, the children (and attribute and
        slot values) are copied too; otherwise the new tag has its own
        children list holding the same children.
        """
        new = Tag.__new__(Tag)
        d = new.__dict__
        d.update(self.__dict__)
        d.pop("_fresh", None)
        d.pop("_rowPlanCache", None)
        if deep:
            new.children = [_cloneNode(c) for c in self.children]
            new.attributes = {k: _cloneNode(v) for k, v in self.attributes.items()}
        else:
            new.children = self.children[:]
            new.attributes = self.attributes.copy()
        if self.slotData:
            new.slotData = {k: _cloneNode(v) for k, v in self.slotData.items()}
        if clearPattern:
            new.pattern = None
        return new

    def _patternClone(self, data: Any) -> Tag:
        # The sequence renderer's clone: shallow, pattern cleared, its data
        # set, and marked as owned by the renderer.
        new = Tag.__new__(Tag)
        d = new.__dict__
        d.update(self.__dict__)
        d.pop("_rowPlanCache", None)
        d["children"] = self.children[:]
        d["attributes"] = self.attributes.copy()
        if self.slotData:
            d["slotData"] = self.slotData.copy()
        d["pattern"] = None
        d["data"] = data
        d["_fresh"] = True
        return new

    def patternGenerator(self, pattern: str, default: Any = None) -> PatternTag:
        """
        An endless supply of copies of the C{pattern} patterns below this tag,
        cycling through them in document order; copies of C{default} when
        there are none (or L{NodeNotFound} if C{default} is C{None}).
        """
        return PatternTag(_patternClones(self, pattern, default))

    def allPatterns(self, pattern: str) -> List[Tag]:
        """
        Copies of every C{pattern} pattern below this tag.
        """
        return [
            t.clone(deep=False, clearPattern=True)
            for t in specialMatches(self, "pattern", pattern)
        ]

    def onePattern(self, pattern: str) -> Tag:
        """
        A copy of the only C{pattern} pattern below this tag (or this tag
        itself if it is that pattern).

        @raise NodeNotFound: there is none.
        @raise TooManyNodes: there is more than one.
        """
        if self.pattern == pattern:
            return self.clone(deep=False, clearPattern=True)
        return _onlyOne(
            specialMatches(self, "pattern", pattern), "pattern", pattern
        ).clone(deep=False, clearPattern=True)

    def __repr__(self) -> str:
        parts = [repr(self.tagName)]
        if self.attributes:
            parts.append(f"attributes={self.attributes!r}")
        specials = {n: getattr(self, n) for n in _SPECIALS if n in self.__dict__}
        if specials:
            parts.append(f"specials={specials!r}")
        if self.children:
            parts.append(f"children={self.children!r}")
        return f"Tag({', '.join(parts)})"


class Comment(Tag):
    """
    An XML comment: its children are written between C{<!--} and C{-->}.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__("", *args, **kwargs)

    def __call__(self, **kw: Any) -> Tag:
        raise TypeError("comments take no attributes")

    def clone(self, deep: bool = True, clearPattern: bool = False) -> Tag:
        """
        A copy of this comment.
        """
        new = Comment()
        new.children = (
            [_cloneNode(c) for c in self.children] if deep else self.children[:]
        )
        return new


class Proto(str):
    """
    A tag prototype: the name of an element (a C{str}) that makes a new
    L{Tag} when called or indexed, so C{p["text"]} and C{p(class_="x")} work
    directly on the module-level names in L{tlcache.nevow.tags}.
    """

    __slots__ = ()

    def __call__(self, **kw: Any) -> Tag:
        return Tag(self)(**kw)

    def __getitem__(self, children: Any) -> Tag:  # type: ignore[override]
        return Tag(self)[children]

    def fillSlots(self, slotName: str, slotValue: Any) -> Tag:
        """
        A new tag of this name with one slot filled.
        """
        return Tag(self).fillSlots(slotName, slotValue)

    def clone(self, deep: bool = True) -> Proto:
        """
        Prototypes are immutable: the clone is the prototype itself.
        """
        return self


class CommentProto(Proto):
    """
    The C{comment} prototype: C{comment["text"]} makes a L{Comment}.
    """

    __slots__ = ()

    def __new__(cls, name: str = "") -> CommentProto:
        return str.__new__(cls, name)

    def __call__(self, **kw: Any) -> Tag:
        raise TypeError("comments take no attributes")

    def __getitem__(self, children: Any) -> Tag:  # type: ignore[override]
        return Comment()[children]


invisible = Proto("")


class PatternTag:
    """
    What L{Tag.patternGenerator} returns: each use (C{p()}, C{p(data=x)},
    C{p[...]}, C{p.fillSlots(...)}, C{next(p)}) takes the next copy.
    """

    def __init__(self, clones: Iterator[Tag]) -> None:
        self._clones = clones
        # Fail at once (as Nevow did) when there is no pattern and no default.
        self._first: Optional[Tag] = next(clones)

    def __next__(self) -> Tag:
        if self._first is not None:
            first, self._first = self._first, None
            return first
        return next(self._clones)

    def __iter__(self) -> Iterator[Tag]:
        return self

    def __call__(self, **kw: Any) -> Tag:
        return next(self)(**kw)

    def __getitem__(self, children: Any) -> Tag:
        return next(self)[children]

    def fillSlots(self, slotName: str, slotValue: Any) -> Tag:
        """
        The next copy, with one slot filled.
        """
        return next(self).fillSlots(slotName, slotValue)


def _patternClones(root: Any, pattern: str, default: Any) -> Iterator[Tag]:
    found = list(specialMatches(root, "pattern", pattern))
    if found:
        while True:
            for tag in found:
                yield tag.clone(deep=False, clearPattern=True)
    if default is None:
        raise NodeNotFound("pattern", pattern)
    while True:
        yield _cloneNode(default, deep=False)


def _onlyOne(found: Iterable[Any], kind: str, name: str) -> Any:
    result = None
    for node in found:
        if result is not None:
            raise TooManyNodes(kind, name)
        result = node
    if result is None:
        raise NodeNotFound(kind, name)
    return result


def _childrenOf(node: Any) -> Iterable[Any]:
    if isinstance(node, (str, bytes)):
        return ()
    if isinstance(node, (list, tuple)):
        return node
    children = getattr(node, "children", None)
    if isinstance(children, list):
        return children
    # A context (as L{Fragment.rend} returns) stands for its tag.
    tag = getattr(node, "tag", None)
    if isinstance(tag, Tag):
        return (tag,)
    return ()


def specialMatches(root: Any, special: str, value: Any) -> Iterator[Any]:
    """
    The tags below C{root} whose special C{special} equals C{value}, in
    document order. The search does not go below a tag that has that
    special set, whatever its value (nested patterns belong to their
    pattern).
    """
    stack = [iter(_childrenOf(root))]
    while stack:
        for child in stack[-1]:
            found = getattr(child, special, Unset) if isinstance(child, Tag) else Unset
            if found is Unset:
                stack.append(iter(_childrenOf(child)))
                break
            if found == value:
                yield child
        else:
            stack.pop()


def patternsByName(root: Any) -> Dict[Any, List[Tag]]:
    """
    All the patterns below C{root} in one pass: a dict from pattern name to
    the tags with that pattern, in document order (not looking below a tag
    that has a pattern).
    """
    found: Dict[Any, List[Tag]] = {}
    stack = [iter(_childrenOf(root))]
    while stack:
        for child in stack[-1]:
            pattern = child.pattern if isinstance(child, Tag) else Unset
            if pattern is Unset:
                stack.append(iter(_childrenOf(child)))
                break
            found.setdefault(pattern, []).append(child)
        else:
            stack.pop()
    return found


def visit(root: Any, visitor: Callable[[Any], Any]) -> None:
    """
    Call C{visitor} with every node of the tree C{root}, parents first.
    """
    if isinstance(root, (list, tuple)):
        for node in root:
            visit(node, visitor)
        return
    visitor(root)
    if isinstance(root, Tag):
        for child in root.children:
            visit(child, visitor)


@implementer(IQ)
class _NodesQuery:
    """
    C{IQ(nodes)}: pattern queries over a list of nodes (a precompiled
    document) or a slot's children.
    """

    def __init__(self, original: Any) -> None:
        self.original = original

    def patternGenerator(self, pattern: str, default: Any = None) -> PatternTag:
        return PatternTag(_patternClones(self.original, pattern, default))

    def allPatterns(self, pattern: str) -> List[Tag]:
        return [
            t.clone(deep=False, clearPattern=True)
            for t in specialMatches(self.original, "pattern", pattern)
        ]

    def onePattern(self, pattern: str) -> Tag:
        found = _onlyOne(
            specialMatches(self.original, "pattern", pattern), "pattern", pattern
        )
        return found.clone(deep=False, clearPattern=True)


registerAdapter(_NodesQuery, list, IQ)
registerAdapter(_NodesQuery, tuple, IQ)
registerAdapter(_NodesQuery, slot, IQ)
