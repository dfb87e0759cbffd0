"""
Tests for L{tlbalance.health}.
"""

from __future__ import annotations

import random
from typing import Any, Callable, List, Optional

from attrs import define, frozen
from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import (
    ConnectBindError,
    ConnectionLost,
    ConnectionRefusedError,
    DNSLookupError,
    NoRouteError,
)
from twisted.internet.error import TimeoutError as ConnectTimeoutError
from twisted.internet.interfaces import IProtocol, ITransport
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tlbalance import proxyprotocol
from tlbalance.backends import Backend
from tlbalance.config import HealthCheckConfig
from tlbalance.health import (
    HealthChecker,
    describeConnectFailure,
    hostHeaderFor,
    proxyPreamble,
)
from tlbalance.localerrors import LocalErrors


@frozen
class FakeCheckConfig:
    """
    Stands in for C{tlbalance.config.HealthCheckConfig}, with its attribute
    names and defaults.
    """

    kind: str = "tcp"
    method: str = "GET"
    path: str = "/"
    expectStatus: int = 200
    inter: float = 2.0
    rise: int = 2
    fall: int = 3
    timeout: Optional[float] = None


class MidpointRandom(random.Random):
    """
    A random source without jitter: the first check after half an interval,
    then exactly C{inter} apart.
    """

    def random(self) -> float:
        """
        Always the middle of [0, 1).
        """
        return 0.5

    def uniform(self, a: float, b: float) -> float:
        """
        Always the middle of [a, b].
        """
        return (a + b) / 2


@define
class ConnectAttempt:
    """
    One call of the fake C{connect}: what it was given and the L{Deferred}
    it returned.
    """

    factory: Factory
    preamble: Optional[Callable[[ITransport], bytes]]
    deferred: Deferred
    when: float
    cancelled: bool = False
    protocol: Optional[IProtocol] = None
    transport: Optional[StringTransport] = None


class FakeConnector:
    """
    The C{connect} callable a L{HealthChecker} uses, with the test deciding
    what happens to each attempt; behaves as
    L{tlbalance.tls.connectWithPreamble}: the preamble is the first bytes.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.attempts: List[ConnectAttempt] = []
        self.auto: Optional[str] = None

    def __call__(
        self, factory: Factory, preamble: Optional[Callable[[ITransport], bytes]]
    ) -> Deferred:
        def cancel(d: Deferred) -> None:
            attempt.cancelled = True

        attempt = ConnectAttempt(
            factory, preamble, Deferred(cancel), self.clock.seconds()
        )
        self.attempts.append(attempt)
        if self.auto == "refuse":
            self.refuse()
        elif self.auto == "accept":
            self.accept()
        return attempt.deferred

    @property
    def last(self) -> ConnectAttempt:
        """
        The most recent attempt.
        """
        return self.attempts[-1]

    def connect(self) -> StringTransport:
        """
        Connect the last attempt's protocol to a L{StringTransport}, writing
        the preamble first, without firing the attempt's L{Deferred}.
        """
        attempt = self.last
        transport = StringTransport(
            hostAddress=IPv4Address("TCP", "10.0.0.1", 40000),
            peerAddress=IPv4Address("TCP", "10.0.0.2", 8080),
        )
        if attempt.preamble is not None:
            transport.write(attempt.preamble(transport))
        protocol = attempt.factory.buildProtocol(transport.getPeer())
        assert protocol is not None
        protocol.makeConnection(transport)
        attempt.protocol = protocol
        attempt.transport = transport
        return transport

    def accept(self) -> StringTransport:
        """
        Connect the last attempt and fire its L{Deferred}.
        """
        transport = self.connect()
        self.last.deferred.callback(self.last.protocol)
        return transport

    def refuse(self) -> None:
        """
        Fail the last attempt as a refused connection.
        """
        self.last.deferred.errback(ConnectionRefusedError())


def makeBackend(clock: Clock, **kwargs: Any) -> Backend:
    """
    A backend reached at C{tcp:host=app.internal:port=8080}.
    """
    return Backend(
        name="app", endpoint="tcp:host=app.internal:port=8080", clock=clock, **kwargs
    )


class CheckerTestCase(SynchronousTestCase):
    """
    Building a checker with a fake clock, connector and backend.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.connector = FakeConnector(self.clock)
        self.backend = makeBackend(self.clock)

    def checker(
        self,
        check: Optional[FakeCheckConfig] = None,
        sendProxy: Optional[str] = None,
        random: Optional[random.Random] = None,
    ) -> HealthChecker:
        """
        A started checker of C{self.backend}; no jitter unless C{random} is
        given.
        """
        checker = HealthChecker(
            self.clock,
            self.backend,
            check or FakeCheckConfig(),
            self.connector,
            sendProxy=sendProxy,
            random=random or MidpointRandom(),
        )
        checker.startService()
        self.addCleanup(self.stopChecker, checker)
        return checker

    def stopChecker(self, checker: HealthChecker) -> None:
        """
        Stop C{checker} if a test left it running.
        """
        if checker.running:
            checker.stopService()


