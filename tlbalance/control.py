# -*- test-case-name: tests.unit.test_control -*-
"""
The balancer's control socket: the runtime API (C{show servers}, C{set
server NAME state drain}, ...) served line by line on a unix socket of mode
0600, whose permissions are its access control.

Each line is one command and gets one response. A plain command is
answered in text for a person (as with C{socat}), ended by an empty line;
an error is one line starting with C{error:}. A command after the word
C{json} is answered with one JSON line, C{{"ok": true, "command": ...,
"result": ...}} or C{{"ok": false, "error": ...}}: what C{tlbalancectl}
reads.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import stat
import struct
import sys
from typing import Any, Callable, Dict, Optional, Set

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import UNIXServerEndpoint
from twisted.internet.interfaces import IAddress, ITransport
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure

from tlbalance._commands import USAGE, Command, CommandError, parseCommand, renderText
from tlbalance._loglevel import balancerLogger
from tlbalance.runtime import RuntimeChangeError, RuntimeState
from tlbalance.takeover import TAKEOVER, ListenerOffer
from tlsuite import __version__
from tlsuite._listen import ListenService
from tlsuite._startup import StartupError

log = balancerLogger("tlbalance.control")


# PyPy's socket module lacks the constant; it is 17 on Linux on x86 and ARM
# (the generic value; a few other architectures differ).
_LINUX_PEERCRED: Optional[int] = (
    17
    if sys.platform.startswith("linux")
    and platform.machine() in ("x86_64", "aarch64", "i386", "i686", "armv7l")
    else None
)


def peerUID(transport: Optional[ITransport]) -> Optional[int]:
    """
    The uid of the process at the other end of a unix socket
    (C{SO_PEERCRED}), or C{None} where the platform cannot tell.
    """
    option = getattr(socket, "SO_PEERCRED", _LINUX_PEERCRED)
    getHandle = getattr(transport, "getHandle", None)
    if option is None or getHandle is None:
        return None
    size = struct.calcsize("3i")
    try:
        credentials = getHandle().getsockopt(socket.SOL_SOCKET, option, size)
    except (OSError, AttributeError):
        return None
    _pid, uid, _gid = struct.unpack("3i", credentials)
    return int(uid)


def execute(runtime: RuntimeState, command: Command, who: str) -> Dict[str, Any]:
    """
    Run a parsed command against the balancer.

    @param who: who asked, for the log of state changes (C{"uid 1000"}).
    @return: the result, as plain values (see L{renderText}).
    @raise RuntimeChangeError: the change cannot be made.
    """
    action = command.action
    if action == "show servers":
        return {"servers": runtime.servers()}
    if action == "show listeners":
        return {"listeners": runtime.listeners()}
    if action == "show stat":
        return runtime.stat()
    if action == "show version":
        return {"version": __version__}
    if action == "help":
        return {"commands": list(USAGE)}
    if action == "reload":
        return {"changes": runtime.reload(who)}
    assert command.name is not None
    if action == "set state":
        message = runtime.setServerState(command.name, command.value, who)
    elif action == "set weight":
        message = runtime.setServerWeight(command.name, command.value, who)
    elif action == "add server":
        message = runtime.addServer(
            command.name, command.value, dict(command.options), who
        )
    else:
        message = runtime.delServer(command.name, who)
    return {"message": message}


class ControlProtocol(LineReceiver):
    """
    One operator's connection to the control socket.

    @ivar who: the peer, as logged with its changes (C{"uid 1000"}).
    """

    delimiter = b"\n"
    MAX_LENGTH = 16384
    factory: ControlFactory

    takeover: Optional[ListenerOffer] = None

    def connectionMade(self) -> None:
        uid = peerUID(self.transport)
        self.who = "an unknown peer" if uid is None else f"uid {uid}"
        self.factory.connections.add(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.factory.connections.discard(self)
        if self.takeover is not None:
            self.takeover.connectionLost()

    def lineReceived(self, line: bytes) -> None:
        """
        Answer one command. C{takeover}, from a new balancer started with
        C{--takeover}, hands the listeners over (L{tlbalance.takeover}).
        """
        text = line.rstrip(b"\r").decode("utf-8", "replace")
        if self.takeover is not None:
            self.takeover.lineReceived(text)
            return
        if text.strip() == TAKEOVER and self.factory.stopProcess is not None:
            self._offerListeners(self.factory.stopProcess)
            return
        wantsJSON = text.split()[:1] == ["json"]
        try:
            command = parseCommand(text)
        except CommandError as e:
            self._error(str(e), wantsJSON)
            return
        if not command.action.startswith(("show", "help")):
            asked = text.strip()
            if command.json:
                asked = asked[len("json") :].strip()
            log.info("Control: {who} asks: {command}", who=self.who, command=asked)
        try:
            result = execute(self.factory.runtime, command, self.who)
        except RuntimeChangeError as e:
            self._error(str(e), wantsJSON)
            return
        except Exception:
            log.failure("Control command {command!r} failed", command=text)
            self._error("internal error; see the balancer's log", wantsJSON)
            return
        if command.json:
            self._send(
                json.dumps({"ok": True, "command": command.action, "result": result})
            )
        else:
            for out in renderText(command.action, result):
                self._send(out)
            self._send("")

    def _offerListeners(self, stopProcess: Callable[[], object]) -> None:
        """
        Start handing the listeners over to a new balancer, one at a time
        and only once.
        """
        if self.factory.handedOver:
            self._error("this balancer has handed its listeners over", False)
        elif any(c.takeover is not None for c in self.factory.connections):
            self._error("another takeover is under way", False)
        else:
            self.takeover = ListenerOffer(
                self, self.factory.runtime.service, stopProcess
            )
            self.takeover.offer()

    def lineLengthExceeded(self, line: bytes) -> None:
        """
        Refuse a line too long to be a command, and close: the rest of it
        cannot be told from the next command.
        """
        self._error(f"line longer than {self.MAX_LENGTH} bytes", False)
        if self.transport is not None:
            self.transport.loseConnection()

    def _error(self, message: str, wantsJSON: bool) -> None:
        if wantsJSON:
            self._send(json.dumps({"ok": False, "error": message}))
        else:
            self._send("error: " + message)
            self._send("")

    def _send(self, text: str) -> None:
        self.sendLine(text.encode("utf-8"))


class ControlFactory(Factory):
    """
    Builds a L{ControlProtocol} for each operator connection.

    @ivar runtime: the balancer's L{RuntimeState}.
    @ivar connections: the connections open now.
    @ivar stopProcess: ends the process (twistd drains on the way) once a
        takeover has handed the listeners over, or C{None} to refuse
        takeovers.
    @ivar handedOver: a takeover has handed the listeners over.
    """

    noisy = False

    def __init__(self, runtime: RuntimeState) -> None:
        self.runtime = runtime
        self.connections: Set[ControlProtocol] = set()
        self.stopProcess: Optional[Callable[[], object]] = None
        self.handedOver = False

    def buildProtocol(self, addr: Optional[IAddress]) -> Protocol:
        protocol = ControlProtocol()
        protocol.factory = self
        return protocol


def clearStaleSocket(path: str) -> None:
    """
    Remove a socket file left by a balancer that did not stop cleanly.

    @raise StartupError: C{path} is something else than a socket, or a
        live process still answers on it.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise StartupError(f"--control: {path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)
        return
    finally:
        probe.close()
    raise StartupError(
        f"--control: another process is serving {path}; stop it or choose another path"
    )


class ControlService(ListenService):
    """
    Serves the runtime API on a unix socket of mode 0600. A stale socket
    left at the path is replaced; the socket file is removed on stop, and
    the operators still connected are disconnected.
    """

    def __init__(self, path: str, reactor: Any, runtime: RuntimeState) -> None:
        self.path = path
        self.factory: ControlFactory = ControlFactory(runtime)
        self.factory.stopProcess = reactor.stop
        endpoint = UNIXServerEndpoint(reactor, path, mode=0o600)
        super().__init__(
            f"unix:{path}", endpoint, self.factory, who="the control socket "
        )

    def privilegedStartService(self) -> None:
        """
        Listen, after removing a stale socket file.

        @raise StartupError: the path is taken, in one line.
        """
        clearStaleSocket(self.path)
        super().privilegedStartService()

    def stopService(self) -> Deferred[None]:
        """
        Stop listening (which removes the socket file) and disconnect.
        """
        stopped: Deferred[None] = super().stopService()
        for protocol in list(self.factory.connections):
            if protocol.transport is not None:
                protocol.transport.loseConnection()
        return stopped
