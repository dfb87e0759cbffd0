"""
A page assembled from fragments: one L{rend.Fragment} fills a slot, one is
returned by a render method as the child of a tag. Each fragment has its own
template, render and data methods; the sidebar shows the visitor's address,
so the page differs per visitor.

Serve with C{twistd -n web --class examples.nevow.fragments.resource} or
C{python -m examples.nevow.fragments [PORT]}.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from twisted.web.server import Site

from tlcache.nevow import appserver, inevow, loaders, rend
from tlcache.nevow import tags as T

HERE = os.path.dirname(os.path.abspath(__file__))


class Sidebar(rend.Fragment):
    """
    Greets the visitor by address; C{original} is the site's title.
    """

    docFactory = loaders.stan(
        T.div(_class="sidebar")[
            T.h2(render=T.directive("string"), data=T.directive("title")),
            T.p[
                "Your address: ",
                T.span(render=T.directive("string"), data=T.directive("ip")),
            ],
        ]
    )

    def data_title(self, ctx: Any, data: Any) -> str:
        return self.original

    def data_ip(self, ctx: Any, data: Any) -> str:
        return inevow.IRequest(ctx).getClientAddress().host


class Footer(rend.Fragment):
    """
    A line of small print with the links it is given.
    """

    docFactory = loaders.stan(
        T.invisible(data=T.directive("links"), render=T.directive("sequence"))[
            T.a(pattern="item", render=T.directive("link")),
            T.invisible(pattern="divider")[" | "],
        ]
    )

    def data_links(self, ctx: Any, data: Any) -> Any:
        return self.original

    def render_link(self, ctx: Any, data: Any) -> Any:
        label, href = data
        return ctx.tag(href=href)[label]


class Main(rend.Page):
    """
    The page: its template has a slot for the sidebar and a place for the
    footer.
    """

    addSlash = True
    docFactory = loaders.xmlfile(os.path.join(HERE, "fragments.html"))

    def render_layout(self, ctx: Any, data: Any) -> Any:
        ctx.fillSlots("sidebar", Sidebar("Fragments & friends"))
        return ctx.tag

    def render_footer(self, ctx: Any, data: Any) -> Any:
        return ctx.tag[Footer([("Home", "/"), ("About <us>", "/about?x=1&y=2")])]


def resource() -> rend.Page:
    """
    The example's root page.
    """
    return Main()


def site() -> Site:
    """
    A site serving L{resource}.
    """
    return appserver.NevowSite(resource())


if __name__ == "__main__":
    from examples.nevow._serve import serve

    serve(site, sys.argv[1:])