class TimingTests(CheckerTestCase):
    """
    When checks run, and how fast rise and fall move a backend.
    """

    def test_startsUp(self) -> None:
        """
        A checked backend starts up and takes connections before any check.
        """
        self.checker()
        self.assertTrue(self.backend.available())
        self.assertEqual(self.connector.attempts, [])

    def test_firstCheckWithinOneInterval(self) -> None:
        """
        The first check runs after a random part of one interval.
        """
        delays = []
        for seed in range(20):
            checker = self.checker(
                FakeCheckConfig(inter=3.0), random=random.Random(seed)
            )
            (call,) = self.clock.getDelayedCalls()
            delays.append(call.getTime() - self.clock.seconds())
            checker.stopService()
        self.assertTrue(all(0 <= d < 3.0 for d in delays), delays)
        self.assertGreater(len(set(delays)), 10)

    def test_jitter(self) -> None:
        """
        Checks run every C{inter} seconds give or take 10%, not in lockstep.
        """
        self.connector.auto = "refuse"
        self.checker(FakeCheckConfig(inter=2.0), random=random.Random(7))
        self.clock.pump([0.01] * 20000)
        times = [a.when for a in self.connector.attempts]
        gaps = [b - a for a, b in zip(times, times[1:])]
        self.assertGreater(len(gaps), 50)
        self.assertTrue(all(1.79 <= g <= 2.21 for g in gaps), gaps)
        self.assertGreater(max(gaps) - min(gaps), 0.2)

    def test_deadBackendGoesDown(self) -> None:
        """
        A refusing backend goes down at its C{fall}th failed check, within
        C{inter} x C{fall} seconds (plus jitter), with the reason.
        """
        self.connector.auto = "refuse"
        changes: List[Any] = []
        self.backend.addStateObserver(changes.append)
        self.checker(FakeCheckConfig(inter=2.0, fall=3), random=random.Random(3))
        while self.backend.healthy:
            self.clock.advance(0.01)
        self.assertEqual(len(self.connector.attempts), 3)
        self.assertLessEqual(self.clock.seconds(), 2.0 * 3 * 1.1)
        self.assertEqual([c.reason for c in changes], ["connection refused"])

    def test_notDownBeforeFall(self) -> None:
        """
        Fewer than C{fall} failures in a row leave the backend up.
        """
        self.checker(FakeCheckConfig(fall=3))
        for outcome in ["refuse", "refuse", "accept", "refuse", "refuse"]:
            self.clock.advance(2.0)
            getattr(self.connector, outcome)()
        self.assertTrue(self.backend.healthy)
        self.clock.advance(2.0)
        self.connector.refuse()
        self.assertFalse(self.backend.healthy)

    def test_returnsAfterRise(self) -> None:
        """
        A down backend comes back at its C{rise}th successful check in a row.
        """
        self.backend.markDown("was down")
        changes: List[Any] = []
        self.backend.addStateObserver(changes.append)
        self.checker(FakeCheckConfig(rise=2))
        self.clock.advance(1.0)
        self.connector.accept()
        self.assertFalse(self.backend.healthy)
        self.clock.advance(2.0)
        self.connector.refuse()
        self.clock.advance(2.0)
        self.connector.accept()
        self.assertFalse(self.backend.healthy)
        self.clock.advance(2.0)
        self.connector.accept()
        self.assertTrue(self.backend.healthy)
        self.assertEqual(len(changes), 1)
        self.assertIn("passed 2 times", changes[0].reason)

    def test_passiveDownCheckedBack(self) -> None:
        """
        A checked backend marked down by a failed connect is brought back by
        the checker after C{rise} successes, not by a timer.
        """
        self.backend.check = FakeCheckConfig()  # type: ignore[assignment]
        self.connector.auto = "accept"
        checker = self.checker(FakeCheckConfig(rise=2))
        self.clock.advance(1.0)
        self.backend.connectFailed("connection refused")
        self.assertFalse(self.backend.healthy)
        self.clock.advance(2.0)
        self.assertFalse(self.backend.healthy)
        self.clock.advance(2.0)
        self.assertTrue(self.backend.healthy)
        self.assertEqual(checker.lastResult.reason, "connected")  # type: ignore[union-attr]

    def test_noOverlap(self) -> None:
        """
        A slow check is never joined by a second one: the next check starts
        C{inter} after the previous one ended.
        """
        checker = self.checker(FakeCheckConfig(inter=2.0, timeout=10.0))
        self.clock.advance(1.0)
        self.assertTrue(checker.checking)
        self.clock.pump([0.5] * 18)
        self.assertEqual(len(self.connector.attempts), 1)
        self.clock.advance(1.0)
        self.assertFalse(checker.checking)
        self.assertEqual(len(self.connector.attempts), 1)
        self.clock.advance(2.0)
        self.assertEqual(len(self.connector.attempts), 2)
        self.assertEqual(self.connector.attempts[1].when, 13.0)


