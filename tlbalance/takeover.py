# -*- test-case-name: tests.unit.test_takeover -*-
"""
Hitless upgrade (C{twistd tlbalance --takeover PATH}): a new balancer takes
the listening sockets of the running one over its control socket, so that
no connection attempt is refused while one process replaces the other.

The conversation, on the old balancer's control socket::

    new -> old   takeover
    old -> new   {"takeover": 1, "pid": ..., "listeners": [KEY, ...]}
                 (one JSON line; its first bytes carry the listening
                 sockets, one per key, in order, as SCM_RIGHTS)
    new -> old   takeover-done       (the new one has adopted them)
    old -> new   takeover-released   (the old one has closed its control
                                      socket; it now drains and exits)

A key is C{"listen "} or C{"stats "} and the endpoint string as configured.
The old side is L{ListenerOffer}, run by the control socket; the new side
is L{installTakeover}, which C{twistd tlbalance} calls. The old balancer
keeps its sockets, and serves, until the new one says it has adopted them;
closing its copy then leaves the kernel's socket, and the connections
queued on it, to the new process.
"""

from __future__ import annotations

import json
import os
import socket
from functools import partial
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

from twisted.application.service import IService, Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from zope.interface import implementer

from tlbalance._loglevel import balancerLogger
from tlsuite._listen import ListenService
from tlsuite._startup import StartupError
from tlsuite._twisted import releaseSharedPort

if TYPE_CHECKING:
    from tlbalance.control import ControlProtocol
    from tlbalance.service import BalancerService

log = balancerLogger("tlbalance.takeover")

#: The command the new balancer sends, and its two later lines.
TAKEOVER = "takeover"
DONE = "takeover-done"
RELEASED = "takeover-released"

#: Seconds the new balancer waits for each answer of the old one.
TIMEOUT = 10.0

_MAX_LINE = 65536


def listenerKeys(service: BalancerService) -> List[Tuple[str, ListenService]]:
    """
    Each listener of a balancer that can be handed over, with its key: the
    balancer's listen endpoints (C{"listen DESCRIPTION"}), then its stats
    endpoints (C{"stats DESCRIPTION"}).
    """
    keyed: List[Tuple[str, ListenService]] = [
        ("listen " + listener.description, listener) for listener in service.listeners
    ]
    keyed += [("stats " + s.description, s) for s in service.statsListeners]
    return keyed


class ListenerOffer:
    """
    The old balancer's side of a takeover, on one control connection: it
    sends its listening sockets, and on the new balancer's word closes its
    control socket, stops accepting, drains and exits.

    @ivar released: the new balancer has taken the listeners over.
    """

    def __init__(
        self,
        protocol: ControlProtocol,
        service: BalancerService,
        stopProcess: Callable[[], object],
    ) -> None:
        self.protocol = protocol
        self.service = service
        self.stopProcess = stopProcess
        self.released = False
        self._ports: List[IListeningPort] = []

    def offer(self) -> None:
        """
        Send the listening sockets and the line that names them.
        """
        transport = self.protocol.transport
        keys = []
        for key, listener in listenerKeys(self.service):
            port = listener.port
            fileno = getattr(port, "fileno", None)
            if port is None or fileno is None:
                continue
            keys.append(key)
            self._ports.append(port)
            transport.sendFileDescriptor(fileno())  # type: ignore[union-attr]
        log.info(
            "Takeover: {who} asks for the listeners; sending {count}",
            who=self.protocol.who,
            count=len(keys),
        )
        # Each descriptor rides on one byte of this line.
        line = {"takeover": 1, "pid": os.getpid(), "listeners": keys}
        self.protocol.sendLine(json.dumps(line).encode("utf-8"))

    def lineReceived(self, text: str) -> None:
        """
        The new balancer's next word: C{takeover-done} hands over.
        """
        if self.released:
            return
        if text.strip() != DONE:
            self.protocol.sendLine(f"error: expected {DONE}".encode())
            if self.protocol.transport is not None:
                self.protocol.transport.loseConnection()
            return
        self.released = True
        self.protocol.factory.handedOver = True
        for port in self._ports:
            releaseSharedPort(port)
        control = self.service.control
        # The new balancer binds the control path once this one has
        # closed it; the drain must not close it again.
        self.service.control = None
        stopped: Deferred[Any] = succeed(None)
        if isinstance(control, ListenService):
            stopped = ListenService.stopService(control)
        stopped.addCallback(lambda _: self._confirm())

    def _confirm(self) -> None:
        log.info("Takeover: the new balancer has the listeners; draining, then exiting")
        self.protocol.sendLine(RELEASED.encode("utf-8"))
        if self.protocol.transport is not None:
            self.protocol.transport.loseConnection()

    def connectionLost(self) -> None:
        """
        The control connection closed: after a handover, stop the process
        (twistd drains on the way); before, the takeover was abandoned and
        this balancer keeps serving.
        """
        if self.released:
            self.stopProcess()
        else:
            log.warn(
                "Takeover abandoned by {who}; still serving", who=self.protocol.who
            )


