# -*- test-case-name: tests.unit.test_cachekeys -*-
"""
The render cache's key policy: what makes two requests the same page, and
how keys are laid out so a store can drop a whole path or subtree at once.

A page key is C{family + b"|" + digest}, where the family is
C{host[:port] + b"|" + path} (see L{variantFamily}) and the digest is 32 hex
digits of a BLAKE2b hash over everything that selects the variant: scheme,
host, path, the sorted query, the declared vary values, the template digest
and the version. So::

    example.com|/news/today|3f9c...e1

and a store's C{invalidatePrefix} drops:
  - one path, all its variants: C{b"example.com|/news/today|"};
  - a subtree: C{b"example.com|/news/"};
  - a whole virtual host: C{b"example.com|"}.

Both schemes share a family (their digests differ), so invalidating a path
drops its http and https copies together. A C{|} in a host or path is written
C{%7C} in the readable part; the digest covers the raw bytes, so no two
distinct requests share a key. The key does not name the method: only GET
fills the cache and HEAD is answered from the GET entry.

The key is made from a L{CacheInputs}: the request's inputs parsed once,
in one canonical form (the Host normalised, the query split as twisted.web
splits it and sorted, one value for each declared header and cookie). A
cached render is given the same object (L{tlcache._shadow}), so what the key
saw and what the render sees cannot differ, however a client repeats or
spells them.
"""

from __future__ import annotations

import hashlib
from typing import Any, Dict, FrozenSet, Iterable, List, Optional, Sequence, Tuple
from urllib.parse import quote_from_bytes, unquote_to_bytes

from twisted.internet.interfaces import ISSLTransport
from twisted.web.http import Request as _HTTPRequest

from tlsuite._twisted import forcedSecure

__all__ = [
    "CacheInputs",
    "UncacheableRequestError",
    "cacheInputs",
    "familyOfKey",
    "keyPrefix",
    "normaliseHost",
    "pageKey",
    "parseQuery",
    "requestIsSecure",
    "sortedQuery",
    "templateDigest",
    "variantFamily",
]

# Bumped whenever the layout of what is hashed changes, so old keys (in a
# shared memcached) can never collide with new ones.
_KEY_FORMAT = b"tlcache-page-key-2"

_plainIsSecure = _HTTPRequest.isSecure

_DEFAULT_PORTS = {b"http": b"80", b"https": b"443"}

_VARY_KINDS = ("header", "cookie", "arg")


def templateDigest(source: bytes | str) -> bytes:
    """
    A digest of a template's source (32 hex digits, as bytes): pass it to
    L{pageKey} so editing the template gives its pages new keys.
    """
    if isinstance(source, str):
        source = source.encode("utf-8")
    return hashlib.blake2b(source, digest_size=16).hexdigest().encode("ascii")


def normaliseHost(hostHeader: bytes, secure: bool) -> bytes:
    """
    C{host[:port]} from a Host header value: the host lower-cased with any
    trailing dot removed, the port dropped when it is the scheme's default
    (80 for http, 443 for https). IPv6 literals keep their brackets.
    """
    value = hostHeader.strip().lower()
    host, port = value, b""
    if value.startswith(b"["):
        closing = value.find(b"]")
        if closing != -1:
            host, rest = value[: closing + 1], value[closing + 1 :]
            if rest.startswith(b":"):
                port = rest[1:]
    elif b":" in value:
        host, _, port = value.rpartition(b":")
    host = host.rstrip(b".")
    scheme = b"https" if secure else b"http"
    if port == _DEFAULT_PORTS[scheme]:
        port = b""
    return host + b":" + port if port else host


def parseQuery(query: bytes) -> List[Tuple[bytes, bytes]]:
    """
    The arguments of a query string as twisted.web's C{request.args} has
    them: split on C{&} and on C{;}, an item with no C{=} dropped, C{+} read
    as a space, then percent-decoded; blank values kept.
    """
    pairs = []
    for item in query.replace(b";", b"&").split(b"&"):
        name, separator, value = item.partition(b"=")
        if separator:
            pairs.append(
                (
                    unquote_to_bytes(name.replace(b"+", b" ")),
                    unquote_to_bytes(value.replace(b"+", b" ")),
                )
            )
    return pairs


def _encodeQuery(pairs: Iterable[Tuple[bytes, bytes]]) -> bytes:
    # Every byte that could be read as a separator (& ; = + %) or is not
    # plain ASCII is escaped, so parseQuery gives back exactly these pairs,
    # and so would any other query parser.
    return b"&".join(
        quote_from_bytes(name, safe="").encode("ascii")
        + b"="
        + quote_from_bytes(value, safe="").encode("ascii")
        for name, value in pairs
    )


