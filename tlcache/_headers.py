# -*- test-case-name: tests.unit.test_cachedpage -*-
"""
Request and response headers on the render cache's hot path: quick looks at
twisted.web's header dict, and conditional requests (If-None-Match,
If-Modified-Since) against a stored copy.
"""

from __future__ import annotations

from email.utils import parsedate_to_datetime
from typing import Any, Dict, List, Optional

from twisted.web.http_headers import Headers

from tlcache.store import CacheEntry
from tlsuite._twisted import headersDict

__all__ = [
    "AUTHORIZATION",
    "COOKIE",
    "HOST",
    "isConditional",
    "notModified",
    "rawHeaders",
]


def _canonicalName(name: bytes) -> Optional[bytes]:
    # The key twisted.web's Headers keeps C{name} under (its spelling has
    # changed between Twisted versions), or None if it keeps no dict.
    headers = Headers()
    headers.setRawHeaders(name, [b"x"])
    raw = headersDict(headers)
    if raw is None or len(raw) != 1:
        return None
    (canonical,) = raw
    return canonical if isinstance(canonical, bytes) else None


_CANONICAL = [
    _canonicalName(name)
    for name in (
        b"if-none-match",
        b"if-modified-since",
        b"authorization",
        b"cookie",
        b"host",
    )
]
_FAST_HEADERS = None not in _CANONICAL
_IF_NONE_MATCH, _IF_MODIFIED_SINCE, AUTHORIZATION, COOKIE, HOST = (
    name or b"" for name in _CANONICAL
)


def rawHeaders(headers: Headers) -> Optional[Dict[bytes, List[bytes]]]:
    """
    The dict behind C{headers}, when this Twisted keeps one we can use: a
    hit sets five headers, and doing it through the public methods costs as
    much again as the rest of the hit.
    """
    if not _FAST_HEADERS:
        return None
    return headersDict(headers)


def isConditional(request: Any) -> bool:
    raw = rawHeaders(request.requestHeaders)
    if raw is None:
        return True
    return _IF_NONE_MATCH in raw or _IF_MODIFIED_SINCE in raw


def notModified(request: Any, entry: CacheEntry) -> bool:
    """
    Does C{request}'s conditional header say it already holds C{entry}?
    If-None-Match wins over If-Modified-Since (RFC 9110, 13.2.2).
    """
    match = request.getHeader(b"if-none-match")
    if match is not None:
        if match.strip() == b"*":
            return True
        for tag in match.split(b","):
            tag = tag.strip()
            if tag.startswith(b"W/"):
                tag = tag[2:]
            if tag == entry.etag:
                return True
        return False
    since = request.getHeader(b"if-modified-since")
    if since is None:
        return False
    try:
        when = parsedate_to_datetime(since.decode("latin-1")).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return False
    return int(entry.created) <= when
