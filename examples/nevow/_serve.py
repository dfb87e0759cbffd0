"""
Serve one example's site from the command line: C{python -m
examples.nevow.NAME [PORT]} listens on 127.0.0.1 (port 8080 by default).
"""

from __future__ import annotations

import sys
from typing import Callable, Sequence

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.python import log
from twisted.web.server import Site


def serve(makeSite: Callable[[], Site], argv: Sequence[str]) -> None:
    """
    Listen with the site C{makeSite} builds and run the reactor.

    @param argv: the command line's arguments; the first, if given, is the
        port.
    """
    port = int(argv[0]) if argv else 8080
    log.startLogging(sys.stdout)
    endpoint = TCP4ServerEndpoint(reactor, port, interface="127.0.0.1")
    endpoint.listen(makeSite())
    reactor.run()  # type: ignore[attr-defined]
