"""
Macros run once, when a template is first compiled, not on every request:
the counters on the page show the macro ran once while the render method
ran for every visit. Use them for parts of a page that are fixed once the
server starts (navigation built from configuration, say).

Serve with C{twistd -n web --class examples.nevow.macros.resource} or
C{python -m examples.nevow.macros [PORT]}.
"""

from __future__ import annotations

import sys
from typing import Any, Sequence

from twisted.web.server import Site

from tlcache.nevow import appserver, loaders, rend
from tlcache.nevow import tags as T

SECTIONS = ("News", "Sport", "Weather & tides")


class Front(rend.Page):
    """
    A page whose navigation is built by a macro from C{sections}.

    @ivar macroRuns: how often the macro ran.
    @ivar renders: how often the page was rendered.
    """

    addSlash = True
    docFactory = loaders.stan(
        T.html[
            T.body[
                T.invisible(macro=T.directive("navigation")),
                T.p[
                    "Page renders so far: ",
                    T.invisible(render=T.directive("renders")),
                    ".",
                ],
            ]
        ]
    )

    def __init__(self, sections: Sequence[str] = SECTIONS) -> None:
        super().__init__()
        self.sections = list(sections)
        self.macroRuns = 0
        self.renders = 0

    def macro_navigation(self, ctx: Any) -> Any:
        self.macroRuns += 1
        return T.div(id="nav")[
            T.ul[
                [
                    T.li[T.a(href="#" + name.split()[0].lower())[name]]
                    for name in self.sections
                ]
            ],
            T.p[f"Navigation built by macro run number {self.macroRuns}."],
        ]

    def render_renders(self, ctx: Any, data: Any) -> str:
        self.renders += 1
        return str(self.renders)


def resource() -> rend.Page:
    """
    The example's root page.
    """
    return Front()


def site() -> Site:
    """
    A site serving L{resource}.
    """
    return appserver.NevowSite(resource())


if __name__ == "__main__":
    from examples.nevow._serve import serve

    serve(site, sys.argv[1:])
