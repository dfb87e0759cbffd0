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
"""

from __future__ import annotations

import hashlib
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple
from urllib.parse import parse_qsl, urlencode

from twisted.internet.interfaces import ISSLTransport
from twisted.web.http import Request as _HTTPRequest

__all__ = [
    "familyOfKey",
    "keyPrefix",
    "normaliseHost",
    "pageKey",
    "requestIsSecure",
    "sortedQuery",
    "templateDigest",
    "variantFamily",
]

# Bumped whenever the layout of what is hashed changes, so old keys (in a
# shared memcached) can never collide with new ones.
_KEY_FORMAT = b"tlcache-page-key-1"

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


def sortedQuery(query: bytes, only: Optional[Iterable[str]] = None) -> bytes:
    """
    A query string in one canonical form: parsed (blank values kept),
    stably sorted by argument name, and re-encoded. The values of a repeated
    argument keep their order, since C{?a=1&a=2} and C{?a=2&a=1} may mean
    different lists. Given C{only}, other arguments are left out.

    Bytes are decoded as Latin-1 so any byte sequence round-trips.
    """
    if not query:
        return b""
    pairs = parse_qsl(
        query.decode("latin-1"), keep_blank_values=True, encoding="latin-1"
    )
    if only is not None:
        allowed = set(only)
        pairs = [pair for pair in pairs if pair[0] in allowed]
    pairs.sort(key=lambda pair: pair[0])
    return urlencode(pairs, encoding="latin-1").encode("ascii")


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
        if request._forceSSL:
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


def _cookie(request: Any, name: bytes) -> Optional[bytes]:
    # Parsed from the header, as twisted.web does, so a DummyRequest (which
    # has no getCookie) works too.
    header = request.getHeader(b"cookie")
    if not header:
        return None
    for crumb in header.split(b";"):
        key, separator, value = crumb.strip().partition(b"=")
        if separator and key == name:
            return value
    return None


def _varyValues(request: Any, vary: Sequence[str]) -> List[bytes]:
    values = []
    for declaration in sorted(set(vary)):
        kind, separator, name = declaration.partition(":")
        if not separator or kind not in _VARY_KINDS or not name:
            raise ValueError(
                f"vary declarations are header:NAME, cookie:NAME or arg:NAME,"
                f" not {declaration!r}"
            )
        rawName = name.encode("latin-1")
        if kind == "header":
            value: Optional[bytes] = request.getHeader(rawName)
        elif kind == "cookie":
            value = _cookie(request, rawName)
        else:
            args = request.args.get(rawName)
            value = None if args is None else b"&".join(_field(a) for a in args)
        values.append(_field(declaration.lower().encode("latin-1")))
        values.append(b"-" if value is None else b"+" + _field(value))
    return values


def _field(value: bytes) -> bytes:
    # Length-prefixed, so no choice of values can make two key inputs
    # serialise the same.
    return str(len(value)).encode("ascii") + b":" + value


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
    docstring for the layout).

    @param request: a twisted.web request (a C{DummyRequest} will do).
    @param vary: the declared inputs the page varies on, as
        C{"header:Accept-Language"}, C{"cookie:lang"} or C{"arg:page"};
        nothing undeclared enters the key. Header names are case-insensitive.
    @param version: the page's C{cacheVersion}.
    @param templateDigest: from L{templateDigest} over the page's template.
    @param queryArgs: if given, only these query arguments enter the key,
        the others are ignored (a defence against variant floods).
    @param defaultHost: the site's own C{host[:port]}, used when the request
        has no Host header; otherwise the address the request arrived on.
    """
    secure = requestIsSecure(request)
    host = _hostOf(request, defaultHost, secure)
    path, query = _splitURI(request)
    parts = [
        _field(_KEY_FORMAT),
        _field(b"https" if secure else b"http"),
        _field(host),
        _field(path),
        _field(sortedQuery(query, queryArgs)),
        _field(b"".join(_varyValues(request, vary))),
        _field(templateDigest),
        _field(version.encode("utf-8")),
    ]
    digest = hashlib.blake2b(b"".join(parts), digest_size=16).hexdigest()
    return _readable(host) + b"|" + _readable(path) + b"|" + digest.encode("ascii")
