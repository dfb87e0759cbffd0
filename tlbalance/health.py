# -*- test-case-name: tests.unit.test_health -*-
"""
Active health checks: a TCP connect or an HTTP request to a backend every
C{inter} seconds, with jitter, marking it down after C{fall} failures and up
after C{rise} successes. Checks speak PROXY when the backend's traffic does.

The log says when a backend's checks start failing, fail differently, and
pass again, not once per check: a backend down for a day writes no line per
interval.
"""

from __future__ import annotations

import random as _random
import re
from typing import TYPE_CHECKING, Callable, Optional

from attrs import frozen
from twisted.application.service import Service
from twisted.internet import error
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IProtocol,
    IReactorTime,
    ITransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure

from tlbalance import proxyprotocol
from tlbalance._loglevel import balancerLogger
from tlbalance.backends import Backend
from tlbalance.localerrors import LocalErrors, describeErrno, localErrno
from tlsuite._twisted import parseEndpointString

if TYPE_CHECKING:
    from tlbalance.config import HealthCheckConfig

log = balancerLogger("tlbalance.health")

Preamble = Callable[[ITransport], bytes]
Connect = Callable[[Factory, Optional[Preamble]], "Deferred[IProtocol]"]

# A status line fits in far less; reading more only costs memory.
MAX_RESPONSE_BYTES = 4096

# Checks of many backends started together would keep hitting them (and the
# balancer) in the same instant: each interval is drawn within +/-10%.
JITTER = 0.1

_STATUS_LINE = re.compile(rb"HTTP/[0-9]\.[0-9] ([0-9]{3})(?: [^\r\n]*)?")

_DEFAULT_PORTS = {"tcp": "80", "tcp4": "80", "tcp6": "80", "ssl": "443", "tls": "443"}


@frozen
class CheckResult:
    """
    The outcome of one health check.

    @ivar ok: whether the check passed.
    @ivar reason: what happened, e.g. C{"connection refused"} or
        C{"HTTP status 200"}.
    @ivar started: the clock's time when the check began.
    @ivar duration: seconds the check took.
    @ivar local: the check could not run for a reason on the balancer's
        side (out of file descriptors, memory, local ports); it counts
        neither for nor against the backend.
    """

    ok: bool
    reason: str
    started: float
    duration: float
    local: bool = False


def hostHeaderFor(endpoint: str) -> str:
    """
    The C{Host} header value a check of C{endpoint} sends: the endpoint's
    host (and port, unless it is the scheme's default), or C{localhost} for
    unix sockets and endpoints it cannot read.

    @param endpoint: a client endpoint string, e.g. C{tcp:host=a:port=8080}.
    """
    try:
        args, kwargs = parseEndpointString(endpoint)
    except Exception:
        return "localhost"
    kind = str(args[0]).lower() if args else ""
    if kind not in _DEFAULT_PORTS:
        return "localhost"
    host = kwargs.get("host", args[1] if len(args) > 1 else "")
    port = kwargs.get("port", args[2] if len(args) > 2 else "")
    if not host:
        return "localhost"
    if ":" in host:
        host = f"[{host}]"
    if port and str(port) != _DEFAULT_PORTS[kind]:
        return f"{host}:{port}"
    return str(host)


def proxyPreamble(version: Optional[str]) -> Optional[Preamble]:
    """
    The PROXY header a health check sends first, built from the check's own
    connection.

    Version 1 names the check connection's real addresses (a backend may
    reject C{UNKNOWN}, which only unix sockets must use); version 2 sends
    LOCAL, which tells the backend the connection is the balancer's own.

    @param version: C{"v1"}, C{"v2"} or C{None}.
    @return: a callable of the raw transport, or C{None} for no header.
    """
    if version is None:
        return None
    if version == "v1":
        return _v1Preamble
    if version == "v2":
        return _v2Preamble
    raise ValueError(f"sendProxy must be None, 'v1' or 'v2', not {version!r}")


def _v1Preamble(transport: ITransport) -> bytes:
    source: IAddress = transport.getHost()
    destination: IAddress = transport.getPeer()
    return proxyprotocol.encodeV1(source, destination)


