# -*- test-case-name: tests.unit.test_nevow_site -*-
"""
The site: L{NevowSite} serves a tree of shim pages and twisted.web
resources, mixed freely.

It is a twisted.web C{Site}; what it adds is Nevow's: the root page gets
C{addSlash}, responses default to C{text/html; charset=utf-8}, and
objects remembered on the site (L{NevowSite.remember}) can be located from
every page.
"""

from __future__ import annotations

from typing import Any

from twisted.web import server

from tlcache.nevow._web import asWebResource
from tlcache.nevow.context import SiteContext
from tlcache.nevow.rend import FourOhFour, NotFound

__all__ = ["FourOhFour", "NevowRequest", "NevowSite", "NotFound"]


class NevowRequest(server.Request):
    """
    A twisted.web request whose responses default to UTF-8 HTML.
    """

    defaultContentType = b"text/html; charset=utf-8"


class NevowSite(server.Site):
    """
    A twisted.web site for a Nevow-style root resource (or a twisted.web
    one).

    @ivar context: the L{SiteContext} every request's contexts hang below.
    """

    requestFactory = NevowRequest

    def __init__(self, resource: Any, *args: Any, **kwargs: Any) -> None:
        if hasattr(resource, "addSlash"):
            resource.addSlash = True
        super().__init__(asWebResource(resource), *args, **kwargs)
        self.context = SiteContext()

    def remember(self, obj: Any, inter: Any = None) -> None:
        """
        Remember C{obj} (for C{inter}, or for every interface it provides)
        for the whole site.
        """
        self.context.remember(obj, inter)
