# -*- test-case-name: tests.integration.test_twistd -*-
"""
C{twistd tlbalance} as an operator runs it: a real process that relays,
stops gracefully on SIGTERM (no new connections, open ones drained up to
C{--drain-timeout}), and refuses bad options and files with a message that
names the problem.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Sequence, Tuple

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import connectProtocol, serverFromString
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from tests.integration._support import (
    LOOPBACK,
    TWISTD,
    PeerProcess,
    accepts,
    clientEndpoint,
    describeRun,
    freePort,
    runProgram,
    startPeer,
    temporaryDirectory,
    waitUntil,
)

pytestmark = pytest.mark.integration

DRAIN = 3.0

# twistd ends a SIGTERM'd run by re-raising the signal once it has stopped
# cleanly, so the shell sees "killed by SIGTERM"; 0 is fine too.
CLEAN_EXITS = (0, -signal.SIGTERM)


class _Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(b"echo:" + data)  # type: ignore[union-attr]


class _Conversation(Protocol):
    """
    A client that says something and waits for an answer.
    """

    def __init__(self) -> None:
        self.received = b""
        self.closed: Deferred[float] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed.callback(time.monotonic())

    async def say(self, data: bytes, timeout: float = 5.0) -> None:
        """
        Send C{data} and wait for the echo.
        """
        expected = self.received + b"echo:" + data
        self.transport.write(data)  # type: ignore[union-attr]
        await waitUntil(
            lambda: self.received == expected or self.closed.called,
            timeout,
            f"the echo of {data!r}",
        )
        if self.received != expected:
            raise AssertionError(f"got {self.received!r}, expected {expected!r}")


class TwistdTests(TestCase):
    """
    A C{twistd -n tlbalance} process in front of an echo server that runs
    in the test.
    """

    timeout = 40

    async def startTwistd(self, *extra: str) -> Tuple[PeerProcess, int]:
        """
        Start C{twistd -n tlbalance} on a free loopback port, balancing onto
        an echo server, with C{--drain-timeout DRAIN} unless C{extra} sets
        it.

        @return: the process and its port.
        """
        backend = await serverFromString(
            self.reactor(), f"tcp:0:interface={LOOPBACK}"
        ).listen(Factory.forProtocol(_Echo))
        self.addCleanup(backend.stopListening)
        port = freePort()
        directory = temporaryDirectory(self)
        arguments = [
            "--listen",
            f"tcp:{port}:interface={LOOPBACK}",
            "--backend",
            f"{LOOPBACK}:{backend.getHost().port}",
            *extra,
        ]
        if "--drain-timeout" not in extra:
            arguments += ["--drain-timeout", str(DRAIN)]
        process = startPeer(
            self,
            "twistd",
            [*TWISTD, "-n", "--pidfile=", "tlbalance"] + arguments,
            os.path.join(directory, "twistd.log"),
            cwd=directory,
        )
        await process.listening((LOOPBACK, port), timeout=20)
        return process, port

    def reactor(self) -> object:
        """
        The reactor the test runs in.
        """
        from twisted.internet import reactor

        return reactor

    async def connect(self, port: int) -> _Conversation:
        """
        Open a connection to the balancer.
        """
        conversation = _Conversation()
        await connectProtocol(clientEndpoint((LOOPBACK, port)), conversation)
        return conversation

    async def test_relays(self) -> None:
        """
        A client's bytes reach the backend and its answer comes back.
        """
        process, port = await self.startTwistd()
        conversation = await self.connect(port)
        await conversation.say(b"ping")
        conversation.transport.loseConnection()  # type: ignore[union-attr]
        await conversation.closed

    async def test_sigtermDrains(self) -> None:
        """
        After SIGTERM, new connections are refused at once, the connection
        already open keeps working until its client closes it, and the
        process then exits cleanly without waiting for the drain timeout.
        """
        process, port = await self.startTwistd()
        slow = await self.connect(port)
        await slow.say(b"hello")
        signalled = time.monotonic()
        process.signal(signal.SIGTERM)
        await waitUntil(
            lambda: not accepts((LOOPBACK, port)), 2.0, "the listener closing"
        )
        await slow.say(b"still there")
        self.assertTrue(process.running(), process.output())
        slow.transport.loseConnection()  # type: ignore[union-attr]
        await slow.closed
        code = await process.exited(DRAIN + 5)
        self.assertIn(code, CLEAN_EXITS, process.output())
        self.assertLess(time.monotonic() - signalled, DRAIN, process.output())

    async def test_drainTimeoutClosesStragglers(self) -> None:
        """
        A connection still open when C{--drain-timeout} runs out is closed
        then, and the process exits cleanly soon after.
        """
        process, port = await self.startTwistd("--drain-timeout", "1")
        idle = await self.connect(port)
        await idle.say(b"hello")
        signalled = time.monotonic()
        process.signal(signal.SIGTERM)
        closedAt = await idle.closed
        self.assertGreaterEqual(closedAt - signalled, 0.8, process.output())
        code = await process.exited(5)
        self.assertIn(code, CLEAN_EXITS, process.output())
        self.assertLess(time.monotonic() - signalled, 1 + 3, process.output())


class TwistdRefusesBadConfigurationTests(TestCase):
    """
    Mistakes stop C{twistd tlbalance} before it starts, with a message.
    """

    timeout = 40

    async def runTwistd(self, arguments: Sequence[str]) -> Tuple[int, str]:
        """
        Run C{twistd -n tlbalance ARGUMENTS} to completion.

        @return: the exit code and all output.
        """
        directory = temporaryDirectory(self)
        result = await runProgram(
            [*TWISTD, "-n", "--pidfile=", "tlbalance"] + list(arguments),
            cwd=directory,
        )
        self.lastRun = describeRun(result)
        return result.returncode, result.stdout + result.stderr

    async def test_unknownFlag(self) -> None:
        """
        An option that does not exist is named in the error.
        """
        code, output = await self.runTwistd(
            ["--listen", "tcp:0", "--backend", "127.0.0.1:1", "--bogus-flag"]
        )
        self.assertNotEqual(code, 0, self.lastRun)
        self.assertIn("bogus-flag", output, self.lastRun)

    async def test_badValue(self) -> None:
        """
        A value out of range is refused, naming the option.
        """
        code, output = await self.runTwistd(
            ["--listen", "tcp:0", "--backend", "127.0.0.1:1", "--retries", "99"]
        )
        self.assertNotEqual(code, 0, self.lastRun)
        self.assertIn("--retries", output, self.lastRun)

    async def writeConfig(self, text: str) -> str:
        """
        Write a configuration file holding C{text}.
        """
        path = os.path.join(temporaryDirectory(self), "tlbalance.toml")
        with open(path, "w") as f:
            f.write(text)
        return path

    async def test_badSettingInFile(self) -> None:
        """
        A file setting with a bad value is refused, naming the setting.
        """
        path = await self.writeConfig(
            'listen = ["tcp:0"]\nalgorithm = "fastest"\n'
            '[[backend]]\nendpoint = "127.0.0.1:1"\n'
        )
        code, output = await self.runTwistd(["--config", path])
        self.assertNotEqual(code, 0, self.lastRun)
        self.assertIn("algorithm", output, self.lastRun)
        self.assertIn("fastest", output, self.lastRun)

    async def test_brokenFile(self) -> None:
        """
        A file that is not TOML is refused, naming the file.
        """
        path = await self.writeConfig("listen = [tcp:0\n")
        code, output = await self.runTwistd(["--config", path])
        self.assertNotEqual(code, 0, self.lastRun)
        self.assertIn(path, output, self.lastRun)

    async def test_missingFile(self) -> None:
        """
        A file that does not exist is refused, naming the file.
        """
        path = os.path.join(temporaryDirectory(self), "absent.toml")
        code, output = await self.runTwistd(["--config", path])
        self.assertNotEqual(code, 0, self.lastRun)
        self.assertIn(path, output, self.lastRun)
