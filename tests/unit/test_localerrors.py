"""
Tests for L{tlbalance.localerrors}: telling the balancer's own resource
errors from backend failures, and pausing accepts while they last.
"""

from __future__ import annotations

import errno
from typing import Any, List, Optional

from twisted.internet import error, tcp
from twisted.internet.address import IPv4Address
from twisted.internet.defer import succeed
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tlbalance.localerrors import LocalErrors, localErrno
from tlbalance.service import makeBalancerService
from tlbalance.tap import Options


class FakeListeningSocket:
    """
    A listening socket whose C{accept} raises the errors it is given, then
    says there is nothing more to accept.

    @ivar accepts: how many times C{accept} was called.
    """

    def __init__(self, *errors: int) -> None:
        self.errors = list(errors)
        self.accepts = 0
        self.closed = False

    def accept(self) -> Any:
        self.accepts += 1
        if self.errors:
            number = self.errors.pop(0)
            raise OSError(number, f"error {number}")
        raise BlockingIOError(errno.EAGAIN, "no client waiting")

    def getsockname(self) -> tuple[str, int]:
        return ("127.0.0.1", 8080)

    def close(self) -> None:
        self.closed = True


class FakePort:
    """
    A listening port with the C{FileDescriptor} methods that pause it.
    """

    def __init__(self, socket: Optional[FakeListeningSocket] = None) -> None:
        self.socket = socket or FakeListeningSocket()
        self.reading = True
        self.connected = True
        self.disconnecting = False

    def stopReading(self) -> None:
        self.reading = False

    def startReading(self) -> None:
        self.reading = True

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 8080)

    def stopListening(self) -> Any:
        self.disconnecting = True
        self.stopReading()
        return succeed(None)


class ClassificationTests(SynchronousTestCase):
    """
    L{localErrno} picks out the errors that are the balancer's own.
    """

    def test_local(self) -> None:
        """
        Out of descriptors (as Twisted reports a socket it could not
        create), system descriptors, memory, buffers or local ports.
        """
        for exception, number in [
            (error.ConnectBindError(24, "Too many open files"), errno.EMFILE),
            (error.ConnectError(23, "Too many open files in system"), errno.ENFILE),
            (error.ConnectError(errno.ENOBUFS, "No buffer space"), errno.ENOBUFS),
            (OSError(errno.ENOMEM, "Cannot allocate memory"), errno.ENOMEM),
            (
                error.ConnectError(errno.EADDRNOTAVAIL, "Cannot assign address"),
                errno.EADDRNOTAVAIL,
            ),
        ]:
            self.assertEqual(localErrno(Failure(exception)), number, exception)

    def test_backendsFault(self) -> None:
        """
        Refused, unreachable, timed out and the rest are the backend's.
        """
        for exception in [
            error.ConnectionRefusedError(),
            error.TCPTimedOutError(),
            error.NoRouteError(),
            error.ConnectError(errno.EHOSTUNREACH, "No route to host"),
            error.ConnectError(string="no number"),
            error.TimeoutError(),
            OSError(errno.ECONNRESET, "reset"),
            ValueError("not an OS error"),
        ]:
            self.assertIsNone(localErrno(Failure(exception)), exception)


