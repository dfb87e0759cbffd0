"""
tlcache: a render cache for Nevow-style pages, built on C{tlcache.nevow}.

    from tlcache import CachedPage

    class Home(CachedPage, rend.Page):
        cacheTimeout = 30

See L{tlcache.page} for the page cache and docs/caching.md for the guide.
"""

from tlcache.page import CachedPage, RenderCache, defaultRenderCache
from tlcache.store import CacheEntry, ICacheStore, MemoryCacheStore

__all__ = [
    "CacheEntry",
    "CachedPage",
    "ICacheStore",
    "MemoryCacheStore",
    "RenderCache",
    "defaultRenderCache",
]
