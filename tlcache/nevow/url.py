# -*- test-case-name: tests.unit.test_nevow_url -*-
"""
URLs: parse, derive (C{child}, C{sibling}, C{click}, C{add}, ...) and
render them.

L{URL} holds decoded path segments and query arguments and quotes them
when it is turned into text. L{here}, L{gethere} and L{root} are lazy: put
in a stan tree (or returned as a child), they become the request's URL at
render time. A URL returned from C{locateChild} or C{renderHTTP} redirects
there.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Tuple
from urllib.parse import quote, unquote, unquote_plus, urlsplit
from urllib.parse import unquote as _unquote

from twisted.python.components import registerAdapter
from twisted.web import resource
from twisted.web.iweb import IRequest
from twisted.web.util import redirectTo
from zope.interface import implementer

from tlcache.nevow._flatten import registerFlattener
from tlcache.nevow.context import WebContext

__all__ = ["URL", "URLOverlay", "gethere", "here", "normURLPath", "root"]

_SAFE = "-_.!*'()~"

Query = List[Tuple[str, Optional[str]]]


def _quote(text: Any) -> str:
    return quote(str(text), safe=_SAFE)


def _parseQuery(query: str) -> Query:
    arguments: Query = []
    for part in query.split("&"):
        if "=" in part:
            name, value = part.split("=", 1)
            arguments.append((unquote_plus(name), unquote_plus(value)))
        elif part:
            arguments.append((unquote_plus(part), None))
    return arguments


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


class URL:
    """
    An absolute URL: scheme, network location, path segments, query
    arguments and fragment, all held decoded. Methods that change a part
    return a new URL.
    """

    def __init__(
        self,
        scheme: str = "http",
        netloc: str = "localhost",
        pathsegs: Optional[List[str]] = None,
        querysegs: Optional[Query] = None,
        fragment: Optional[str] = None,
    ) -> None:
        self.scheme = scheme
        self.netloc = netloc
        self._qpathlist: List[str] = [""] if pathsegs is None else list(pathsegs)
        self._querylist: Query = [] if querysegs is None else list(querysegs)
        self.fragment = "" if fragment is None else fragment

    @property
    def path(self) -> str:
        """
        The path, quoted, without its leading slash.
        """
        return "/".join(_quote(segment) for segment in self._qpathlist)

    @property
    def query(self) -> List[str]:
        """
        The query arguments as C{"name=value"} (or C{"name"}) strings.
        """
        return [
            name if value is None else f"{name}={value}"
            for name, value in self._querylist
        ]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, URL):
            return NotImplemented
        return (
            self.scheme,
            self.netloc,
            self._qpathlist,
            self._querylist,
            self.fragment,
        ) == (
            other.scheme,
            other.netloc,
            other._qpathlist,
            other._querylist,
            other.fragment,
        )

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    def __hash__(self) -> int:
        return hash(str(self))

    def cloneURL(
        self,
        scheme: str,
        netloc: str,
        pathsegs: List[str],
        querysegs: Query,
        fragment: str,
    ) -> URL:
        """
        A new URL of this class (override in subclasses with another
        constructor).
        """
        return type(self)(scheme, netloc, pathsegs, querysegs, fragment)

    def _withPath(self, pathsegs: List[str], querysegs: Query) -> URL:
        return self.cloneURL(
            self.scheme, self.netloc, pathsegs, querysegs, self.fragment
        )

    @classmethod
    def fromString(cls, st: Any) -> URL:
        """
        Parse a URL.
        """
        scheme, netloc, path, query, fragment = urlsplit(_text(st))
        segments = (
            [unquote(segment) for segment in path.split("/")[1:]] if path else [""]
        )
        return cls(scheme, netloc, segments, _parseQuery(query), unquote(fragment))

    @classmethod
    def fromRequest(cls, request: Any) -> URL:
        """
        The URL of the part of C{request}'s path traversed so far, with the
        request's query.
        """
        prePathURL = getattr(request, "prePathURL", None)
        if prePathURL is not None:
            base = _text(prePathURL())
        else:
            host = _text(request.getRequestHostname())
            path = "/".join(_text(segment) for segment in request.prepath)
            base = f"http://{host}/{path}"
        uri = _text(getattr(request, "uri", b""))
        if "?" in uri:
            base += "?" + uri.split("?", 1)[1]
        return cls.fromString(base)

    @classmethod
    def fromContext(cls, context: WebContext) -> URL:
        """
        L{fromRequest} for the request of C{context}.
        """
        return cls.fromRequest(IRequest(context))

    def pathList(self, unquote: bool = False, copy: bool = True) -> List[str]:
        """
        The path segments, decoded (C{unquote} decodes them once more).
        """
        if unquote:
            return [_unquote(segment) for segment in self._qpathlist]
        return self._qpathlist[:] if copy else self._qpathlist

    def sibling(self, path: str) -> URL:
        """
        This URL with its last segment replaced by C{path}.
        """
        segments = self._qpathlist[:]
        segments[-1] = path
        return self._withPath(segments, self._querylist[:])

    def child(self, path: str) -> URL:
        """
        This URL with C{path} added as a last segment (replacing an empty
        last segment).
        """
        segments = self._qpathlist[:]
        if segments and segments[-1] == "":
            segments[-1] = path
        else:
            segments.append(path)
        return self._withPath(segments, self._querylist[:])

    def isRoot(self, pathlist: List[str]) -> bool:
        """
        Whether C{pathlist} is the root path.
        """
        return pathlist == [""] or not pathlist

    def curdir(self) -> URL:
        """
        The directory of this URL (C{.}): the last segment emptied.
        """
        segments = self._qpathlist[:]
        if segments and segments[-1] != "":
            segments[-1] = ""
        return self._withPath(segments, self._querylist[:])

    def up(self) -> URL:
        """
        This URL with its last segment removed.
        """
        segments = self._qpathlist[:]
        if segments:
            segments.pop()
        return self._withPath(segments, self._querylist[:])

    def parentdir(self) -> URL:
        """
        The parent directory of this URL's directory (C{..}).
        """
        segments = self._qpathlist[:]
        if not self.isRoot(segments) and segments[-1] == "":
            del segments[-2]
        else:
            segments.pop()
            if self.isRoot(segments):
                segments.append("")
            else:
                segments[-1] = ""
        return self._withPath(segments, self._querylist[:])

    def click(self, href: Any) -> URL:
        """
        Where following the link C{href} from this URL leads.
        """
        scheme, netloc, path, query, fragment = urlsplit(_text(href))
        if (scheme, netloc, path, query, fragment) == ("", "", "", "", ""):
            return self
        arguments = _parseQuery(query)
        if scheme:
            return self.cloneURL(
                scheme,
                netloc,
                _splitPath(path.lstrip("/") if path else ""),
                arguments,
                unquote(fragment),
            )
        scheme = self.scheme
        if netloc:
            path = path[1:] if path.startswith("/") else path
        else:
            netloc = self.netloc
            if not path:
                path = self.path
                if not query:
                    arguments = self._querylist[:]
                    if not fragment:
                        fragment = _quote(self.fragment)
            elif path.startswith("/"):
                path = path[1:]
            else:
                quoted = [_quote(segment) for segment in self._qpathlist]
                quoted[-1] = path
                path = "/".join(quoted)
        return self.cloneURL(
            scheme, netloc, _splitPath(normURLPath(path)), arguments, unquote(fragment)
        )

    def queryList(self, copy: bool = True) -> Query:
        """
        The query arguments as C{(name, value)} pairs (C{None}: no value).
        """
        return self._querylist[:] if copy else self._querylist

    def add(self, name: str, value: Any = None) -> URL:
        """
        This URL with the query argument C{name} added.
        """
        arguments = self._querylist[:]
        arguments.append((name, None if value is None else _text(value)))
        return self._withPath(self._qpathlist[:], arguments)

    def replace(self, name: str, value: Any = None) -> URL:
        """
        This URL with the query argument C{name} set to C{value} only (at
        the place of its first occurrence).
        """
        position = len(self._querylist)
        for index, (key, _) in enumerate(self._querylist):
            if key == name:
                position = index
                break
        arguments = [pair for pair in self._querylist if pair[0] != name]
        arguments.insert(position, (name, None if value is None else _text(value)))
        return self._withPath(self._qpathlist[:], arguments)

    def remove(self, name: str) -> URL:
        """
        This URL without the query argument C{name}.
        """
        return self._withPath(
            self._qpathlist[:], [pair for pair in self._querylist if pair[0] != name]
        )

    def clear(self, name: Optional[str] = None) -> URL:
        """
        This URL without query arguments (or without those called C{name}).
        """
        if name is None:
            return self._withPath(self._qpathlist[:], [])
        return self.remove(name)

    def secure(self, secure: bool = True, port: Optional[int] = None) -> URL:
        """
        This URL with the https (or http) scheme, on C{port} if given and
        not the scheme's default.
        """
        scheme, defaultPort = ("https", 443) if secure else ("http", 80)
        netloc = self.netloc.split(":", 1)[0]
        if port is not None and port != defaultPort:
            netloc = f"{netloc}:{port}"
        return self.cloneURL(
            scheme, netloc, self._qpathlist[:], self._querylist[:], self.fragment
        )

    def anchor(self, anchor: Optional[str] = None) -> URL:
        """
        This URL with the fragment C{anchor} (none for C{None} or C{""}).
        """
        return self.cloneURL(
            self.scheme,
            self.netloc,
            self._qpathlist[:],
            self._querylist[:],
            anchor or "",
        )

    def __str__(self) -> str:
        parts = []
        if self.scheme:
            parts.append(f"{self.scheme}://{self.netloc}")
        for segment in self._qpathlist:
            parts.append("/" + _quote(segment))
        if self._querylist:
            parts.append("?")
            parts.append(
                "&".join(
                    _quote(name) if value is None else f"{_quote(name)}={_quote(value)}"
                    for name, value in self._querylist
                )
            )
        if self.fragment:
            parts.append("#" + _quote(self.fragment))
        return "".join(parts)

    def __repr__(self) -> str:
        return (
            f"URL(scheme={self.scheme!r}, netloc={self.netloc!r}, "
            f"pathsegs={self._qpathlist!r}, querysegs={self._querylist!r}, "
            f"fragment={self.fragment!r})"
        )


def _splitPath(path: str) -> List[str]:
    return [unquote(segment) for segment in path.split("/")]


def normURLPath(path: str) -> str:
    """
    C{path} with its C{.} and C{..} segments resolved.
    """
    segments: List[str] = []
    pieces = path.split("/")
    for piece in pieces:
        if piece == ".":
            continue
        if piece == "..":
            if segments:
                segments.pop()
            continue
        segments.append(piece)
    if pieces[-1:] in (["."], [".."]):
        segments.append("")
    return "/".join(segments)


_COMMANDS = (
    "sibling child curdir click add replace clear remove secure anchor up parentdir"
).split()


class URLOverlay:
    """
    A URL worked out at render time: C{accessor(ctx)} gives the base URL,
    then the recorded method calls (C{here.child("x").add("a", 1)}) are
    applied to it.
    """

    def __init__(
        self,
        urlaccessor: Callable[[WebContext], URL],
        doc: Optional[str] = None,
        dolater: Optional[List[Tuple[str, tuple, dict]]] = None,
        keep: Optional[List[str]] = None,
    ) -> None:
        if doc is not None:
            self.__doc__ = doc
        self.urlaccessor = urlaccessor
        self.dolater = [] if dolater is None else dolater
        self._keep = [] if keep is None else keep

    def addCommand(self, cmd: str, args: tuple, kw: dict) -> URLOverlay:
        """
        A new overlay that also calls C{cmd(*args, **kw)} on the URL.
        """
        return type(self)(
            self.urlaccessor,
            dolater=[*self.dolater, (cmd, args, kw)],
            keep=self._keep[:],
        )

    def keep(self, *args: str) -> URLOverlay:
        """
        A new overlay that carries the request's arguments called C{args}
        over to the URL.
        """
        return type(self)(
            self.urlaccessor, dolater=self.dolater[:], keep=[*self._keep, *args]
        )

    def resolve(self, context: WebContext) -> URL:
        """
        The URL this overlay stands for in C{context}.
        """
        url = self.urlaccessor(context)
        for cmd, args, kw in self.dolater:
            url = getattr(url, cmd)(*args, **kw)
        if self._keep:
            request = IRequest(context)
            for name in self._keep:
                for value in request.args.get(name.encode("utf-8"), []):
                    url = url.add(name, _text(value))
        return url

    def __repr__(self) -> str:
        return f"URLOverlay({self.urlaccessor!r}, dolater={self.dolater!r})"


def _forwarder(cmd: str) -> Callable[..., URLOverlay]:
    def forward(self: URLOverlay, *args: Any, **kw: Any) -> URLOverlay:
        return self.addCommand(cmd, args, kw)

    forward.__name__ = cmd
    forward.__doc__ = f"A new overlay that also calls C{{URL.{cmd}}}."
    return forward


for _cmd in _COMMANDS:
    setattr(URLOverlay, _cmd, _forwarder(_cmd))
del _cmd


here = URLOverlay(
    lambda ctx: URL.fromContext(ctx).clear(),
    "The URL of the current page, without query arguments.",
)
gethere = URLOverlay(
    URL.fromContext, "The URL of the current page, with its query arguments."
)


def _rootURL(ctx: WebContext) -> URL:
    request = IRequest(ctx)
    rootURL = getattr(request, "getRootURL", lambda: None)()
    if rootURL is None:
        return URL.fromContext(ctx).click("/")
    return URL.fromString(rootURL)


root = URLOverlay(
    _rootURL,
    "The URL of the site's root (or of the resource that called "
    "request.rememberRootURL()).",
)


def _flattenURL(original: URL, ctx: WebContext) -> str:
    return str(original)


def _flattenOverlay(original: URLOverlay, ctx: WebContext) -> str:
    return str(original.resolve(ctx))


registerFlattener(_flattenURL, URL)
registerFlattener(_flattenOverlay, URLOverlay)


@implementer(resource.IResource)
class URLRedirectAdapter:
    """
    A URL (or overlay) returned as a resource: redirects there (relative
    URLs resolved against the request's).
    """

    isLeaf = True

    def __init__(self, original: Any) -> None:
        self.original = original

    def getChildWithDefault(self, path: bytes, request: Any) -> Any:
        """
        A redirect is a leaf: it is its own child.
        """
        return self

    def putChild(self, path: Any, child: Any) -> None:
        """
        A redirect takes no children.
        """
        raise TypeError("a redirect takes no children")

    def render(self, request: Any) -> bytes:
        """
        Answer with a redirect to the URL.
        """
        from tlcache.nevow._web import renderContext

        ctx = renderContext(request, self)
        target = self.original
        if isinstance(target, URLOverlay):
            target = target.resolve(ctx)
        location = URL.fromContext(ctx).click(str(target))
        return redirectTo(str(location).encode("utf-8"), request)


registerAdapter(URLRedirectAdapter, URL, resource.IResource)
registerAdapter(URLRedirectAdapter, URLOverlay, resource.IResource)