class TimeoutTests(CheckerTestCase):
    """
    Checks that take too long fail.
    """

    def test_connectTimeout(self) -> None:
        """
        A connect still pending after C{timeout} seconds is cancelled and the
        check fails with the timeout as the reason.
        """
        self.checker(FakeCheckConfig(timeout=1.5, fall=1))
        self.clock.advance(1.0)
        self.clock.advance(1.49)
        self.assertTrue(self.backend.healthy)
        self.assertFalse(self.connector.last.cancelled)
        self.clock.advance(0.01)
        self.assertTrue(self.connector.last.cancelled)
        self.assertFalse(self.backend.healthy)
        self.assertEqual(self.backend.snapshot()["state"], "DOWN")
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_timeoutDefaultsToInter(self) -> None:
        """
        Without a C{timeout}, a check may take up to C{inter} seconds.
        """
        checker = self.checker(FakeCheckConfig(inter=3.0, fall=1))
        self.clock.advance(1.5)
        self.clock.advance(2.99)
        self.assertTrue(self.backend.healthy)
        self.clock.advance(0.01)
        self.assertFalse(self.backend.healthy)
        self.assertEqual(checker.lastResult.reason, "timeout after 3.0s")  # type: ignore[union-attr]

    def test_responseTimeout(self) -> None:
        """
        An HTTP backend that accepts but never answers fails the check at the
        timeout, and the check connection is aborted.
        """
        checker = self.checker(FakeCheckConfig(kind="http", timeout=2.0, fall=1))
        self.clock.advance(1.0)
        transport = self.connector.accept()
        self.clock.advance(2.0)
        self.assertTrue(transport.disconnected)
        self.assertFalse(self.backend.healthy)
        self.assertEqual(checker.lastResult.reason, "timeout after 2.0s")  # type: ignore[union-attr]
        self.assertEqual(checker.lastResult.duration, 2.0)  # type: ignore[union-attr]