def _v2Preamble(transport: ITransport) -> bytes:
    return proxyprotocol.encodeV2Local()


def describeConnectFailure(reason: Failure) -> str:
    """
    A short reason for a failed check connection, for logs and stats.
    """
    if reason.check(error.ConnectionRefusedError):
        return "connection refused"
    if reason.check(error.TimeoutError):
        return "connect timed out"
    if reason.check(error.NoRouteError):
        return "no route to host"
    if reason.check(error.DNSLookupError):
        return "DNS lookup failed"
    if reason.check(error.ConnectionLost, error.ConnectionDone):
        return "connection closed while connecting"
    message = reason.getErrorMessage()
    return f"connect failed: {message}" if message else "connect failed"


class _CheckProtocol(Protocol):
    """
    The check's side of a TCP check connection: nothing to say.
    """

    def __init__(self, attempt: _CheckAttempt) -> None:
        self.attempt = attempt


class _HTTPCheckProtocol(_CheckProtocol):
    """
    Sends the check request and reads just the status line.
    """

    def __init__(self, attempt: _CheckAttempt, request: bytes, expect: int) -> None:
        super().__init__(attempt)
        self.request = request
        self.expect = expect
        self.received = b""

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        if self.attempt.finished:
            return
        self.received += data[: MAX_RESPONSE_BYTES + 1 - len(self.received)]
        line, newline, _ = self.received.partition(b"\n")
        if not newline:
            if len(self.received) > MAX_RESPONSE_BYTES:
                self._done(
                    False,
                    f"no HTTP status line in the first {MAX_RESPONSE_BYTES} bytes",
                )
            return
        line = line.rstrip(b"\r")
        match = _STATUS_LINE.fullmatch(line)
        if match is None:
            self._done(False, f"invalid HTTP status line {line[:80]!r}")
            return
        status = int(match.group(1))
        if status != self.expect:
            self._done(False, f"HTTP status {status}, expected {self.expect}")
        else:
            self._done(True, f"HTTP status {status}")

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.received:
            why = "connection closed in the middle of the HTTP status line"
        else:
            why = "connection closed without an HTTP response"
        self.attempt.finish(False, why)

    def _done(self, ok: bool, reason: str) -> None:
        self.attempt.finish(ok, reason)
        assert self.transport is not None
        self.transport.loseConnection()


class _CheckFactory(Factory):
    # A check every couple of seconds must not log two lines each time.
    noisy = False

    def __init__(self, attempt: _CheckAttempt) -> None:
        self.attempt = attempt

    def buildProtocol(self, addr: Optional[IAddress]) -> Protocol:
        return self.attempt.buildProtocol()


