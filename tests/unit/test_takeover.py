"""
Tests for L{tlbalance.takeover}: the old balancer's side of a hitless
upgrade on memory transports, and how a new balancer is arranged to take
its listeners over.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from typing import Any, List, Optional

from twisted.internet import unix
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tlbalance.control import ControlFactory, ControlService
from tlbalance.runtime import RuntimeState
from tlbalance.service import makeBalancerService
from tlbalance.takeover import (
    HandedOverEndpoint,
    ListenerOffer,
    ReceiveListenersService,
    ReleaseOldService,
    Takeover,
    TakeoverError,
    installTakeover,
)
from tlbalance.tap import Options, makeService
from tlsuite._listen import ListenService
from tlsuite._twisted import releaseSharedPort


class _FDTransport(StringTransport):
    """
    A memory unix transport that records the descriptors sent.
    """

    def __init__(self) -> None:
        super().__init__()
        self.fds: List[int] = []

    def sendFileDescriptor(self, fd: int) -> None:
        self.fds.append(fd)


class _Port:
    """
    A listening port on descriptor C{fd}, whose stop the test completes.
    """

    _shouldShutdown = True

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.stopping: Optional[Deferred[None]] = None

    def fileno(self) -> int:
        return self.fd

    def stopListening(self) -> Deferred[None]:
        self.stopping = Deferred()
        return self.stopping


class _Endpoint:
    def __init__(self, port: Any) -> None:
        self.port = port
        self.listened: List[Any] = []

    def listen(self, factory: Any) -> Deferred[Any]:
        self.listened.append(factory)
        return succeed(self.port)


class _Listener:
    def __init__(self, description: str, port: Optional[_Port]) -> None:
        self.description = description
        self.port = port


class _Balancer:
    """
    What the takeover reads of a balancer service.
    """

    def __init__(self, control: Optional[ListenService]) -> None:
        self.listeners = [
            _Listener("tcp:8080", _Port(7)),
            _Listener("unix:/run/lb.sock", _Port(8)),
            _Listener("tcp:8443", None),
        ]
        self.statsListeners = [_Listener("tcp:8404", _Port(9))]
        self.control = control


class ListenerOfferTests(SynchronousTestCase):
    """
    The old balancer sends its listeners, and goes only when the new one
    has them.
    """

    def setUp(self) -> None:
        self.controlPort = _Port(3)
        control = ListenService("unix:c", _Endpoint(self.controlPort), object())
        control.privilegedStartService()
        self.balancer = _Balancer(control)
        self.stopped: List[bool] = []
        self.factory = ControlFactory(RuntimeState(self.balancer))  # type: ignore
        self.factory.stopProcess = lambda: self.stopped.append(True)
        self.protocol = self.factory.buildProtocol(None)
        self.transport = _FDTransport()
        self.protocol.makeConnection(self.transport)
        self.protocol.dataReceived(b"takeover\n")

    def test_offer(self) -> None:
        """
        The listening descriptors go in order, listen endpoints then stats
        endpoints, named by one JSON line; one not listening is left out.
        """
        self.assertEqual(self.transport.fds, [7, 8, 9])
        line = json.loads(self.transport.value())
        self.assertEqual(
            line,
            {
                "takeover": 1,
                "pid": os.getpid(),
                "listeners": [
                    "listen tcp:8080",
                    "listen unix:/run/lb.sock",
                    "stats tcp:8404",
                ],
            },
        )
        self.assertFalse(self.transport.disconnecting)
        self.assertIsInstance(self.protocol.takeover, ListenerOffer)

    def test_release(self) -> None:
        """
        On C{takeover-done} the old balancer closes its control socket,
        confirms once it is closed, leaves the shared sockets whole, and
        stops the process when the connection closes.
        """
        self.transport.clear()
        self.protocol.dataReceived(b"takeover-done\n")
        self.assertEqual(self.transport.value(), b"")
        assert self.controlPort.stopping is not None
        self.controlPort.stopping.callback(None)
        self.assertEqual(self.transport.value(), b"takeover-released\n")
        self.assertTrue(self.transport.disconnecting)
        self.assertIsNone(self.balancer.control)
        for listener in self.balancer.listeners[:2] + self.balancer.statsListeners:
            assert listener.port is not None
            self.assertFalse(listener.port._shouldShutdown)
        self.assertEqual(self.stopped, [])
        self.protocol.connectionLost()
        self.assertEqual(self.stopped, [True])

    def test_abandoned(self) -> None:
        """
        A new balancer that goes away before C{takeover-done} leaves the old
        one serving as before.
        """
        self.protocol.connectionLost()
        self.assertEqual(self.stopped, [])
        self.assertIsNone(self.controlPort.stopping)
        self.assertIsNotNone(self.balancer.control)
        port = self.balancer.listeners[0].port
        assert port is not None
        self.assertTrue(port._shouldShutdown)

    def test_wrongWord(self) -> None:
        """
        Anything but C{takeover-done} gets an error and the connection
        closes; nothing is handed over.
        """
        self.transport.clear()
        self.protocol.dataReceived(b"show servers\n")
        self.assertEqual(self.transport.value(), b"error: expected takeover-done\n")
        self.assertTrue(self.transport.disconnecting)
        self.protocol.connectionLost()
        self.assertEqual(self.stopped, [])
        self.assertIsNone(self.controlPort.stopping)

    def connectAnother(self) -> _FDTransport:
        """
        Another connection to the same control socket, asking to take over.
        """
        protocol = self.factory.buildProtocol(None)
        transport = _FDTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(b"takeover\n")
        return transport

    def test_oneAtATime(self) -> None:
        """
        A second takeover while one is under way gets an error and no
        socket; once the first is abandoned, another may start.
        """
        second = self.connectAnother()
        self.assertEqual(second.fds, [])
        self.assertEqual(second.value(), b"error: another takeover is under way\n\n")
        self.protocol.connectionLost()
        self.assertEqual(self.connectAnother().fds, [7, 8, 9])

    def test_notAfterHandover(self) -> None:
        """
        Once the listeners are handed over, an operator still connected
        cannot ask for them again.
        """
        operator = self.factory.buildProtocol(None)
        transport = _FDTransport()
        operator.makeConnection(transport)
        self.protocol.dataReceived(b"takeover-done\n")
        assert self.controlPort.stopping is not None
        self.controlPort.stopping.callback(None)
        self.protocol.connectionLost()
        operator.dataReceived(b"takeover\n")
        self.assertEqual(transport.fds, [])
        self.assertEqual(
            transport.value(),
            b"error: this balancer has handed its listeners over\n\n",
        )

    def test_notWithoutStop(self) -> None:
        """
        A control socket that cannot end its process does not know the
        command.
        """
        factory = ControlFactory(RuntimeState(self.balancer))  # type: ignore
        protocol = factory.buildProtocol(None)
        transport = _FDTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(b"takeover\n")
        self.assertEqual(transport.fds, [])
        self.assertTrue(transport.value().startswith(b"error: unknown command"))


class ReleasePortTests(SynchronousTestCase):
    """
    L{releaseSharedPort} keeps the old balancer from harming shared sockets.
    """

    def stopUnixPort(self, release: bool) -> str:
        """
        Stop a unix port listening in a temporary directory, released or
        not.

        @return: the path it listened on.
        """
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        path = os.path.join(directory, "lb.sock")
        listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listening.bind(path)
        listening.listen()
        port = unix.Port(path, Factory(), reactor=MemoryReactorClock())
        port.socket = listening
        port.fileno = listening.fileno
        if release:
            releaseSharedPort(port)
            self.assertFalse(port._shouldShutdown)
        port.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(listening.fileno(), -1)
        return path

    def test_unixPath(self) -> None:
        """
        A released unix port leaves its socket file, which the new
        balancer serves, in place.
        """
        self.assertTrue(os.path.exists(self.stopUnixPort(release=True)))

    def test_unixPathRemoved(self) -> None:
        """
        Twisted removes the file of a unix port it stops, which is why
        L{releaseSharedPort} is needed.
        """
        self.assertFalse(os.path.exists(self.stopUnixPort(release=False)))


class NewBalancerTests(SynchronousTestCase):
    """
    How a new balancer started with C{--takeover} is arranged.
    """

    def test_order(self) -> None:
        """
        The listeners are received before anything binds, the old balancer
        is released after everything started, and the control socket binds
        only then.
        """
        reactor = MemoryReactorClock()
        directory = tempfile.mkdtemp()
        self.addCleanup(os.rmdir, directory)
        control = os.path.join(directory, "control.sock")
        options = Options()
        options.parseOptions(
            ["--listen", "tcp:0", "--backend", "127.0.0.1:9", "--control", control]
        )
        service = makeBalancerService(options["config"], reactor)
        installTakeover(service, control, reactor)
        children = list(service)
        self.assertIsInstance(children[0], ReceiveListenersService)
        self.assertIsInstance(children[-1], ReleaseOldService)
        self.assertNotIn(service.control, children)
        self.assertIsInstance(children[-1].control, ControlService)
        inner = service.listeners[0].endpoint.endpoint  # type: ignore
        self.assertIsInstance(inner, HandedOverEndpoint)
        self.assertEqual(inner.key, "listen tcp:0")

    def test_option(self) -> None:
        """
        C{twistd tlbalance --takeover PATH} builds a balancer that takes
        over from PATH, and is not a configuration setting.
        """
        options = Options()
        options.parseOptions(
            ["--listen", "tcp:0", "--backend", "127.0.0.1:9"]
            + ["--takeover", "/run/tlbalance/control.sock"]
        )
        self.assertEqual(options["takeover"], "/run/tlbalance/control.sock")
        service = makeService(options, MemoryReactorClock())
        first = list(service)[0]
        assert isinstance(first, ReceiveListenersService)
        self.assertEqual(first.takeover.path, "/run/tlbalance/control.sock")
        self.assertIsInstance(list(service)[-1], ReleaseOldService)
        plain = Options()
        plain.parseOptions(["--listen", "tcp:0", "--backend", "127.0.0.1:9"])
        self.assertNotIsInstance(
            list(makeService(plain, MemoryReactorClock()))[0],
            ReceiveListenersService,
        )

    def test_freshListener(self) -> None:
        """
        A listener the old balancer did not have binds its own endpoint.
        """
        endpoint = _Endpoint("a port")
        handedOver = HandedOverEndpoint(
            Takeover("/nowhere", MemoryReactorClock()), "listen tcp:1", endpoint
        )
        factory = object()
        self.assertEqual(self.successResultOf(handedOver.listen(factory)), "a port")
        self.assertEqual(endpoint.listened, [factory])

    def test_nothingThere(self) -> None:
        """
        A path where nothing listens is a one-line start-up error.
        """
        directory = tempfile.mkdtemp()
        self.addCleanup(os.rmdir, directory)
        path = os.path.join(directory, "control.sock")
        error = self.assertRaises(
            TakeoverError, Takeover(path, MemoryReactorClock()).receive
        )
        self.assertEqual(
            str(error),
            f"--takeover: cannot connect to {path}: No such file or directory; "
            f"is tlbalance running with --control {path}?",
        )
