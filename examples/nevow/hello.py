"""
The smallest pages: "Hello, world!" in stan (the root) and the same page
from an XML template on disk (at C{/html}).

Serve with C{twistd -n web --class examples.nevow.hello.resource} or
C{python -m examples.nevow.hello [PORT]}.
"""

from __future__ import annotations

import os
import sys

from twisted.web.server import Site

from tlcache.nevow import appserver, loaders, rend
from tlcache.nevow import tags as T

HERE = os.path.dirname(os.path.abspath(__file__))


class HelloStan(rend.Page):
    """
    A greeting written in stan.
    """

    addSlash = True
    docFactory = loaders.stan(
        T.html[
            T.head[T.title["Hello"]],
            T.body[
                T.h1["Hello, world!"],
                T.p[
                    "Written in stan, served by ",
                    T.a(href="html")["its template twin"],
                    ".",
                ],
            ],
        ]
    )


class HelloHTML(rend.Page):
    """
    The same greeting, loaded from C{hello.html}.
    """

    docFactory = loaders.xmlfile(os.path.join(HERE, "hello.html"))


def resource() -> rend.Page:
    """
    The example's root page.
    """
    root = HelloStan()
    root.putChild("html", HelloHTML())
    return root


def site() -> Site:
    """
    A site serving L{resource}.
    """
    return appserver.NevowSite(resource())


if __name__ == "__main__":
    from examples.nevow._serve import serve

    serve(site, sys.argv[1:])