def _canonicalPairs(
    query: bytes, only: Optional[FrozenSet[bytes]]
) -> Tuple[Tuple[bytes, bytes], ...]:
    if not query:
        return ()
    pairs = parseQuery(query)
    if only is not None:
        pairs = [pair for pair in pairs if pair[0] in only]
    # Stable: the values of a repeated argument keep their order, since
    # ?a=1&a=2 and ?a=2&a=1 may mean different lists.
    pairs.sort(key=lambda pair: pair[0])
    return tuple(pairs)


def sortedQuery(query: bytes, only: Optional[Iterable[str]] = None) -> bytes:
    """
    A query string in one canonical form: parsed as L{parseQuery} does,
    stably sorted by argument name, and re-encoded. The values of a repeated
    argument keep their order, since C{?a=1&a=2} and C{?a=2&a=1} may mean
    different lists. Given C{only}, other arguments are left out.
    """
    allowed = None if only is None else frozenset(_argName(n) for n in only)
    return _encodeQuery(_canonicalPairs(query, allowed))


def _argName(name: str | bytes) -> bytes:
    return name if isinstance(name, bytes) else name.encode("latin-1")


def requestIsSecure(request: Any) -> bool:
    """
    C{request.isSecure()}, quickly for twisted.web's own requests.
    """
    isSecure = getattr(request, "isSecure", None)
    if isSecure is None:
        return False
    if getattr(type(request), "isSecure", None) is _plainIsSecure:
        # twisted.web's own isSecure adapts the transport to ISSLTransport,
        # which costs microseconds when it is plain TCP; asking whether the
        # transport provides it gives the same answer for Twisted's
        # transports (TLS ones declare it) at a fraction of the cost.
        if forcedSecure(request):
            return True
        channel = getattr(request, "channel", None)
        if channel is None:
            return False
        transport = getattr(channel, "transport", None)
        kind = type(transport)
        known = _SECURE_TRANSPORTS.get(kind)
        if known is None:
            if ISSLTransport.implementedBy(kind):
                known = True
            elif kind.__module__.startswith(
                ("twisted.internet.", "twisted.protocols.")
            ):
                known = False
            else:
                known = _ASK
            if len(_SECURE_TRANSPORTS) < 1000:
                _SECURE_TRANSPORTS[kind] = known
        if known is not _ASK:
            return bool(known)
    return bool(isSecure())


# Transport classes and whether they are TLS (Twisted's declare it), or
# _ASK for others, whose requests are asked with isSecure().
_ASK: Any = object()
_SECURE_TRANSPORTS: Dict[type, Any] = {}


def _hostOf(
    request: Any, defaultHost: Optional[bytes], secure: Optional[bool] = None
) -> bytes:
    if secure is None:
        secure = requestIsSecure(request)
    header = request.getHeader(b"host")
    if header:
        return normaliseHost(header, secure)
    if defaultHost is not None:
        return normaliseHost(defaultHost, secure)
    # No Host (HTTP/1.0): the address this connection was accepted on.
    address = request.getHost()
    return normaliseHost(f"{address.host}:{address.port}".encode("ascii"), secure)


def _splitURI(request: Any) -> Tuple[bytes, bytes]:
    # The path as sent: no percent-decoding (that is the resource's job, and
    # %2F decoded would merge distinct resources) and no ".." folding, since
    # twisted.web traverses segments as sent and a folded key could name a
    # different resource than the one that rendered.
    path, _, query = request.uri.partition(b"?")
    return path, query


def _readable(part: bytes) -> bytes:
    return part.replace(b"|", b"%7C")


def variantFamily(request: Any, defaultHost: Optional[bytes] = None) -> bytes:
    """
    C{host[:port] + b"|" + path}: the prefix shared by every key of one path
    on one virtual host, whatever the query, vary values or scheme. Stores
    cap the number of keys per family.
    """
    path, _ = _splitURI(request)
    return _readable(_hostOf(request, defaultHost)) + b"|" + _readable(path)


def keyPrefix(host: bytes, path: bytes = b"", secure: bool = False) -> bytes:
    """
    The key prefix for C{invalidatePrefix} without a request: C{host} is
    normalised as in keys, C{path} is a path or a path prefix as sent
    (C{b"/news/"} for a subtree). With no path, the whole virtual host.
    """
    return _readable(normaliseHost(host, secure)) + b"|" + _readable(path)