class _CheckAttempt:
    """
    One health check in flight: the connect, the HTTP exchange if any, and
    its timeout. Reports its outcome exactly once, unless cancelled.

    @ivar finished: the outcome is known (or the attempt was cancelled).
    """

    def __init__(
        self,
        checker: HealthChecker,
        clock: IReactorTime,
        timeout: float,
    ) -> None:
        self.checker = checker
        self.clock = clock
        self.timeout = timeout
        self.started = clock.seconds()
        self.finished = False
        self.protocol: Optional[IProtocol] = None
        self.connecting: Optional[Deferred[IProtocol]] = None
        self.timer: Optional[IDelayedCall] = None

    def buildProtocol(self) -> Protocol:
        request = self.checker.request
        if request is None:
            return _CheckProtocol(self)
        return _HTTPCheckProtocol(self, request, self.checker.check.expectStatus)

    def start(self, connect: Connect, preamble: Optional[Preamble]) -> None:
        self.timer = self.clock.callLater(self.timeout, self._timedOut)
        try:
            connecting = connect(_CheckFactory(self), preamble)
        except Exception:
            self._connectFailed(Failure())
            return
        self.connecting = connecting
        connecting.addCallbacks(self._connected, self._connectFailed)

    def _connected(self, protocol: IProtocol) -> None:
        self.connecting = None
        self.protocol = protocol
        if self.finished:
            self._close(abort=True)
        elif self.checker.request is None:
            self.finish(True, "connected")
            self._close(abort=False)

    def _connectFailed(self, reason: Failure) -> None:
        self.connecting = None
        if not self.finished:
            number = localErrno(reason)
            if number is not None:
                self.finish(False, f"local error: {describeErrno(number)}", number)
            else:
                self.finish(False, describeConnectFailure(reason))
        elif not reason.check(CancelledError):
            # Our own cancel is expected; anything else came too late to count.
            log.debug(
                "Late check connect failure for {backend}: {why}",
                backend=self.checker.backend.name,
                why=reason.getErrorMessage(),
            )

    def _timedOut(self) -> None:
        self.timer = None
        self.finish(False, f"timeout after {float(self.timeout)}s")
        self._close(abort=True)

    def cancel(self) -> None:
        """
        Give up without reporting an outcome (the checker is stopping).
        """
        self.finished = True
        self._stopTimer()
        self._close(abort=True)

    def finish(self, ok: bool, reason: str, localError: Optional[int] = None) -> None:
        """
        Report the outcome to the checker, the first time only.

        @param localError: the error number when the check could not run
            for a reason on the balancer's side.
        """
        if self.finished:
            return
        self.finished = True
        self._stopTimer()
        result = CheckResult(
            ok,
            reason,
            self.started,
            self.clock.seconds() - self.started,
            local=localError is not None,
        )
        if localError is not None:
            self.checker.localErrors.checkFailed(localError, self.checker.backend.name)
        self.checker._checkFinished(result)

    def _stopTimer(self) -> None:
        if self.timer is not None:
            if self.timer.active():
                self.timer.cancel()
            self.timer = None

    def _close(self, abort: bool) -> None:
        if self.connecting is not None:
            connecting, self.connecting = self.connecting, None
            connecting.cancel()
        transport = getattr(self.protocol, "transport", None)
        if transport is None:
            return
        if abort and hasattr(transport, "abortConnection"):
            transport.abortConnection()
        else:
            transport.loseConnection()