class LogTests(CheckerTestCase):
    """
    The log says when checks start failing, fail for another reason, and
    pass again; never once per check.
    """

    def setUp(self) -> None:
        super().setUp()
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def lines(self, namespace: str) -> List[str]:
        """
        The formatted events of C{namespace} so far, with their levels.
        """
        return [
            f"{e['log_level'].name}: {formatEvent(e)}"
            for e in self.events
            if e["log_namespace"] == namespace
        ]

    def runChecks(self, *outcomes: Callable[[], object]) -> None:
        """
        Let one check run per outcome, which decides it.
        """
        for outcome in outcomes:
            self.clock.advance(2.0 if self.connector.attempts else 1.0)
            outcome()

    def test_downBackendLogsOnce(self) -> None:
        """
        A backend that refuses check after check logs its first failed check
        (at debug level) and its state change (at info level), and nothing
        for the checks after.
        """
        checker = self.checker(FakeCheckConfig(fall=3))
        self.runChecks(*[self.connector.refuse] * 20)
        self.assertEqual(
            self.lines("tlbalance.health"),
            ["debug: Health check of app failed: connection refused"],
        )
        self.assertEqual(
            self.lines("tlbalance.backends"),
            ["info: Backend app UP -> DOWN: connection refused"],
        )
        self.assertEqual(checker.failedInARow, 20)
        self.assertEqual(checker.lastResult.reason, "connection refused")  # type: ignore[union-attr]

    def test_otherReason(self) -> None:
        """
        A failure for another reason than the one before is logged again.
        """
        self.checker(FakeCheckConfig(fall=1, timeout=1.0))
        self.runChecks(self.connector.refuse, self.connector.refuse)
        self.clock.advance(2.0)
        self.clock.advance(1.0)
        self.runChecks(self.connector.refuse)
        self.assertEqual(
            self.lines("tlbalance.health"),
            [
                "debug: Health check of app failed: connection refused",
                "debug: Health check of app failed: timeout after 1.0s",
                "debug: Health check of app failed: connection refused",
            ],
        )

    def test_passesAgain(self) -> None:
        """
        The first check that passes after failures says so, with how many
        failed; the backend's return is logged once, when C{rise} is met.
        """
        checker = self.checker(FakeCheckConfig(fall=2, rise=2))
        self.runChecks(*[self.connector.refuse] * 5)
        self.runChecks(*[self.connector.accept] * 5)
        self.assertEqual(
            self.lines("tlbalance.health"),
            [
                "debug: Health check of app failed: connection refused",
                "debug: Health check of app passes again after 5 failed "
                "check(s): connected",
            ],
        )
        self.assertEqual(
            self.lines("tlbalance.backends"),
            [
                "info: Backend app UP -> DOWN: connection refused",
                "info: Backend app DOWN -> UP: health check passed 2 times in a "
                "row (connected)",
            ],
        )
        self.assertEqual(checker.failedInARow, 0)

    def test_passingChecksSayNothing(self) -> None:
        """
        A healthy backend's checks log nothing at all.
        """
        self.checker()
        self.runChecks(*[self.connector.accept] * 10)
        self.assertEqual(self.lines("tlbalance.health"), [])
        self.assertEqual(self.lines("tlbalance.backends"), [])

    def test_localErrorsNotCounted(self) -> None:
        """
        Checks that could not run for a local reason are logged by the
        balancer's L{LocalErrors}, and neither end nor extend a run of
        failures.
        """

        def emfile() -> None:
            self.connector.last.deferred.errback(
                ConnectBindError(24, "Too many open files")
            )

        checker = self.checker(FakeCheckConfig(fall=5))
        self.runChecks(self.connector.refuse, emfile, self.connector.refuse)
        self.assertEqual(checker.failedInARow, 2)
        self.assertEqual(
            self.lines("tlbalance.health"),
            ["debug: Health check of app failed: connection refused"],
        )


