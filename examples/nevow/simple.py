"""
A personal page: a plain function as a renderer, a visit counter kept in
the visitor's session (C{ISession(ctx)}, from tlsession) and the visitor's
address. C{/reset} sets the counter back to zero and answers with text.

Serve with C{twistd -n web --class examples.nevow.simple.resource} or
C{python -m examples.nevow.simple [PORT]}. Sessions live in memory.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.internet import reactor
from twisted.web.resource import IResource
from twisted.web.server import Site

from tlcache.nevow import inevow, loaders, rend
from tlcache.nevow import tags as T
from tlsession import MemorySessionStore, SessionManager, SessionResource


def visitorAddress(ctx: Any, data: Any) -> Any:
    """
    A renderer that is just a function: the client's address.
    """
    return ctx.tag[inevow.IRequest(ctx).getClientAddress().host]


def visits(ctx: Any, data: Any) -> Any:
    """
    Count this visit in the session and show the count.
    """
    session = inevow.ISession(ctx)
    return ctx.tag[str(session.increment("visits"))]


class Simple(rend.Page):
    """
    The root page: a greeting made for each visitor.
    """

    addSlash = True
    docFactory = loaders.stan(
        T.html[
            T.head[T.title["Simple"]],
            T.body[
                T.p["You are visiting from ", T.strong(render=visitorAddress), "."],
                T.p["Visits in this session: ", T.strong(id="visits", render=visits)],
                T.p[T.a(href="reset")["Start counting again"]],
            ],
        ]
    )

    def child_reset(self, ctx: Any) -> str:
        inevow.ISession(ctx)["visits"] = 0
        return "<p>The counter is back at zero. <a href='./'>Back</a></p>"


class _SessionSite(Site):
    """
    A site whose session store runs while the site listens: a store takes
    calls only while it runs.
    """

    def __init__(self, store: MemorySessionStore) -> None:
        super().__init__(SessionResource(Simple(), SessionManager(store, reactor)))
        self.store = store

    def startFactory(self) -> None:
        self.store.startService()

    def stopFactory(self) -> None:
        self.store.stopService()


def resource() -> IResource:
    """
    The example's root: the page below tlsession's session wrapper.
    C{twistd web --class} gives it no service to run its store under, so
    the store runs from the reactor's start to its shutdown.
    """
    store = MemorySessionStore(reactor)
    reactor.callWhenRunning(store.startService)
    reactor.addSystemEventTrigger("before", "shutdown", store.stopService)
    return SessionResource(Simple(), SessionManager(store, reactor))


def site() -> Site:
    """
    A site serving the page with tlsession's sessions.
    """
    return _SessionSite(MemorySessionStore(reactor))


if __name__ == "__main__":
    from examples.nevow._serve import serve

    serve(site, sys.argv[1:])
