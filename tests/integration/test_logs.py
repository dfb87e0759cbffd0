# -*- test-case-name: tests.integration.test_logs -*-
"""
What C{twistd tlbalance} and C{twist tlbalance} write to their logs, read
as an operator reads it: a real process in front of a real backend, with
health checks every tenth of a second.

Under twistd a backend that keeps failing its checks says so once, when its
state changes, and debug lines appear only with C{--log-level debug}; under
C{twist --log-format=json} the per-connection event has typed fields.
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any, Dict, List, Sequence, Tuple

import pytest
from twisted.internet.endpoints import connectProtocol, serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import TestCase

from tests.integration._support import (
    LOOPBACK,
    PYTHON,
    TWISTD,
    PeerProcess,
    clientEndpoint,
    freePort,
    sleep,
    startPeer,
    temporaryDirectory,
    waitUntil,
)
from tlbalance.endings import Ending

pytestmark = pytest.mark.integration

#: C{twist}, under this Python.
TWIST = [PYTHON, "-m", "twisted"]

#: Seconds between health checks: short, so a test sees many.
INTER = 0.1

#: Checks a test waits for before it reads the log: the state change comes
#: at the first, so the rest would each have logged a line before.
CHECKS = 15


class _CheckedBackend(Protocol):
    """
    Answers a health check request with the factory's current status line
    and closes, counting the checks.
    """

    factory: _CheckedBackendFactory

    def connectionMade(self) -> None:
        self.factory.checks += 1

    def dataReceived(self, data: bytes) -> None:
        status = self.factory.status
        self.transport.write(  # type: ignore[union-attr]
            f"HTTP/1.0 {status}\r\nContent-Length: 0\r\n\r\n".encode("ascii")
        )
        self.transport.loseConnection()  # type: ignore[union-attr]


class _CheckedBackendFactory(Factory):
    protocol = _CheckedBackend
    noisy = False

    def __init__(self, status: str) -> None:
        self.status = status
        self.checks = 0
        self.port = 0


class _Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(b"echo:" + data)  # type: ignore[union-attr]


class _Client(Protocol):
    """
    Sends a line, keeps what comes back, and notes when it is closed.
    """

    def __init__(self) -> None:
        self.received = b""
        self.closed = False
        self.port = 0

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: object = None) -> None:
        self.closed = True


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


async def _listen(factory: Factory) -> IListeningPort:
    port: IListeningPort = await serverFromString(
        _reactor(), f"tcp:0:interface={LOOPBACK}"
    ).listen(factory)
    return port


def jsonEvents(text: str) -> List[Dict[str, Any]]:
    """
    The events of a C{twist --log-format=json} log: one JSON object per
    record, each record started by an ASCII record separator. A record the
    process is still writing is left out.
    """
    events = []
    for record in text.split("\x1e"):
        record = record.strip()
        if not record:
            continue
        try:
            events.append(json.loads(record))
        except ValueError:
            continue
    return events


class TwistdLogLevelTests(TestCase):
    """
    C{twistd -n tlbalance} in front of a backend whose health check fails
    with HTTP 503 every L{INTER} seconds.
    """

    timeout = 60

    async def startTwistd(
        self, *extra: str
    ) -> Tuple[PeerProcess, _CheckedBackendFactory]:
        """
        Start twistd over one failing backend (C{--check-fall 1}, C{--rise
        1}) and wait until L{CHECKS} checks have reached it.
        """
        backend = _CheckedBackendFactory("503 Service Unavailable")
        port = await _listen(backend)
        self.addCleanup(port.stopListening)
        backend.port = port.getHost().port
        listen = freePort()
        directory = temporaryDirectory(self)
        process = startPeer(
            self,
            "twistd",
            [
                *TWISTD,
                "-n",
                "--pidfile=",
                "tlbalance",
                "--listen",
                f"tcp:{listen}:interface={LOOPBACK}",
                "--backend",
                f"{LOOPBACK}:{port.getHost().port}",
                "--check",
                "http GET /health 200",
                "--check-inter",
                str(INTER),
                "--check-fall",
                "1",
                "--check-rise",
                "1",
                "--drain-timeout",
                "1",
                *extra,
            ],
            os.path.join(directory, "twistd.log"),
            cwd=directory,
        )
        await process.listening((LOOPBACK, listen), timeout=20)
        await waitUntil(lambda: backend.checks >= CHECKS, 20, f"{CHECKS} health checks")
        return process, backend

    async def comeBack(
        self, process: PeerProcess, backend: _CheckedBackendFactory
    ) -> None:
        """
        Let the backend pass its checks and wait for the balancer to say it
        is up, then for L{CHECKS} more checks.
        """
        backend.status = "200 OK"
        await waitUntil(
            lambda: "DOWN -> UP" in process.output(), 10, "the backend coming back"
        )
        passed = backend.checks
        await waitUntil(
            lambda: backend.checks >= passed + CHECKS, 20, f"{CHECKS} more checks"
        )

    async def test_downBackendLogsItsStateChangeOnce(self) -> None:
        """
        By default a backend failing check after check logs one line when
        it goes down and one when it comes back; no debug line is written.
        """
        process, backend = await self.startTwistd()
        await self.comeBack(process, backend)
        output = process.output()
        self.assertEqual(output.count("UP -> DOWN"), 1, output)
        self.assertEqual(output.count("DOWN -> UP"), 1, output)
        self.assertIn("HTTP status 503, expected 200", output)
        self.assertNotIn("#debug]", output)

    async def test_debugWhenAsked(self) -> None:
        """
        With C{--log-level debug}, the failing check is logged too, once
        when it starts failing and once when it passes again, not once per
        check.
        """
        process, backend = await self.startTwistd("--log-level", "debug")
        await self.comeBack(process, backend)
        output = process.output()
        lines = [
            line.split("] ", 1)[1] for line in output.splitlines() if "#debug]" in line
        ]
        name = f"{LOOPBACK}:{backend.port}"
        self.assertEqual(len(lines), 2, output)
        self.assertEqual(
            lines[0],
            f"Health check of {name} failed: HTTP status 503, expected 200",
        )
        self.assertTrue(
            lines[1].startswith(f"Health check of {name} passes again after "),
            lines[1],
        )
        self.assertTrue(lines[1].endswith(" failed check(s): HTTP status 200"))
        self.assertEqual(output.count("UP -> DOWN"), 1, output)

    async def test_badLogLevel(self) -> None:
        """
        A log level that does not exist stops the start with a message that
        names the option and the choices.
        """
        directory = temporaryDirectory(self)
        process = startPeer(
            self,
            "twistd",
            [
                *TWISTD,
                "-n",
                "--pidfile=",
                "tlbalance",
                "--listen",
                f"tcp:0:interface={LOOPBACK}",
                "--backend",
                f"{LOOPBACK}:1",
                "--log-level",
                "chatty",
            ],
            os.path.join(directory, "twistd.log"),
            cwd=directory,
        )
        code = await process.exited(20)
        output = process.output()
        self.assertNotEqual(code, 0, output)
        self.assertIn("--log-level", output)
        self.assertIn("debug, info, warn, error, critical", output)


class TwistJSONLogTests(TestCase):
    """
    C{twist --log-format=json tlbalance} in front of a real echo backend
    that a test can stop.
    """

    timeout = 60

    async def startTwist(self) -> Tuple[PeerProcess, IListeningPort, int]:
        """
        Start twist over one echo backend with a TCP check every L{INTER}
        seconds.

        @return: the process, the backend's port and the balancer's port.
        """
        backend = await _listen(Factory.forProtocol(_Echo))
        self.addCleanup(self.stopListening, backend)
        listen = freePort()
        directory = temporaryDirectory(self)
        process = startPeer(
            self,
            "twist",
            [
                *TWIST,
                "--log-format=json",
                "tlbalance",
                "--listen",
                f"tcp:{listen}:interface={LOOPBACK}",
                "--backend",
                f"{LOOPBACK}:{backend.getHost().port}",
                "--check",
                "tcp",
                "--check-inter",
                str(INTER),
                "--check-fall",
                "1",
                "--drain-timeout",
                "1",
            ],
            os.path.join(directory, "twist.log"),
            cwd=directory,
        )
        await process.listening((LOOPBACK, listen), timeout=20)
        return process, backend, listen

    async def stopListening(self, port: IListeningPort) -> None:
        """
        Stop C{port} unless the test did.
        """
        if port.connected:  # type: ignore[attr-defined]
            await port.stopListening()

    async def converse(self, port: int, data: bytes) -> _Client:
        """
        Connect to the balancer, send C{data}, wait for an answer or the
        close, then close.
        """
        client = _Client()
        await connectProtocol(clientEndpoint((LOOPBACK, port)), client)
        client.port = client.transport.getHost().port  # type: ignore[union-attr]
        client.transport.write(data)  # type: ignore[union-attr]
        await waitUntil(lambda: bool(client.received) or client.closed, 10, "an answer")
        client.transport.loseConnection()  # type: ignore[union-attr]
        await waitUntil(lambda: client.closed, 10, "the close")
        return client

    def connectionEvents(self, process: PeerProcess) -> List[Dict[str, Any]]:
        """
        The per-connection events in the JSON log so far.
        """
        return [
            e
            for e in jsonEvents(process.output())
            if e.get("log_namespace") == "tlbalance.relay" and "ending" in e
        ]

    async def conversationEvent(
        self, process: PeerProcess, port: int, data: bytes
    ) -> Tuple[_Client, Dict[str, Any]]:
        """
        Hold one conversation through the balancer (L{converse}) and wait
        for its event, told from others (L{PeerProcess.listening} opened a
        connection of its own) by the client's address.
        """
        client = await self.converse(port, data)
        address = f"{LOOPBACK}:{client.port}"

        def ours() -> List[Dict[str, Any]]:
            return [e for e in self.connectionEvents(process) if e["client"] == address]

        await waitUntil(lambda: bool(ours()), 10, "the connection's event")
        [event] = ours()
        return client, event

    def assertTyped(self, event: Dict[str, Any], types: Dict[str, Sequence[type]]):
        """
        Each field of C{event} named in C{types} holds a value of one of the
        given types (C{type(None)} for null); C{bool} is no number here.
        """
        for name, allowed in types.items():
            self.assertIn(name, event)
            self.assertIn(type(event[name]), allowed, f"{name}: {event[name]!r}")

    async def test_connectionEventIsTyped(self) -> None:
        """
        A relayed connection's event holds numbers as JSON numbers (seconds
        as floats), the backend's name, and an ending from the documented
        vocabulary with its code and no detail.
        """
        process, backend, port = await self.startTwist()
        client, event = await self.conversationEvent(process, port, b"ping")
        self.assertEqual(client.received, b"echo:ping")
        self.assertTyped(
            event,
            {
                "client": [str],
                "backend": [str],
                "bytesIn": [int],
                "bytesOut": [int],
                "connectTime": [float],
                "duration": [float],
                "attempts": [int],
                "ending": [str],
                "endingCode": [str],
                "endingDetail": [type(None)],
            },
        )
        self.assertEqual(event["backend"], f"{LOOPBACK}:{backend.getHost().port}")
        self.assertEqual((event["bytesIn"], event["bytesOut"]), (4, 9))
        self.assertEqual(event["attempts"], 1)
        self.assertTrue(0 <= event["connectTime"] <= event["duration"], event)
        ending = Ending(event["ending"])
        self.assertTrue(ending.normal, event)
        self.assertEqual(event["endingCode"], "--")
        self.assertTrue(event["client"].startswith(f"{LOOPBACK}:"), event)
        self.assertEqual(event["log_level"]["name"], "info")

    async def test_nothingConnectedIsNull(self) -> None:
        """
        With the only backend down, a client's event names no backend and
        no connect time: both are null, not C{"-"}; the ending says no
        backend was available, in the connect phase.
        """
        process, backend, port = await self.startTwist()
        await backend.stopListening()

        def downs() -> List[Dict[str, Any]]:
            return [
                e
                for e in jsonEvents(process.output())
                if e.get("log_namespace") == "tlbalance.backends"
                and e.get("new") == "DOWN"
            ]

        await waitUntil(lambda: bool(downs()), 10, "the backend going down")
        # The balancer resets a client it has no backend for, which can come
        # before the client's reactor sees the connection made (a connect
        # error): a plain socket, bound first, knows its address either way.
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as raw:
            raw.settimeout(10)
            raw.bind((LOOPBACK, 0))
            clientPort = raw.getsockname()[1]
            received = b""
            try:
                raw.connect((LOOPBACK, port))
                raw.sendall(b"ping")
                while chunk := raw.recv(4096):
                    received += chunk
            except ConnectionError:
                pass
        self.assertEqual(received, b"")
        address = f"{LOOPBACK}:{clientPort}"

        def ours() -> List[Dict[str, Any]]:
            return [e for e in self.connectionEvents(process) if e["client"] == address]

        await waitUntil(lambda: bool(ours()), 10, "the connection's event")
        [event] = ours()
        self.assertTyped(
            event,
            {
                "backend": [type(None)],
                "connectTime": [type(None)],
                "duration": [float],
                "attempts": [int],
                "endingDetail": [type(None)],
            },
        )
        self.assertEqual(event["ending"], Ending.NO_BACKEND.value)
        self.assertEqual(event["ending"], "no-backend/connect")
        self.assertEqual(event["endingCode"], "SC")
        self.assertEqual(event["attempts"], 0)
        # Checks kept failing meanwhile; the state change was said once.
        started = time.monotonic()
        await sleep(CHECKS * INTER)
        self.assertGreaterEqual(time.monotonic() - started, CHECKS * INTER)
        self.assertEqual(len(downs()), 1, process.output())
