# -*- test-case-name: tests.integration.test_twistd -*-
"""
C{twistd tlbalance} as an operator runs it: a real process that relays,
stops gracefully on SIGTERM (no new connections, open ones drained up to
C{--drain-timeout}), and refuses bad options, files and listen addresses
with one line per problem.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Sequence, Tuple

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import connectProtocol, serverFromString
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.integration._support import (
    LOOPBACK,
    TWISTD,
    PeerProcess,
    accepts,
    clientEndpoint,
    describeRun,
    freePort,
    startPeer,
    temporaryDirectory,
    waitUntil,
)
from tlsuite import __version__

pytestmark = pytest.mark.integration

#: The twistd script installed next to the interpreter running the tests,
#: as an operator runs it.
TWISTD_SCRIPT = os.path.join(os.path.dirname(sys.executable), "twistd")

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


class TwistdStartupErrorTests(SynchronousTestCase):
    """
    C{twistd -n tlbalance} as an operator runs it (the real C{twistd}
    script): every mistake in the command line, the configuration file or
    at start-up ends it with one line per problem on standard error, each
    naming the problem and what to do, and exit status 1, without the usage
    text or a traceback; C{--help} and C{--version} answer.
    """

    def setUp(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="tli-")
        self.addCleanup(shutil.rmtree, self.directory, True)

    def runTwistd(
        self, arguments: Sequence[str], twistdOptions: Sequence[str] = ("-n",)
    ) -> subprocess.CompletedProcess[str]:
        """
        Run C{twistd TWISTDOPTIONS tlbalance ARGUMENTS} in the test's
        directory to completion.
        """
        return subprocess.run(
            [TWISTD_SCRIPT, *twistdOptions, "tlbalance", *arguments],
            cwd=self.directory,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=60,
        )

    def writeFile(self, name: str, text: str, mode: int = 0o600) -> str:
        """
        A file in the test's directory holding C{text}, with C{mode}.
        """
        path = os.path.join(self.directory, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(path, mode)
        return path

    def assertErrorLines(
        self, result: subprocess.CompletedProcess[str], expected: Sequence[str]
    ) -> None:
        """
        The run ended with exit status 1 and standard error holds exactly
        one C{twistd tlbalance: PROBLEM} line per C{expected} problem, with
        no usage text or traceback anywhere.
        """
        described = describeRun(result)
        self.assertEqual(result.returncode, 1, described)
        self.assertEqual(
            result.stderr.splitlines(),
            [f"twistd tlbalance: {line}" for line in expected],
            described,
        )
        for noise in ["Usage:", "Traceback", "--listen="]:
            self.assertNotIn(noise, result.stdout + result.stderr, described)

    def assertOneErrorLine(
        self, result: subprocess.CompletedProcess[str], start: str, *parts: str
    ) -> None:
        """
        Like L{assertErrorLines} for one problem whose line starts with
        C{start} and holds each of C{parts} (for Twisted's and OpenSSL's
        own words, which are theirs to change).
        """
        described = describeRun(result)
        self.assertEqual(result.returncode, 1, described)
        lines = result.stderr.splitlines()
        self.assertEqual(len(lines), 1, described)
        self.assertTrue(lines[0].startswith(f"twistd tlbalance: {start}"), described)
        for part in parts:
            self.assertIn(part, lines[0], described)
        for noise in ["Usage:", "Traceback", "--listen="]:
            self.assertNotIn(noise, result.stdout + result.stderr, described)

    def test_unknownOption(self) -> None:
        """
        An option that does not exist is named, pointing at C{--help}.
        """
        result = self.runTwistd(
            ["--listen", "tcp:0", "--backend", "127.0.0.1:1", "--bogus-flag"]
        )
        self.assertErrorLines(
            result,
            [
                "option --bogus-flag not recognized (twistd tlbalance --help "
                "lists the options)"
            ],
        )

    def test_badOptionValue(self) -> None:
        """
        A value out of range is refused, naming the option and the range.
        """
        result = self.runTwistd(
            ["--listen", "tcp:0", "--backend", "127.0.0.1:1", "--retries", "99"]
        )
        self.assertErrorLines(
            result, ['--retries: expected an integer from 0 to 10, got "99"']
        )

    def test_missingBackend(self) -> None:
        """
        A configuration without a backend says what to add.
        """
        result = self.runTwistd(["--listen", "tcp:0"])
        self.assertErrorLines(
            result,
            [
                "no backend: give --backend ENDPOINT (or [[backend]] tables in "
                "the configuration file)"
            ],
        )

    def test_fileWithThreeMistakes(self) -> None:
        """
        Every mistake of a configuration file is reported in one run, one
        line each, naming the key.
        """
        path = self.writeFile(
            "tlbalance.toml",
            'listen = ["tcp:0"]\n'
            'algorithm = "fastest"\n'
            "client-timout = 5\n"
            "[[backend]]\n"
            'endpoint = "127.0.0.1:1"\n'
            "weight = 300\n",
        )
        result = self.runTwistd(["--config", path])
        self.assertErrorLines(
            result,
            [
                "algorithm: expected one of roundrobin, leastconn, source, "
                'random, got "fastest"',
                "client-timout: unknown setting; did you mean client-timeout?",
                "backend[0].weight: expected an integer from 0 to 256, got 300",
            ],
        )

    def test_sessionMistakes(self) -> None:
        """
        The hosted session daemon's settings are checked with the rest: a
        plain listener and a secret file others can read are both reported,
        with the file's other mistake, in one run.
        """
        secret = self.writeFile("secret", "a-secret-of-enough-length\n", 0o644)
        path = self.writeFile(
            "tlbalance.toml",
            'listen = ["tcp:0"]\n'
            'backend = ["127.0.0.1:1"]\n'
            "retries = -1\n"
            'sessions = ["tcp:7100"]\n'
            f'secret-file = "{secret}"\n',
        )
        result = self.runTwistd(["--config", path])
        self.assertErrorLines(
            result,
            [
                "retries: expected an integer from 0 to 10, got -1",
                "sessions: 'tcp:7100': the session daemon would send its login "
                "(an MD5 challenge) and every session unencrypted; listen on "
                "unix:PATH or ssl:..., or pass sessions-insecure = true to allow "
                "it on a private network",
                f"secret-file: {secret}: the secret file is accessible by its "
                f"group or others (mode 0644); make it private with: chmod 600 "
                f"{secret}",
            ],
        )

    def test_brokenFile(self) -> None:
        """
        A file that is not TOML is named, with where it breaks.
        """
        path = self.writeFile("tlbalance.toml", "listen = [tcp:0\n")
        result = self.runTwistd(["--config", path])
        self.assertOneErrorLine(result, f"{path}: not valid TOML: ")

    def test_missingFile(self) -> None:
        """
        A file that does not exist is named.
        """
        path = os.path.join(self.directory, "absent.toml")
        result = self.runTwistd(["--config", path])
        self.assertErrorLines(
            result,
            [f"{path}: cannot read the configuration file: No such file or directory"],
        )

    def test_badProxyListenString(self) -> None:
        """
        A C{tlproxy:} listen string whose trusted peer is not an address
        is named, with the peer.
        """
        description = "tlproxy:trusted=bogus:tcp:0"
        result = self.runTwistd(["--listen", description, "--backend", "127.0.0.1:1"])
        self.assertOneErrorLine(
            result,
            f'--listen: "{description}" is not a valid server endpoint: ',
            "bogus",
        )

    def test_badSNIListenString(self) -> None:
        """
        A C{tlsni:} listen string whose certificate directory is missing is
        named, with the directory.
        """
        missing = os.path.join(self.directory, "no-certificates")
        description = f"tlsni:certdir={missing}:tcp:0"
        result = self.runTwistd(["--listen", description, "--backend", "127.0.0.1:1"])
        self.assertOneErrorLine(
            result,
            f'--listen: "{description}" is not a valid server endpoint: ',
            missing,
        )

    def test_portInUse(self) -> None:
        """
        A port another process holds is named, with the endpoint, as held
        by another process.
        """
        holder = socket.socket()
        self.addCleanup(holder.close)
        holder.bind((LOOPBACK, 0))
        holder.listen(1)
        endpoint = f"tcp:{holder.getsockname()[1]}:interface={LOOPBACK}"
        result = self.runTwistd(
            ["--listen", endpoint, "--backend", "127.0.0.1:1"],
            twistdOptions=["-n", "--pidfile", "twistd.pid"],
        )
        self.assertErrorLines(
            result,
            [
                f"cannot listen on {endpoint}: the address is already in use: "
                "another process holds it (stop that process, or choose "
                "another address)"
            ],
        )
        self.assertFalse(os.path.exists(os.path.join(self.directory, "twistd.pid")))

    def test_version(self) -> None:
        """
        C{twistd tlbalance --version} prints the suite's version.
        """
        result = self.runTwistd(["--version"], twistdOptions=())
        self.assertEqual(
            (result.returncode, result.stdout, result.stderr),
            (0, f"tlbalance {__version__}\n", ""),
        )

    def test_help(self) -> None:
        """
        C{--help} still prints the usage text, naming the options.
        """
        result = self.runTwistd(["--help"], twistdOptions=())
        self.assertEqual(result.returncode, 0, describeRun(result))
        self.assertTrue(result.stdout.startswith("Usage:"), describeRun(result))
        for option in ["--listen", "--backend", "--config", "--version"]:
            self.assertIn(option, result.stdout)