def familyOfKey(key: bytes) -> bytes:
    """
    The family of a key made by L{pageKey} (everything before the last
    C{|}); a key without one is its own family.
    """
    family, separator, _ = key.rpartition(b"|")
    return family if separator else key


def _field(value: bytes) -> bytes:
    # Length-prefixed, so no choice of values can make two key inputs
    # serialise the same.
    return str(len(value)).encode("ascii") + b":" + value


class UncacheableRequestError(ValueError):
    """
    A request whose inputs are ambiguous (it repeats the Host header): it
    has no cache key and is answered uncached.
    """


class CacheInputs:
    """
    Everything of a request that a cached render of it may see, parsed
    once into one canonical form: the key is made from it (L{key}) and the
    render is given it (L{tlcache._shadow.ShadowRequest}), so the two
    cannot disagree.

    @ivar secure: was the request made over TLS?
    @ivar host: the normalised C{host[:port]} (see L{normaliseHost}).
    @ivar hostHeader: what the render sees as its C{Host} header: C{host},
        or C{None} when the request had none (the key then uses the address
        the request came in on, which the render sees too).
    @ivar port: the port the client asked for: Host's, or the scheme's.
    @ivar path: the path as sent (no percent-decoding, no C{..} folding).
    @ivar query: the query's arguments, as L{parseQuery} reads them, stably
        sorted by name; only the allowed ones when the page names them.
    @ivar headers: C{(name, value)} for each declared header present, the
        name lower-cased; a header sent on several lines is one value,
        joined with C{", "} (RFC 9110 §5.3).
    @ivar cookies: C{(name, value)} for each declared cookie present: the
        first one sent with that name (RFC 6265 §5.4 puts the most specific
        first), whether repeated within one C{Cookie} header or across
        several.
    @ivar vary: the declarations, sorted, for the key.
    """

    __slots__ = (
        "secure",
        "host",
        "hostHeader",
        "port",
        "path",
        "query",
        "headers",
        "cookies",
        "vary",
    )

    def __init__(
        self,
        secure: bool,
        host: bytes,
        hostHeader: Optional[bytes],
        port: int,
        path: bytes,
        query: Tuple[Tuple[bytes, bytes], ...],
        headers: Tuple[Tuple[bytes, bytes], ...],
        cookies: Tuple[Tuple[bytes, bytes], ...],
        vary: Tuple[Tuple[str, bytes], ...],
    ) -> None:
        self.secure = secure
        self.host = host
        self.hostHeader = hostHeader
        self.port = port
        self.path = path
        self.query = query
        self.headers = headers
        self.cookies = cookies
        self.vary = vary

    def uri(self) -> bytes:
        """
        The request URI the render sees: the path and the canonical query.
        """
        if not self.query:
            return self.path
        return self.path + b"?" + _encodeQuery(self.query)

    def args(self) -> Dict[bytes, List[bytes]]:
        """
        C{request.args} for the render, from L{query}.
        """
        args: Dict[bytes, List[bytes]] = {}
        for name, value in self.query:
            args.setdefault(name, []).append(value)
        return args

    def cookieHeader(self) -> Optional[bytes]:
        """
        The C{Cookie} header the render sees: the declared cookies only,
        one each (or the whole header, when it is itself declared).
        """
        for name, value in self.headers:
            if name == b"cookie":
                return value
        if not self.cookies:
            return None
        return b"; ".join(name + b"=" + value for name, value in self.cookies)

    def key(self, version: str = "", templateDigest: bytes = b"") -> bytes:
        """
        The cache key of these inputs (see the module docstring).
        """
        headers = dict(self.headers)
        cookies = dict(self.cookies)
        args = self.args()
        varyParts = []
        for declaration, name in self.vary:
            kind = declaration.partition(":")[0]
            if kind == "header":
                value: Optional[bytes] = headers.get(name)
            elif kind == "cookie":
                value = cookies.get(name)
            else:
                values = args.get(name)
                value = None if values is None else b"&".join(map(_field, values))
            varyParts.append(_field(declaration.lower().encode("latin-1")))
            varyParts.append(b"-" if value is None else b"+" + _field(value))
        parts = [
            _field(_KEY_FORMAT),
            _field(b"https" if self.secure else b"http"),
            _field(self.host),
            _field(self.path),
            _field(_encodeQuery(self.query)),
            _field(b"".join(varyParts)),
            _field(templateDigest),
            _field(version.encode("utf-8")),
        ]
        digest = hashlib.blake2b(b"".join(parts), digest_size=16).hexdigest()
        return (
            _readable(self.host)
            + b"|"
            + _readable(self.path)
            + b"|"
            + digest.encode("ascii")
        )