class PauseTests(SynchronousTestCase):
    """
    L{LocalErrors} pauses every listener for a short, growing time.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.errors = LocalErrors(self.clock)
        self.ports = [FakePort(), FakePort()]
        for index, port in enumerate(self.ports):
            self.errors.watchPort(port, f"tcp:{8080 + index}")

    def reading(self) -> List[bool]:
        return [port.reading for port in self.ports]

    def test_pauseAndResume(self) -> None:
        """
        A local error stops every port reading for 50 ms.
        """
        self.errors.connectFailed(errno.EMFILE, "app", "192.0.2.1:5000")
        self.assertEqual(self.reading(), [False, False])
        self.assertTrue(self.errors.paused)
        self.clock.advance(0.049)
        self.assertEqual(self.reading(), [False, False])
        self.clock.advance(0.001)
        self.assertEqual(self.reading(), [True, True])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_growsWhileErrorsLast(self) -> None:
        """
        While errors keep coming, each pause doubles, up to a second; after
        a quiet second the next one is short again.
        """
        pauses = []
        for _ in range(8):
            self.errors.acceptFailed(errno.EMFILE, "tcp:8080")
            (resume,) = self.clock.getDelayedCalls()
            pauses.append(round(resume.getTime() - self.clock.seconds(), 3))
            self.clock.advance(resume.getTime() - self.clock.seconds())
        self.assertEqual(pauses, [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0])
        self.clock.advance(1.01)
        self.errors.acceptFailed(errno.EMFILE, "tcp:8080")
        (resume,) = self.clock.getDelayedCalls()
        self.assertEqual(round(resume.getTime() - self.clock.seconds(), 3), 0.05)
        self.assertEqual(self.errors.acceptErrors, 9)
        self.assertEqual(self.errors.pauses, 9)

    def test_errorsDuringPause(self) -> None:
        """
        Errors during a pause are counted but do not stretch it.
        """
        self.errors.connectFailed(errno.EMFILE, "app", "client")
        self.clock.advance(0.03)
        self.errors.connectFailed(errno.EMFILE, "app", "client")
        self.clock.advance(0.02)
        self.assertEqual(self.reading(), [True, True])
        self.assertEqual(self.errors.connectErrors, 2)
        self.assertEqual(self.errors.pauses, 1)

    def test_stoppedPortNotResumed(self) -> None:
        """
        A port that stopped listening during a pause, or was forgotten, is
        not started again.
        """
        self.errors.connectFailed(errno.EMFILE, "app", "client")
        self.ports[0].connected = False
        self.errors.unwatchPort(self.ports[1])
        self.clock.advance(1)
        self.assertEqual(self.reading(), [False, False])

    def test_newPortDuringPause(self) -> None:
        """
        A port that starts listening during a pause starts paused.
        """
        self.errors.connectFailed(errno.EMFILE, "app", "client")
        late = FakePort()
        self.errors.watchPort(late, "tcp:9090")
        self.assertFalse(late.reading)
        self.clock.advance(0.05)
        self.assertTrue(late.reading)

    def test_stop(self) -> None:
        """
        L{LocalErrors.stop} leaves no timer behind.
        """
        self.errors.checkFailed(errno.ENFILE, "app")
        self.errors.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_unpausablePort(self) -> None:
        """
        A port that cannot be paused (not a file descriptor) is left alone.
        """
        other = object()
        self.errors.watchPort(other, "onion:80")
        self.errors.connectFailed(errno.EMFILE, "app", "client")
        self.clock.advance(1)
        self.assertEqual(self.reading(), [True, True])


class TwistedAcceptLoopTests(SynchronousTestCase):
    """
    Twisted's own accept loop (C{tcp.Port.doRead}) on a watched port: an
    accept that fails for want of a resource pauses the port instead of
    being retried at once or closing queued clients.
    """

    def portWith(self, socket: FakeListeningSocket) -> tuple[Any, MemoryReactorClock]:
        reactor = MemoryReactorClock()
        port = tcp.Port(8080, Factory.forProtocol(Protocol), reactor=reactor)
        port.socket = socket
        port.numberAccepts = 100
        port.connected = True
        port.startReading()
        return port, reactor

    def test_emfileKeepsClientsQueued(self) -> None:
        """
        C{EMFILE} stops the accept loop at once with the client still
        queued (Twisted would otherwise accept and close every queued client
        with its spare descriptor, logging a line for each), and the port
        reads again after the pause.
        """
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        socket = FakeListeningSocket(errno.EMFILE)
        port, reactor = self.portWith(socket)
        errors = LocalErrors(reactor)
        errors.watchPort(port, "tcp:8080")
        port.doRead()
        self.assertEqual(socket.accepts, 1)
        self.assertNotIn(port, reactor.getReaders())
        self.assertEqual(errors.acceptErrors, 1)
        self.assertEqual(
            [formatEvent(e) for e in observer if "EMFILE" in formatEvent(e)],
            [
                "Accepting on tcp:8080 failed: EMFILE (Too many open files); "
                "clients wait in the listen queue; raise the open files limit "
                "(ulimit -n, LimitNOFILE=); accepting paused for 0.05s"
            ],
        )
        reactor.advance(0.05)
        self.assertIn(port, reactor.getReaders())
        self.assertEqual(port.getHost().port, 8080)

    def test_enfileDoesNotSpin(self) -> None:
        """
        C{ENFILE} (and C{ENOMEM}, C{ENOBUFS}) leave the listening socket
        readable: without a pause the reactor would call the accept loop
        again at once, forever.
        """
        socket = FakeListeningSocket(errno.ENFILE)
        port, reactor = self.portWith(socket)
        LocalErrors(reactor).watchPort(port, "tcp:8080")
        port.doRead()
        self.assertNotIn(port, reactor.getReaders())

    def test_otherErrorsAreTwisteds(self) -> None:
        """
        Errors that are not about resources are left to Twisted's loop.
        """
        socket = FakeListeningSocket(errno.ECONNABORTED)
        port, reactor = self.portWith(socket)
        errors = LocalErrors(reactor)
        errors.watchPort(port, "tcp:8080")
        port.doRead()
        self.assertIn(port, reactor.getReaders())
        self.assertEqual(errors.acceptErrors, 0)


class PausableReactor(MemoryReactorClock):
    """
    A memory reactor whose TCP ports can be paused, as real ones can.
    """

    def listenTCP(
        self, port: int, factory: Any, backlog: int = 50, interface: str = ""
    ) -> Any:  # type: ignore[override]
        super().listenTCP(port, factory, backlog, interface)
        self.port = FakePort()
        return self.port


class ServiceTests(SynchronousTestCase):
    """
    The balancer's service listens with a production backlog and pauses
    its listeners on local errors.
    """

    def startService(self, *extra: str) -> tuple[Any, PausableReactor]:
        options = Options()
        options.parseOptions(
            ["--listen", "tcp:8080", "--backend", "127.0.0.1:8081", *extra]
        )
        reactor = PausableReactor()
        service = makeBalancerService(options["config"], reactor)
        service.startService()
        return service, reactor

    def test_backlog(self) -> None:
        """
        A listener whose endpoint string sets no backlog asks for 511, not
        Twisted's 50, which a burst of a few hundred connects overflows.
        """
        service, reactor = self.startService()
        self.assertEqual(reactor.tcpServers[0][2], 511)
        self.successResultOf(service.stopService())

    def test_localErrorPausesListeners(self) -> None:
        """
        A backend connect failing with C{EMFILE} pauses the listeners; a
        stop during the pause leaves no timer and no port reading.
        """
        service, reactor = self.startService("--drain-timeout", "0")
        self.assertTrue(reactor.port.reading)
        service.balancer.localErrors.connectFailed(errno.EMFILE, "b", "client")
        self.assertFalse(reactor.port.reading)
        self.successResultOf(service.stopService())
        reactor.advance(1)
        self.assertFalse(reactor.port.reading)
        self.assertEqual(reactor.getDelayedCalls(), [])

    def test_settingsReachTheRelay(self) -> None:
        """
        C{--first-byte-timeout} reaches the relay, and the checkers count
        their local errors on the balancer's L{LocalErrors}.
        """
        service, reactor = self.startService(
            "--first-byte-timeout", "4", "--check", "tcp"
        )
        self.assertEqual(service.balancer.settings.firstByteTimeout, 4.0)
        self.assertIs(service.checkers[0].localErrors, service.balancer.localErrors)
        self.successResultOf(service.stopService())