class TCPCheckTests(CheckerTestCase):
    """
    Plain TCP checks.
    """

    def test_connectedIsHealthy(self) -> None:
        """
        An established connection passes and is closed cleanly, having sent
        nothing.
        """
        checker = self.checker()
        self.clock.advance(1.0)
        transport = self.connector.accept()
        self.assertTrue(transport.disconnecting)
        self.assertFalse(transport.disconnected)
        self.assertEqual(transport.value(), b"")
        self.assertTrue(checker.lastResult.ok)  # type: ignore[union-attr]
        self.assertFalse(checker.checking)

    def test_connectRaises(self) -> None:
        """
        A C{connect} that raises counts as a failed check, and checking goes
        on.
        """

        def broken(factory: Factory, preamble: object) -> Deferred:
            raise DNSLookupError("no such host")

        checker = HealthChecker(
            self.clock,
            self.backend,
            FakeCheckConfig(fall=1),
            broken,
            random=MidpointRandom(),
        )
        checker.startService()
        self.clock.advance(1.0)
        self.assertFalse(self.backend.healthy)
        self.assertEqual(checker.lastResult.reason, "DNS lookup failed")  # type: ignore[union-attr]
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        checker.stopService()

    def test_failureReasons(self) -> None:
        """
        Connect failures are described in a few words.
        """
        self.assertEqual(
            describeConnectFailure(Failure(ConnectionRefusedError())),
            "connection refused",
        )
        cases = [
            (ConnectionRefusedError(), "connection refused"),
            (ConnectTimeoutError(), "connect timed out"),
            (NoRouteError(), "no route to host"),
            (DNSLookupError("nope"), "DNS lookup failed"),
            (ConnectionLost(), "connection closed while connecting"),
            (OSError("weird"), "connect failed: weird"),
            (OSError(), "connect failed"),
        ]
        for exception, expected in cases:
            self.assertEqual(describeConnectFailure(Failure(exception)), expected)


class LocalErrorTests(CheckerTestCase):
    """
    A check that cannot run because the balancer itself is out of file
    descriptors (or memory, buffers, local ports) says nothing about the
    backend: it counts neither for nor against it.
    """

    def emfile(self) -> None:
        self.connector.last.deferred.errback(
            ConnectBindError(24, "Too many open files")
        )

    def test_neverDown(self) -> None:
        """
        Any number of such checks leaves a healthy backend up; they are
        counted on the balancer's L{LocalErrors}, and checking goes on.
        """
        localErrors = LocalErrors(self.clock)
        checker = HealthChecker(
            self.clock,
            self.backend,
            FakeCheckConfig(fall=1),
            self.connector,
            random=MidpointRandom(),
            localErrors=localErrors,
        )
        checker.startService()
        self.addCleanup(checker.stopService)
        self.addCleanup(localErrors.stop)
        self.clock.advance(1.0)
        for _ in range(10):
            self.emfile()
            self.clock.advance(2.0)
        self.assertTrue(self.backend.healthy)
        self.assertEqual(len(self.connector.attempts), 11)
        self.assertEqual(localErrors.checkErrors, 10)
        self.assertTrue(checker.lastResult.local)  # type: ignore[union-attr]
        self.assertFalse(checker.lastResult.ok)  # type: ignore[union-attr]

    def test_runNotBroken(self) -> None:
        """
        Between two real failures, a check that could not run neither ends
        the run of failures nor adds to it.
        """
        self.checker(FakeCheckConfig(fall=3))
        self.clock.advance(1.0)
        for outcome in [self.connector.refuse, self.emfile, self.connector.refuse]:
            outcome()
            self.clock.advance(2.0)
        self.assertTrue(self.backend.healthy)
        self.emfile()
        self.clock.advance(2.0)
        self.connector.refuse()
        self.assertFalse(self.backend.healthy)

    def test_notUpEither(self) -> None:
        """
        Nor does it bring a down backend back.
        """
        self.backend.markDown("was down")
        self.checker(FakeCheckConfig(rise=1))
        self.clock.advance(1.0)
        self.emfile()
        self.assertFalse(self.backend.healthy)

    def test_raisedWhileConnecting(self) -> None:
        """
        A C{connect} that raises L{OSError} C{EMFILE} at once
        (C{connectUNIX} does) is classified the same way.
        """

        def noDescriptors(factory: Factory, preamble: object) -> Deferred:
            raise OSError(24, "Too many open files")

        checker = HealthChecker(
            self.clock,
            self.backend,
            FakeCheckConfig(fall=1),
            noDescriptors,
            random=MidpointRandom(),
        )
        checker.startService()
        self.clock.advance(1.0)
        self.assertTrue(self.backend.healthy)
        self.assertTrue(checker.lastResult.local)  # type: ignore[union-attr]
        checker.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])