def _declarations(vary: Sequence[str]) -> Tuple[Tuple[str, bytes], ...]:
    declared = []
    for declaration in sorted(set(vary)):
        kind, separator, name = declaration.partition(":")
        if not separator or kind not in _VARY_KINDS or not name:
            raise ValueError(
                f"vary declarations are header:NAME, cookie:NAME or arg:NAME,"
                f" not {declaration!r}"
            )
        rawName = name.encode("latin-1")
        declared.append((declaration, rawName.lower() if kind == "header" else rawName))
    return tuple(declared)


def _portOf(host: bytes, secure: bool) -> int:
    # The port in a normalised host[:port], or the scheme's default.
    if host.startswith(b"["):
        rest = host[host.find(b"]") + 1 :]
        port = rest[1:] if rest.startswith(b":") else b""
    else:
        port = host.rpartition(b":")[2] if b":" in host else b""
    if port.isdigit() and int(port) < 65536:
        return int(port)
    return 443 if secure else 80


def cacheInputs(
    request: Any,
    vary: Sequence[str] = (),
    queryArgs: Optional[Iterable[str]] = None,
    defaultHost: Optional[bytes] = None,
) -> CacheInputs:
    """
    The L{CacheInputs} of C{request} for a page declaring C{vary} and
    C{queryArgs} (see L{pageKey} for what they mean).

    @raise UncacheableRequestError: the request repeats its Host header.
    @raise ValueError: a declaration in C{vary} is not of a known kind.
    """
    declared = _declarations(vary)
    secure = requestIsSecure(request)
    hosts = request.requestHeaders.getRawHeaders(b"host")
    if hosts is not None and len(hosts) != 1:
        raise UncacheableRequestError("the request repeats its Host header")
    if hosts:
        host = normaliseHost(hosts[0], secure)
        hostHeader: Optional[bytes] = host
    else:
        host = _hostOf(request, defaultHost, secure)
        hostHeader = None
    path, query = _splitURI(request)
    allowed: Optional[FrozenSet[bytes]] = None
    if queryArgs is not None:
        allowed = frozenset(
            [_argName(n) for n in queryArgs]
            + [name for d, name in declared if d.startswith("arg:")]
        )
    headers = []
    cookieNames = set()
    for declaration, name in declared:
        if declaration.startswith("header:"):
            # Host is always part of the key, normalised; a declared
            # Cookie header is the whole header, its lines joined as
            # RFC 6265 joins them.
            values = request.requestHeaders.getRawHeaders(name)
            if values is not None and name != b"host":
                joiner = b"; " if name == b"cookie" else b", "
                headers.append((name, joiner.join(values)))
        elif declaration.startswith("cookie:"):
            cookieNames.add(name)
    cookies: List[Tuple[bytes, bytes]] = []
    if cookieNames:
        seen = set()
        for header in request.requestHeaders.getRawHeaders(b"cookie") or ():
            for crumb in header.split(b";"):
                name, separator, value = crumb.strip().partition(b"=")
                if separator and name in cookieNames and name not in seen:
                    seen.add(name)
                    cookies.append((name, value))
        cookies.sort()
    return CacheInputs(
        secure=secure,
        host=host,
        hostHeader=hostHeader,
        port=_portOf(host, secure),
        path=path,
        query=_canonicalPairs(query, allowed),
        headers=tuple(headers),
        cookies=tuple(cookies),
        vary=declared,
    )


def pageKey(
    request: Any,
    vary: Sequence[str] = (),
    version: str = "",
    templateDigest: bytes = b"",
    queryArgs: Optional[Iterable[str]] = None,
    defaultHost: Optional[bytes] = None,
) -> bytes:
    """
    The cache key for the page C{request} asks for (see the module
    docstring for the layout): the key of L{cacheInputs}.

    @param request: a twisted.web request (a C{DummyRequest} will do).
    @param vary: the declared inputs the page varies on, as
        C{"header:Accept-Language"}, C{"cookie:lang"} or C{"arg:page"};
        nothing undeclared enters the key. Header names are case-insensitive.
    @param version: the page's C{cacheVersion}.
    @param templateDigest: from L{templateDigest} over the page's template.
    @param queryArgs: if given, only these query arguments (and those
        declared with C{arg:}) enter the key; the others are ignored (a
        defence against variant floods).
    @param defaultHost: the site's own C{host[:port]}, used when the request
        has no Host header; otherwise the address the request arrived on.
    @raise UncacheableRequestError: the request repeats its Host header.
    """
    inputs = cacheInputs(request, vary, queryArgs, defaultHost)
    return inputs.key(version, templateDigest)
