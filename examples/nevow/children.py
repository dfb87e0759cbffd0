"""
The four ways a page finds its children: a C{child_*} attribute, a
C{child_*} method, the C{children} dictionary and C{childFactory} for names
not known in advance (here: numbers, each with a page of its own). Links
are built with C{url.here}.

Serve with C{twistd -n web --class examples.nevow.children.resource} or
C{python -m examples.nevow.children [PORT]}.
"""

from __future__ import annotations

import sys
from typing import Any, Optional

from twisted.web.server import Site

from tlcache.nevow import appserver, loaders, rend, url
from tlcache.nevow import tags as T


def _page(*body: Any) -> Any:
    return loaders.stan(T.html[T.body[body]])


class About(rend.Page):
    """
    A fixed page, found through a C{child_about} attribute.
    """

    docFactory = _page(T.h1["About"], T.p["Found as an attribute."])


class Contact(rend.Page):
    """
    A fixed page, found in the C{children} dictionary.
    """

    docFactory = _page(T.h1["Contact"], T.p["Found in the children dictionary."])


class Greeting(rend.Page):
    """
    Greets whoever the C{name} query argument names.
    """

    docFactory = _page(T.h1["Hello, ", T.invisible(render=T.directive("name")), "!"])

    def render_name(self, ctx: Any, data: Any) -> str:
        return ctx.arg("name", "stranger")  # type: ignore[no-any-return]


class Number(rend.Page):
    """
    A page for one number, made by the root's C{childFactory}.
    """

    docFactory = _page(
        T.h1(render=T.directive("title")),
        T.p[T.a(render=T.directive("next"))["next"]],
    )

    def render_title(self, ctx: Any, data: Any) -> Any:
        return ctx.tag[f"{self.original} squared is {self.original**2}"]

    def render_next(self, ctx: Any, data: Any) -> Any:
        return ctx.tag(href=url.here.sibling(str(self.original + 1)))


class Root(rend.Page):
    """
    The root: links to each kind of child.
    """

    addSlash = True
    docFactory = _page(
        T.h1["Children"],
        T.ul(render=T.directive("links")),
    )
    child_about = About()
    children = {"contact": Contact()}

    def child_greet(self, ctx: Any) -> rend.Page:
        return Greeting()

    def childFactory(self, ctx: Any, name: str) -> Optional[rend.Page]:
        if name.isdigit():
            return Number(int(name))
        return None

    def render_links(self, ctx: Any, data: Any) -> Any:
        here = url.here
        links = [
            ("about", here.child("about")),
            ("contact", here.child("contact")),
            ("greeting", here.child("greet").add("name", "Ada & Bob")),
            ("number 3", here.child("3")),
        ]
        return ctx.tag[[T.li[T.a(href=href)[label]] for label, href in links]]


def resource() -> rend.Page:
    """
    The example's root page.
    """
    return Root()


def site() -> Site:
    """
    A site serving L{resource}.
    """
    return appserver.NevowSite(resource())


if __name__ == "__main__":
    from examples.nevow._serve import serve

    serve(site, sys.argv[1:])
