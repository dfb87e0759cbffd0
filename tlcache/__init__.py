"""
tlcache: a render cache for Nevow-style pages, built on C{tlcache.nevow}::

    from tlcache import CachedPage

    class Home(CachedPage, rend.Page):
        cacheTimeout = 30

See L{tlcache.page} for the page cache, L{tlcache.fragment} for cached
fragments and docs/caching.md for the guide.
"""

from tlcache.page import CachedPage
from tlcache.rendercache import RenderCache, defaultRenderCache
from tlcache.store import CacheEntry, ICacheStore, MemoryCacheStore

__all__ = [
    "CacheEntry",
    "CachedPage",
    "ICacheStore",
    "MemoryCacheStore",
    "RenderCache",
    "defaultRenderCache",
]
