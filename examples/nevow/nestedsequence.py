"""
A sequence inside a sequence: a menu of sections, each with its dishes.
The data are plain objects; registering L{accessors.ObjectContainer} as
their C{IContainer} lets a template reach their attributes with
C{data="name"}, so the inner sequence needs no data method.

Serve with C{twistd -n web --class examples.nevow.nestedsequence.resource}
or C{python -m examples.nevow.nestedsequence [PORT]}.
"""

from __future__ import annotations

import sys
from typing import Any, List, Sequence

from twisted.web.server import Site

from tlcache.nevow import accessors, appserver, compy, inevow, loaders, rend
from tlcache.nevow import tags as T


class Dish:
    """
    One dish: a name and a price in cents.
    """

    def __init__(self, name: str, cents: int) -> None:
        self.name = name
        self.cents = cents


class Section:
    """
    A titled part of the menu.
    """

    def __init__(self, title: str, dishes: Sequence[Dish]) -> None:
        self.title = title
        self.dishes = list(dishes)


compy.registerAdapter(accessors.ObjectContainer, Dish, inevow.IContainer)
compy.registerAdapter(accessors.ObjectContainer, Section, inevow.IContainer)

MENU = [
    Section("Starters", [Dish("Soup of the day", 450), Dish("Bread & butter", 200)]),
    Section("Mains", [Dish("Fish <grilled>", 1450), Dish("Risotto", 1200)]),
    Section("Desserts", []),
]


def price(ctx: Any, data: int) -> str:
    """
    Cents as euros.
    """
    return f"€{data // 100}.{data % 100:02d}"


class Menu(rend.Page):
    """
    The menu: an outer sequence over the sections, an inner one over each
    section's dishes.
    """

    addSlash = True
    docFactory = loaders.stan(
        T.html[
            T.head[T.title["Menu"]],
            T.body[
                T.div(data=T.directive("menu"), render=T.directive("sequence"))[
                    T.div(pattern="item", _class="section")[
                        T.h2(data=T.directive("title"), render=T.directive("string")),
                        T.ul(
                            data=T.directive("dishes"), render=T.directive("sequence")
                        )[
                            T.li(pattern="item")[
                                T.span(
                                    data=T.directive("name"),
                                    render=T.directive("string"),
                                ),
                                " ",
                                T.span(data=T.directive("cents"), render=price),
                            ],
                            T.li(pattern="empty")["Nothing today."],
                        ],
                    ]
                ]
            ],
        ]
    )

    def __init__(self, menu: Sequence[Section] = MENU) -> None:
        super().__init__(list(menu))

    def data_menu(self, ctx: Any, data: Any) -> List[Section]:
        return self.original  # type: ignore[no-any-return]


def resource() -> rend.Page:
    """
    The example's root page.
    """
    return Menu()


def site() -> Site:
    """
    A site serving L{resource}.
    """
    return appserver.NevowSite(resource())


if __name__ == "__main__":
    from examples.nevow._serve import serve

    serve(site, sys.argv[1:])
