"""
Tests for L{tlbalance.control}: the control socket's protocol, answering
people in text and C{tlbalancectl} in JSON lines.
"""

from __future__ import annotations

import io
import json
import os
import struct
import tempfile

from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from tests.unit.test_runtime import startBalancer
from tlbalance import ctl
from tlbalance.control import ControlFactory, ControlProtocol, clearStaleSocket
from tlbalance.runtime import RuntimeState
from tlsuite._startup import StartupError


class _PeerSocket:
    """
    A socket whose peer credentials say uid 4242.
    """

    def getsockopt(self, level: int, option: int, size: int) -> bytes:
        return struct.pack("3i", 123, 4242, 99)


class _UnixTransport(StringTransport):
    """
    A memory transport with a unix socket's handle.
    """

    def getHandle(self) -> _PeerSocket:
        return _PeerSocket()


class ControlProtocolTests(SynchronousTestCase):
    """
    One command per line, one response per command.
    """

    def setUp(self) -> None:
        self.service = startBalancer(self)
        self.factory = ControlFactory(RuntimeState(self.service))
        self.protocol = self.factory.buildProtocol(None)
        self.transport = _UnixTransport()
        self.protocol.makeConnection(self.transport)

    def ask(self, line: str) -> str:
        """
        Send one line and return everything answered to it.
        """
        self.transport.clear()
        self.protocol.dataReceived(line.encode("utf-8") + b"\r\n")
        return self.transport.value().decode("utf-8")

    def test_text(self) -> None:
        """
        A plain command is answered with a table for a person, ended by an
        empty line.
        """
        lines = self.ask("show servers").split("\n")
        self.assertEqual(lines[0].split()[:3], ["NAME", "ENDPOINT", "STATE"])
        self.assertEqual([line.split()[0] for line in lines[1:3]], ["a", "b"])
        self.assertEqual(lines[3:], ["", ""])

    def test_json(self) -> None:
        """
        After the word C{json}, the answer is one JSON line.
        """
        answer = self.ask("json show servers")
        self.assertEqual(answer.count("\n"), 1)
        reply = json.loads(answer)
        self.assertEqual(reply["ok"], True)
        self.assertEqual(reply["command"], "show servers")
        self.assertEqual([s["name"] for s in reply["result"]["servers"]], ["a", "b"])

    def test_stat(self) -> None:
        """
        C{show stat} shows the stats page's snapshot: a line for the
        balancer, a row for each backend; in JSON, the whole snapshot.
        """
        lines = self.ask("show stat").split("\n")
        self.assertEqual(
            lines[0], "roundrobin: 0 open, 0 accepted, 0 refused, 0.0/s, up 0s"
        )
        self.assertEqual(lines[1].split()[:3], ["NAME", "STATE", "WEIGHT"])
        self.assertEqual(
            [line.split()[:2] for line in lines[2:4]], [["a", "UP"], ["b", "UP"]]
        )
        reply = json.loads(self.ask("json show stat"))
        self.assertEqual(reply["result"]["schema"], 1)
        self.assertEqual([b["name"] for b in reply["result"]["backends"]], ["a", "b"])

    def test_malformed(self) -> None:
        """
        A malformed or unknown command gets a one-line error and the
        connection stays usable.
        """
        self.assertEqual(
            self.ask("launch rockets"),
            "error: unknown command 'launch rockets'; try help\n\n",
        )
        self.assertEqual(
            self.ask("\xff\x00 show"),
            "error: unknown command '\xff\\x00 show'; try help\n\n",
        )
        self.assertFalse(self.transport.disconnecting)
        self.assertIn("tlbalance", self.ask("show version"))

    def test_jsonError(self) -> None:
        """
        Errors of a C{json} command are JSON too.
        """
        self.assertEqual(
            json.loads(self.ask("json set server zz state drain")),
            {"ok": False, "error": "no server called 'zz'"},
        )
        self.assertEqual(
            json.loads(self.ask("json set server a state off")),
            {
                "ok": False,
                "error": "unknown state 'off'; choose one of ready, drain, maint",
            },
        )

    def test_changeLoggedWithUID(self) -> None:
        """
        A state change is logged with the uid of the peer that asked.
        """
        observer = EventLoggingObserver()
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        self.assertEqual(
            self.ask("set server a state drain"), "server a: ready -> drain\n\n"
        )
        messages = [formatEvent(e) for e in observer]
        self.assertIn(
            "Backend a READY -> DRAIN: set by uid 4242 through the runtime API",
            messages,
        )
        self.assertIn("Control: uid 4242 asks: set server a state drain", messages)
        self.ask("json set server b weight 2")
        messages = [formatEvent(e) for e in observer]
        self.assertIn("Control: uid 4242 asks: set server b weight 2", messages)

    def test_tooLong(self) -> None:
        """
        A line too long to be a command gets an error, and the connection
        is closed: the rest of it cannot be told from the next command.
        """
        answer = self.ask("x" * (ControlProtocol.MAX_LENGTH + 10))
        self.assertEqual(answer, "error: line longer than 16384 bytes\n\n")
        self.assertTrue(self.transport.disconnecting)

    def test_forgetsClosedConnections(self) -> None:
        """
        The factory knows the open connections, to close them on stop.
        """
        self.assertEqual(self.factory.connections, {self.protocol})
        self.protocol.connectionLost()
        self.assertEqual(self.factory.connections, set())


class ClearStaleSocketTests(SynchronousTestCase):
    """
    The control socket's path is taken over only from a stale socket.
    """

    def test_notASocket(self) -> None:
        """
        A regular file at the path stops start-up, and is left alone.
        """
        directory = tempfile.mkdtemp()
        self.addCleanup(os.rmdir, directory)
        path = os.path.join(directory, "control.sock")
        with open(path, "w"):
            pass
        self.addCleanup(os.remove, path)
        error = self.assertRaises(StartupError, clearStaleSocket, path)
        self.assertEqual(str(error), f"--control: {path} exists and is not a socket")
        self.assertTrue(os.path.exists(path))

    def test_nothing(self) -> None:
        """
        A free path is fine.
        """
        clearStaleSocket(os.path.join(tempfile.gettempdir(), "no-such-dir", "x"))


class CtlTests(SynchronousTestCase):
    """
    C{tlbalancectl}'s failures: one line on standard error and a status.
    """

    def runCtl(self, *argv: str) -> tuple[int, str, str]:
        """
        Run C{tlbalancectl ARGV}: its status, standard output and error.
        """
        out, err = io.StringIO(), io.StringIO()
        status = ctl.main(list(argv), stdout=out, stderr=err)
        return status, out.getvalue(), err.getvalue()

    def test_noSocket(self) -> None:
        """
        A control path nobody serves exits 1, saying why in one line.
        """
        path = os.path.join(tempfile.gettempdir(), "tlbalance-no-such.sock")
        self.assertEqual(
            self.runCtl("--control", path, "show", "servers"),
            (1, "", f"tlbalancectl: {path}: No such file or directory\n"),
        )

    def test_badCommand(self) -> None:
        """
        A malformed command is refused before connecting.
        """
        self.assertEqual(
            self.runCtl(
                "--control", "/nonexistent", "set", "server", "a", "state", "x"
            ),
            (
                1,
                "",
                "tlbalancectl: unknown state 'x'; choose one of ready, drain, maint\n",
            ),
        )

    def test_noCommand(self) -> None:
        """
        No command at all is a usage error, status 2.
        """
        status, out, err = self.runCtl("--control", "/nonexistent")
        self.assertEqual((status, out), (2, ""))
        self.assertTrue(err.startswith("tlbalancectl: give a command: show servers;"))