class HTTPCheckTests(CheckerTestCase):
    """
    HTTP checks: the request sent and the status line read.
    """

    def runCheck(self, *chunks: bytes, **config: Any) -> HealthChecker:
        """
        Run one HTTP check whose backend answers with C{chunks} and then
        closes the connection.
        """
        config.setdefault("kind", "http")
        config.setdefault("fall", 1)
        checker = self.checker(FakeCheckConfig(**config))
        self.clock.advance(1.0)
        self.transport = self.connector.accept()
        protocol = self.connector.last.protocol
        assert protocol is not None
        for chunk in chunks:
            protocol.dataReceived(chunk)
        protocol.connectionLost(Failure(ConnectionRefusedError()))
        return checker

    def test_request(self) -> None:
        """
        The check sends an HTTP/1.0 request with the backend's host, the
        configured method and path, and asks to close.
        """
        self.runCheck(b"HTTP/1.1 200 OK\r\n", method="HEAD", path="/health?full=1")
        self.assertEqual(
            self.transport.value(),
            b"HEAD /health?full=1 HTTP/1.0\r\n"
            b"Host: app.internal:8080\r\n"
            b"User-Agent: tlbalance-check\r\n"
            b"Connection: close\r\n\r\n",
        )

    def test_expectedStatus(self) -> None:
        """
        The expected status passes, and the connection is closed after the
        status line.
        """
        checker = self.runCheck(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.assertTrue(checker.lastResult.ok)  # type: ignore[union-attr]
        self.assertEqual(checker.lastResult.reason, "HTTP status 200")  # type: ignore[union-attr]
        self.assertTrue(self.transport.disconnecting)
        self.assertTrue(self.backend.healthy)

    def test_otherExpectedStatus(self) -> None:
        """
        A configured C{expectStatus} other than 200 is what passes; a status
        line without a reason phrase is fine.
        """
        checker = self.runCheck(b"HTTP/1.0 204\r\n", expectStatus=204)
        self.assertTrue(checker.lastResult.ok)  # type: ignore[union-attr]
        checker = self.runCheck(b"HTTP/1.0 200 OK\r\n", expectStatus=204)
        self.assertEqual(
            checker.lastResult.reason,  # type: ignore[union-attr]
            "HTTP status 200, expected 204",
        )

    def test_wrongStatus(self) -> None:
        """
        Another status fails, with both statuses in the reason.
        """
        self.runCheck(b"HTTP/1.1 503 Service Unavailable\r\n\r\n")
        self.assertFalse(self.backend.healthy)
        self.assertEqual(self.lastDownReason, "HTTP status 503, expected 200")

    def setUp(self) -> None:
        super().setUp()
        self.lastDownReason = ""

        def remember(change: Any) -> None:
            if change.new == "DOWN":
                self.lastDownReason = change.reason

        self.backend.addStateObserver(remember)

    def test_statusLineInPieces(self) -> None:
        """
        A status line arriving a few bytes at a time is read whole.
        """
        checker = self.runCheck(b"HTT", b"P/1.1 2", b"00 OK\r", b"\n")
        self.assertTrue(checker.lastResult.ok)  # type: ignore[union-attr]

    def test_garbage(self) -> None:
        """
        A reply that is not HTTP fails with a clear reason.
        """
        self.runCheck(b"SSH-2.0-OpenSSH_9.2\r\n")
        self.assertIn("invalid HTTP status line", self.lastDownReason)
        self.assertIn("SSH-2.0", self.lastDownReason)

    def test_noResponse(self) -> None:
        """
        A connection closed without a byte fails.
        """
        self.runCheck()
        self.assertEqual(
            self.lastDownReason, "connection closed without an HTTP response"
        )

    def test_truncatedStatusLine(self) -> None:
        """
        A connection closed in the middle of the status line fails.
        """
        self.runCheck(b"HTTP/1.1 20")
        self.assertIn("middle of the HTTP status line", self.lastDownReason)

    def test_endlessLine(self) -> None:
        """
        A reply with no line end in its first 4 KiB fails without reading on.
        """
        checker = self.runCheck(b"HTTP/1.1 200 " + b"x" * 5000)
        self.assertIn("first 4096 bytes", self.lastDownReason)
        self.assertTrue(self.transport.disconnecting)
        self.assertFalse(checker.checking)

    def test_answerBeforeConnectFires(self) -> None:
        """
        A backend answering before the connect L{Deferred} fires is checked
        once.
        """
        checker = self.checker(FakeCheckConfig(kind="http"))
        self.clock.advance(1.0)
        self.connector.connect()
        protocol = self.connector.last.protocol
        assert protocol is not None
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\n")
        self.connector.last.deferred.callback(protocol)
        self.assertTrue(checker.lastResult.ok)  # type: ignore[union-attr]
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_hostHeader(self) -> None:
        """
        The C{Host} header names the endpoint's host, with the port unless it
        is the default, brackets around IPv6; unix backends get C{localhost}.
        """
        cases = {
            "tcp:host=app.internal:port=8080": "app.internal:8080",
            "tcp:app.internal:80": "app.internal",
            r"tcp6:host=\:\:1:port=8080": "[::1]:8080",
            "ssl:host=secure.example:port=443": "secure.example",
            "tls:secure.example:8443": "secure.example:8443",
            "unix:path=/run/app.sock": "localhost",
            "nonsense:::": "localhost",
        }
        for endpoint, expected in cases.items():
            self.assertEqual(hostHeaderFor(endpoint), expected, endpoint)

    def test_realConfig(self) -> None:
        """
        A checker built from a parsed C{HealthCheckConfig} sends its request
        and honours its C{fall}.
        """
        check = HealthCheckConfig.parse("http HEAD /ping 204", inter=5.0, fall=1)
        checker = HealthChecker(
            self.clock, self.backend, check, self.connector, random=MidpointRandom()
        )
        checker.startService()
        self.addCleanup(checker.stopService)
        self.clock.advance(2.5)
        transport = self.connector.accept()
        self.assertTrue(transport.value().startswith(b"HEAD /ping HTTP/1.0\r\n"))
        protocol = self.connector.last.protocol
        assert protocol is not None
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\n")
        self.assertEqual(self.lastDownReason, "HTTP status 200, expected 204")

    def test_nonASCIIPath(self) -> None:
        """
        A path that cannot be sent as-is is refused when the checker is
        built, not at the first check.
        """
        self.assertRaises(
            ValueError,
            HealthChecker,
            self.clock,
            self.backend,
            FakeCheckConfig(kind="http", path="/é"),
            self.connector,
        )


class ProxyPreambleTests(CheckerTestCase):
    """
    Checks of backends that require PROXY send a valid header first.
    """

    def firstBytes(self, sendProxy: Optional[str], kind: str = "http") -> bytes:
        """
        What a check with C{sendProxy} writes on its connection.
        """
        self.checker(FakeCheckConfig(kind=kind), sendProxy=sendProxy)
        self.clock.advance(1.0)
        return self.connector.accept().value()

    def test_v1(self) -> None:
        """
        Version 1 names the check connection's own addresses (never
        C{UNKNOWN} for TCP), then the request follows.
        """
        data = self.firstBytes("v1")
        self.assertTrue(
            data.startswith(
                b"PROXY TCP4 10.0.0.1 10.0.0.2 40000 8080\r\nGET / HTTP/1.0\r\n"
            ),
            data,
        )

    def test_v2Local(self) -> None:
        """
        Version 2 sends a LOCAL header, which a strict receiver accepts.
        """
        data = self.firstBytes("v2")
        local = proxyprotocol.V2_SIGNATURE + b"\x20\x00\x00\x00"
        self.assertEqual(data[:16], local)
        header, rest = proxyprotocol.parseHeader(data)
        self.assertTrue(header.local)
        self.assertTrue(rest.startswith(b"GET / HTTP/1.0\r\n"))

    def test_tcpCheckSendsHeaderToo(self) -> None:
        """
        A TCP check of a PROXY backend sends the header before closing.
        """
        self.assertEqual(
            self.firstBytes("v2", kind="tcp"), proxyprotocol.encodeV2Local()
        )

    def test_none(self) -> None:
        """
        Without PROXY the request is the first thing sent.
        """
        self.assertTrue(self.firstBytes(None).startswith(b"GET / HTTP/1.0\r\n"))

    def test_unixV1(self) -> None:
        """
        On a unix socket, where there are no addresses to name, v1 says
        C{UNKNOWN}.
        """
        preamble = proxyPreamble("v1")
        assert preamble is not None
        transport = StringTransport(
            hostAddress=UNIXAddress(None), peerAddress=UNIXAddress(b"/run/app.sock")
        )
        self.assertEqual(preamble(transport), b"PROXY UNKNOWN\r\n")

    def test_invalidVersion(self) -> None:
        """
        An unknown PROXY version is refused when the checker is built.
        """
        self.assertRaises(ValueError, proxyPreamble, "v3")


class StopTests(CheckerTestCase):
    """
    Stopping a checker leaves nothing behind.
    """

    def test_stopWhileWaiting(self) -> None:
        """
        Stopping between checks cancels the next one.
        """
        checker = self.checker()
        checker.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(100)
        self.assertEqual(self.connector.attempts, [])

    def test_stopWhileConnecting(self) -> None:
        """
        Stopping during a connect cancels it, its timeout too, and its
        outcome does not count.
        """
        checker = self.checker(FakeCheckConfig(fall=1))
        self.clock.advance(1.0)
        checker.stopService()
        self.assertTrue(self.connector.last.cancelled)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertTrue(self.backend.healthy)
        self.assertIsNone(checker.lastResult)
        self.assertFalse(checker.checking)

    def test_stopWhileReading(self) -> None:
        """
        Stopping while an HTTP check waits for its answer aborts the
        connection.
        """
        checker = self.checker(FakeCheckConfig(kind="http"))
        self.clock.advance(1.0)
        transport = self.connector.accept()
        checker.stopService()
        self.assertTrue(transport.disconnected)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_restart(self) -> None:
        """
        A stopped checker started again checks again.
        """
        self.connector.auto = "refuse"
        checker = self.checker(FakeCheckConfig(fall=1))
        checker.stopService()
        checker.startService()
        self.clock.advance(1.0)
        self.assertFalse(self.backend.healthy)

    def test_invalidConfig(self) -> None:
        """
        Unknown kinds and impossible rise/fall/inter are refused.
        """
        for config in [
            FakeCheckConfig(kind="ping"),
            FakeCheckConfig(rise=0),
            FakeCheckConfig(fall=0),
            FakeCheckConfig(inter=0),
        ]:
            self.assertRaises(
                ValueError, HealthChecker, self.clock, self.backend, config, fail
            )
