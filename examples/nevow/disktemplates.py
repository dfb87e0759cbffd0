"""
A page whose template is a file on disk, read again whenever the file
changes, and its twin written in stan (at C{/stan}).

Serve with C{twistd -n web --class examples.nevow.disktemplates.resource}
or C{python -m examples.nevow.disktemplates [PORT]}.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Optional

from twisted.web.server import Site

from tlcache.nevow import appserver, loaders, rend
from tlcache.nevow import tags as T

HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATE = os.path.join(HERE, "disktemplates.html")


class Titled(rend.Page):
    """
    Both pages' data: the title.
    """

    def data_title(self, ctx: Any, data: Any) -> str:
        return "Templates on disk & in code"


class StanPage(Titled):
    """
    The page written in stan.
    """

    docFactory = loaders.stan(
        T.html[
            T.head[T.title(render=T.directive("string"), data=T.directive("title"))],
            T.body[
                T.h1(render=T.directive("string"), data=T.directive("title")),
                T.p["This page's template is stan, in the module."],
            ],
        ]
    )


class DiskPage(Titled):
    """
    The page whose template is a file (C{disktemplates.html} unless told
    otherwise).
    """

    addSlash = True
    child_stan = StanPage()

    def __init__(self, template: Optional[str] = None) -> None:
        super().__init__(docFactory=loaders.xmlfile(template or TEMPLATE))


def resource() -> rend.Page:
    """
    The example's root page.
    """
    return DiskPage()


def site() -> Site:
    """
    A site serving L{resource}.
    """
    return appserver.NevowSite(resource())


if __name__ == "__main__":
    from examples.nevow._serve import serve

    serve(site, sys.argv[1:])
