# -*- test-case-name: tests.unit.test_listen -*-
"""
A listen service that says in one line why it could not listen, and tells
where it listens once bound: what both twistd plugins (the balancer's
listeners, the session daemon's) need of Twisted's
L{StreamServerEndpointService<twisted.application.internet.StreamServerEndpointService>}.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional

from twisted.application.internet import StreamServerEndpointService
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.python.failure import Failure
from zope.interface import implementer

from tlsuite._endpoints import listenErrorMessage
from tlsuite._startup import StartupError
from tlsuite._twisted import raiseListenErrorsAtStart


class ListenService(StreamServerEndpointService):
    """
    Listens on one endpoint. Starting it raises L{StartupError}, one line
    naming the endpoint (an address in use says another process holds it),
    when it cannot listen, so that twistd stops at once instead of logging
    a traceback and running without the port.

    @ivar description: the endpoint string it was built from.
    @ivar port: the listening port once bound, else C{None}.
    @ivar who: what listens, put before the message (e.g. C{"the session
        daemon "}), or empty.
    """

    def __init__(
        self,
        description: str,
        endpoint: IStreamServerEndpoint,
        factory: Any,
        who: str = "",
    ) -> None:
        super().__init__(_RecordingEndpoint(endpoint, self), factory)
        self.description = description
        self.who = who
        self.port: Optional[IListeningPort] = None
        self._waiting: List[Deferred[IListeningPort]] = []
        self._started = False
        raiseListenErrorsAtStart(self)

    def privilegedStartService(self) -> None:
        """
        Listen.

        @raise StartupError: the endpoint cannot listen (the address is in
            use, permission denied...), saying so in one line.
        """
        self._started = True
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            raise StartupError(
                self.who + listenErrorMessage(self.description, e)
            ) from None

    def stopService(self) -> Deferred[None]:
        """
        Stop listening. A service whose start never came (a service before
        it in the same parent failed to start) has nothing to stop, where
        Twisted's own would raise.
        """
        if not self._started:
            self.running = False
            return succeed(None)
        stopped: Deferred[None] = super().stopService()
        return stopped

    def wrapEndpoint(
        self, wrap: Callable[[IStreamServerEndpoint], IStreamServerEndpoint]
    ) -> None:
        """
        Listen through C{wrap(endpoint)} instead of the endpoint given
        (before the service starts): a takeover listens on a socket handed
        over rather than binding one.
        """
        recording: _RecordingEndpoint = self.endpoint
        recording.endpoint = wrap(recording.endpoint)

    def whenListening(self) -> Deferred[IListeningPort]:
        """
        @return: a L{Deferred} firing with the listening port once bound, or
            failing if binding failed.
        """
        if self.port is not None:
            return succeed(self.port)
        waiting: Deferred[IListeningPort] = Deferred()
        self._waiting.append(waiting)
        return waiting

    def listened(self, port: IListeningPort) -> None:
        """
        Called once the port is bound; override to watch it.
        """

    def _result(self, result: Any) -> Any:
        if not isinstance(result, Failure):
            self.port = result
            self.listened(result)
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            if isinstance(result, Failure):
                d.errback(result)
            else:
                d.callback(result)
        return result


@implementer(IStreamServerEndpoint)
class _RecordingEndpoint:
    """
    Passes C{listen} on and tells the L{ListenService} how it went.
    """

    def __init__(self, endpoint: IStreamServerEndpoint, owner: ListenService):
        self.endpoint = endpoint
        self.owner = owner

    def listen(self, factory: Any) -> Deferred[IListeningPort]:
        return self.endpoint.listen(factory).addBoth(self.owner._result)