class TakeoverError(StartupError):
    """
    The takeover could not happen; the message is one line.
    """


def _readLine(client: socket.socket, fds: List[int], path: str) -> str:
    """
    Read one line from the old balancer, collecting the descriptors that
    come with it.
    """
    data = b""
    while not data.endswith(b"\n"):
        if len(data) > _MAX_LINE:
            raise TakeoverError(f"--takeover: {path} sent an overlong line")
        try:
            chunk, received, _flags, _address = socket.recv_fds(client, 4096, 16)
        except OSError as e:
            raise TakeoverError(
                f"--takeover: {path} did not answer: {e.strerror or e}"
            ) from None
        fds.extend(received)
        if not chunk:
            raise TakeoverError(f"--takeover: {path} closed the connection")
        data += chunk
    return data.decode("utf-8", "replace").rstrip("\r\n")


def _familyOf(fd: int) -> int:
    probe = socket.socket(fileno=fd)
    try:
        return int(probe.family)
    finally:
        probe.detach()


class Takeover:
    """
    The new balancer's side of a takeover: connect to the old one, receive
    its listening sockets, adopt the ones this configuration has, and tell
    it to go.

    @ivar path: the old balancer's control socket.
    @ivar offered: the sockets received and not adopted (yet), by key.
    @ivar oldPID: the old balancer's process id, once known.
    """

    def __init__(self, path: str, reactor: Any, timeout: float = TIMEOUT) -> None:
        self.path = path
        self.reactor = reactor
        self.timeout = timeout
        self.offered: Dict[str, int] = {}
        self.oldPID: Optional[int] = None
        self.adopted = 0
        self._client: Optional[socket.socket] = None

    def receive(self) -> None:
        """
        Ask the old balancer for its listeners.

        @raise TakeoverError: nothing answers at the path, or what answers
            is not a balancer that hands its listeners over.
        """
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.settimeout(self.timeout)
        try:
            client.connect(self.path)
        except OSError as e:
            client.close()
            raise TakeoverError(
                f"--takeover: cannot connect to {self.path}: "
                f"{e.strerror or e}; is tlbalance running with --control "
                f"{self.path}?"
            ) from None
        self._client = client
        client.sendall(TAKEOVER.encode("ascii") + b"\n")
        fds: List[int] = []
        line = _readLine(client, fds, self.path)
        try:
            answer = json.loads(line)
            keys = answer["listeners"]
            self.oldPID = int(answer["pid"])
            if answer.get("takeover") != 1 or len(keys) != len(fds):
                raise ValueError(line)
        except (ValueError, KeyError, TypeError):
            for fd in fds:
                os.close(fd)
            self.close()
            raise TakeoverError(
                f"--takeover: {self.path} is not a tlbalance that can hand "
                f"over its listeners (it answered {line[:80]!r})"
            ) from None
        self.offered = dict(zip(keys, fds))

    def adopt(self, key: str, factory: Any) -> Optional[IListeningPort]:
        """
        Serve C{factory} on the socket received for C{key}, if one was.

        @return: the listening port, or C{None} when the old balancer had
            no such listener.
        """
        fd = self.offered.pop(key, None)
        if fd is None:
            return None
        try:
            os.set_blocking(fd, False)
            port: IListeningPort = self.reactor.adoptStreamPort(
                fd, _familyOf(fd), factory
            )
        finally:
            # Twisted serves a duplicate of it.
            os.close(fd)
        self.adopted += 1
        return port

    def release(self) -> None:
        """
        Close the sockets not adopted and tell the old balancer to stop
        accepting, drain and exit; return once it has closed its control
        socket.

        @raise TakeoverError: it did not confirm.
        """
        for key, fd in sorted(self.offered.items()):
            log.info("Takeover: not serving {key} any more", key=key)
            os.close(fd)
        self.offered = {}
        client = self._client
        assert client is not None, "receive() first"
        try:
            client.sendall(DONE.encode("ascii") + b"\n")
            line = _readLine(client, [], self.path)
        finally:
            self.close()
        if line != RELEASED:
            raise TakeoverError(
                f"--takeover: {self.path} did not release its listeners "
                f"(it answered {line[:80]!r})"
            )
        log.info(
            "Takeover: serving {count} listener(s) of pid {pid}, which drains "
            "and exits",
            count=self.adopted,
            pid=self.oldPID,
        )

    def close(self) -> None:
        """
        Close the connection to the old balancer.
        """
        if self._client is not None:
            self._client.close()
            self._client = None


