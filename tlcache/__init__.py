"""
tlcache: a render cache for Nevow-style pages, built on C{tlcache.nevow}.
"""