class HealthChecker(Service):
    """
    Checks one backend every C{inter} seconds and marks it down after
    C{fall} failures in a row, up after C{rise} successes in a row.

    The backend starts up (as in HAProxy); the first check runs after a
    random part of one interval so the checks of many backends spread out.
    The next check is timed from the end of the previous one, so two checks
    of one backend never overlap.

    @ivar backend: the L{Backend} checked.
    @ivar check: its L{HealthCheckConfig}.
    @ivar request: the HTTP request sent, or C{None} for a TCP check.
    @ivar lastResult: the last L{CheckResult}, or C{None} before the first.
    @ivar failedInARow: checks failed since the last one that passed
        (checks that could not run for a local reason left out).
    """

    def __init__(
        self,
        clock: IReactorTime,
        backend: Backend,
        check: HealthCheckConfig,
        connect: Connect,
        sendProxy: Optional[str] = None,
        random: Optional[_random.Random] = None,
        localErrors: Optional[LocalErrors] = None,
    ) -> None:
        """
        @param clock: times checks and timeouts.
        @param backend: the backend to check and mark.
        @param check: kind (C{"tcp"}, C{"http"}), method, path,
            expectStatus, inter, rise, fall, timeout.
        @param connect: called with a protocol factory and a preamble (or
            C{None}); returns a cancellable L{Deferred} firing with the
            connected protocol after writing C{preamble(rawTransport)}
            first. In production, the backend's
            L{tlbalance.relay.BackendConnector.connectWithPreamble}.
        @param sendProxy: C{"v1"}, C{"v2"} or C{None}: the backend's PROXY
            setting, so checks pass where traffic must carry the header.
        @param random: jitter source; a fresh L{random.Random} when not given.
        @param localErrors: where checks that could not run for a reason on
            the balancer's side (out of file descriptors, ...) are counted
            and logged: the balancer's, in production; a private one when
            not given.
        """
        if check.kind not in ("tcp", "http"):
            raise ValueError(
                f"health check kind must be tcp or http, not {check.kind!r}"
            )
        if check.inter <= 0 or check.rise < 1 or check.fall < 1:
            raise ValueError("health check needs inter > 0, rise >= 1 and fall >= 1")
        self.clock = clock
        self.backend = backend
        self.check = check
        self._connect = connect
        self._preamble = proxyPreamble(sendProxy)
        self._random = random if random is not None else _random.Random()
        self._ownLocalErrors = localErrors is None
        if localErrors is None:
            localErrors = LocalErrors(clock)
        self.localErrors = localErrors
        self.timeout: float = check.timeout or check.inter
        self.request: Optional[bytes] = None
        if check.kind == "http":
            self.request = self._buildRequest()
        self.lastResult: Optional[CheckResult] = None
        self.failedInARow = 0
        self._failingWith: Optional[str] = None
        self._successes = 0
        self._failures = 0
        self._nextCheck: Optional[IDelayedCall] = None
        self._attempt: Optional[_CheckAttempt] = None

    def _buildRequest(self) -> bytes:
        head = (
            f"{self.check.method} {self.check.path} HTTP/1.0\r\n"
            f"Host: {hostHeaderFor(self.backend.endpoint)}\r\n"
            "User-Agent: tlbalance-check\r\n"
            "Connection: close\r\n\r\n"
        )
        try:
            return head.encode("ascii")
        except UnicodeEncodeError:
            raise ValueError(
                f"health check method and path must be ASCII: {head.splitlines()[0]!r}"
            ) from None

    @property
    def checking(self) -> bool:
        """
        Whether a check is in flight now.
        """
        return self._attempt is not None

    def startService(self) -> None:
        """
        Start checking, after a random part of one interval.
        """
        super().startService()
        self._schedule(self._random.random() * self.check.inter)

    def stopService(self) -> None:
        """
        Stop checking: cancel the next check and abandon the one in flight,
        leaving no timer behind.
        """
        super().stopService()
        if self._nextCheck is not None:
            if self._nextCheck.active():
                self._nextCheck.cancel()
            self._nextCheck = None
        if self._attempt is not None:
            attempt, self._attempt = self._attempt, None
            attempt.cancel()
        if self._ownLocalErrors:
            self.localErrors.stop()

    def _schedule(self, delay: float) -> None:
        self._nextCheck = self.clock.callLater(delay, self._runCheck)

    def _interval(self) -> float:
        return self.check.inter * self._random.uniform(1 - JITTER, 1 + JITTER)

    def _runCheck(self) -> None:
        self._nextCheck = None
        attempt = _CheckAttempt(self, self.clock, self.timeout)
        self._attempt = attempt
        attempt.start(self._connect, self._preamble)

    def _checkFinished(self, result: CheckResult) -> None:
        self._attempt = None
        self.lastResult = result
        backend = self.backend
        if result.local:
            # Nothing was learnt about the backend: the runs stay as they are.
            if self.running:
                self._schedule(self._interval())
            return
        self._recordOutcome(result)
        # Only a run of results against the current state counts: a run
        # broken by the other result, or by passive marking, starts again.
        if result.ok:
            self._failures = 0
            if backend.healthy:
                self._successes = 0
            else:
                self._successes += 1
                if self._successes >= self.check.rise:
                    self._successes = 0
                    backend.markUp(
                        f"health check passed {self.check.rise} times in a row "
                        f"({result.reason})"
                    )
        else:
            self._successes = 0
            if not backend.healthy:
                self._failures = 0
            else:
                self._failures += 1
                if self._failures >= self.check.fall:
                    self._failures = 0
                    backend.markDown(result.reason)
        if self.running:
            self._schedule(self._interval())

    def _recordOutcome(self, result: CheckResult) -> None:
        """
        Count failures in a row, and log a check whose outcome differs from
        the one before: the first failure, a failure for another reason, the
        first pass after failures. The backend's own state changes (UP,
        DOWN) are logged by L{Backend} at info level; these lines are
        details, at debug level.
        """
        if result.ok:
            if self._failingWith is not None:
                log.debug(
                    "Health check of {backend} passes again after {failed} "
                    "failed check(s): {why}",
                    backend=self.backend.name,
                    failed=self.failedInARow,
                    why=result.reason,
                )
            self._failingWith = None
            self.failedInARow = 0
            return
        self.failedInARow += 1
        if result.reason != self._failingWith:
            self._failingWith = result.reason
            log.debug(
                "Health check of {backend} failed: {why}",
                backend=self.backend.name,
                why=result.reason,
            )