@implementer(IStreamServerEndpoint)
class HandedOverEndpoint:
    """
    Listens on the socket the old balancer handed over for C{key}, or, when
    it had none, on the configured endpoint.
    """

    def __init__(
        self, takeover: Takeover, key: str, endpoint: IStreamServerEndpoint
    ) -> None:
        self.takeover = takeover
        self.key = key
        self.endpoint = endpoint

    def listen(self, factory: Any) -> Deferred[IListeningPort]:
        port = self.takeover.adopt(self.key, factory)
        if port is None:
            return self.endpoint.listen(factory)
        return succeed(port)


class ReceiveListenersService(Service):
    """
    Starts first: receives the old balancer's listening sockets before any
    listener binds.
    """

    def __init__(self, takeover: Takeover) -> None:
        self.takeover = takeover

    def privilegedStartService(self) -> None:
        self.takeover.receive()
        super().privilegedStartService()


class ReleaseOldService(Service):
    """
    Starts last, once every listener serves: tells the old balancer to go,
    then binds the control socket at the path it gave up.

    @ivar control: this balancer's control socket service, or C{None}.
    """

    def __init__(self, takeover: Takeover, control: Optional[IService]) -> None:
        self.takeover = takeover
        self.control = control

    def startService(self) -> None:
        self.takeover.release()
        if self.control is not None:
            self.control.privilegedStartService()
            self.control.startService()
        super().startService()


def installTakeover(service: BalancerService, path: str, reactor: Any) -> None:
    """
    Make a built balancer take its listeners over from the one whose
    control socket is at C{path} when it starts: same key, the old socket
    (under this configuration's TLS and PROXY settings); a listener the old
    balancer lacks is bound afresh; an old one this configuration lacks is
    closed. Its own control socket is bound after the handover.

    Call it once every child is in place (after
    L{BalancerService.hostSessionDaemon}): the old balancer is told to go
    only after all of them started.
    """
    if reactor is None:
        from twisted.internet import reactor
    takeover = Takeover(path, reactor)
    for key, listener in listenerKeys(service):
        listener.wrapEndpoint(partial(HandedOverEndpoint, takeover, key))
    receive = ReceiveListenersService(takeover)
    receive.setServiceParent(service)
    service.services.remove(receive)
    service.services.insert(0, receive)
    control = service.control
    if control is not None:
        control.disownServiceParent()
    ReleaseOldService(takeover, control).setServiceParent(service)
