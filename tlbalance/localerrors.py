# -*- test-case-name: tests.unit.test_localerrors -*-
"""
The balancer running out of its own resources (file descriptors, memory,
socket buffers, local ports), told apart from a backend failing.

A connect that fails with C{EMFILE} says nothing about the backend, so it
must not mark the backend down. L{LocalErrors} counts such failures, logs
them at most once per interval, and pauses accepting on every listener for
a short, growing time, so that new clients wait in the listen queue instead
of being accepted with no descriptor left to reach a backend with.
"""

from __future__ import annotations

import errno
import os
from typing import Any, Callable, Dict, Optional, Tuple

from twisted.internet import error
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from tlbalance._loglevel import balancerLogger
from tlsuite._loglimit import LogLimiter

__all__ = ["ACCEPT_ERRNOS", "LOCAL_ERRNOS", "LocalErrors", "localErrno"]

log = balancerLogger("tlbalance.localerrors")

#: Errors of a connect attempt that come from the balancer's host, not from
#: the backend: out of descriptors (process, system), memory, socket
#: buffers, or local ports for that destination.
LOCAL_ERRNOS = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.EADDRNOTAVAIL}
)

#: The errors of C{accept} that mean the same: the client is still queued,
#: and accepting again at once fails again.
ACCEPT_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

#: The first pause of accepting, in seconds; it doubles while errors keep
#: coming, up to L{LONGEST_PAUSE}.
FIRST_PAUSE = 0.05
LONGEST_PAUSE = 1.0

#: Seconds between two log lines about local errors; the ones in between are
#: counted and the count given with the next line.
LOG_INTERVAL = 10.0

_ADVICE = {
    errno.EMFILE: "raise the open files limit (ulimit -n, LimitNOFILE=)",
    errno.ENFILE: "the whole system is out of file descriptors (fs.file-max)",
    errno.EADDRNOTAVAIL: (
        "no free local port for this backend (net.ipv4.ip_local_port_range)"
    ),
}


def localErrno(reason: Failure) -> Optional[int]:
    """
    The error number of C{reason} when it is one of L{LOCAL_ERRNOS}, else
    C{None}.

    Twisted reports a socket that could not be created as
    L{error.ConnectBindError} (C{"Couldn't bind: 24: Too many open
    files"}) and other connect errors as L{error.ConnectError} subclasses
    with the number in C{osError}; C{connectUNIX} raises the plain
    C{OSError}.
    """
    value = reason.value
    number: Any
    if isinstance(value, error.ConnectError):
        number = value.osError
    elif isinstance(value, OSError):
        number = value.errno
    else:
        return None
    return number if number in LOCAL_ERRNOS else None


def describeErrno(number: int) -> str:
    """
    C{EMFILE (Too many open files)}.
    """
    return f"{errno.errorcode.get(number, str(number))} ({os.strerror(number)})"


class _PausingSocket:
    """
    A listening socket whose C{accept} turns a resource error into "nothing
    to accept" after telling L{LocalErrors}, which pauses the port.

    Twisted's accept loop logs such an error and returns, and the socket,
    still readable, calls it again at once (C{ENFILE}, C{ENOMEM},
    C{ENOBUFS}); for C{EMFILE} it accepts and closes every queued client
    with a spare descriptor, one log line each. Pausing keeps them queued.
    Everything else is the real socket's.

    This relies on Twisted's loop (C{tcp.Port.doRead}) calling
    C{port.socket.accept} and ending quietly on C{EAGAIN}; the tests run
    that loop, so a Twisted change shows up as a failure.
    """

    def __init__(self, socket: Any, failed: Callable[[int], None]) -> None:
        self._socket = socket
        self._failed = failed

    def accept(self) -> Tuple[Any, Any]:
        try:
            accepted: Tuple[Any, Any] = self._socket.accept()
        except OSError as e:
            if e.errno not in ACCEPT_ERRNOS:
                raise
            self._failed(e.errno)
            raise BlockingIOError(errno.EAGAIN, "accepting is paused") from None
        return accepted

    def __getattr__(self, name: str) -> Any:
        return getattr(self._socket, name)


class LocalErrors:
    """
    Counts, logs and reacts to the balancer's own resource errors.

    @ivar connectErrors: backend connects that failed on this host.
    @ivar acceptErrors: accepts that failed for want of a resource.
    @ivar checkErrors: health checks that could not run for the same
        reasons (they count neither for nor against the backend).
    @ivar pauses: how many times accepting was paused.
    """

    def __init__(
        self,
        clock: IReactorTime,
        firstPause: float = FIRST_PAUSE,
        longestPause: float = LONGEST_PAUSE,
        logInterval: float = LOG_INTERVAL,
    ) -> None:
        self.clock = clock
        self.firstPause = firstPause
        self.longestPause = longestPause
        self.connectErrors = 0
        self.acceptErrors = 0
        self.checkErrors = 0
        self.pauses = 0
        self._ports: Dict[Any, str] = {}
        self._pause = firstPause
        self._lastError: Optional[float] = None
        self._resume: Optional[IDelayedCall] = None
        self._logLimit = LogLimiter(clock, logInterval)

    @property
    def paused(self) -> bool:
        """
        Whether accepting is paused now.
        """
        return self._resume is not None

    def watchPort(self, port: Any, description: str) -> None:
        """
        Pause C{port} with the others, and have its accept errors paused on
        rather than retried at once.

        @param port: a listening port; a C{FileDescriptor} one (TCP, unix,
            TLS over TCP, systemd) can be paused, anything else is left
            alone.
        @param description: the listener, for the log.
        """
        if not (hasattr(port, "stopReading") and hasattr(port, "startReading")):
            return
        socket = getattr(port, "socket", None)
        if socket is not None and not isinstance(socket, _PausingSocket):
            port.socket = _PausingSocket(
                socket, lambda number: self.acceptFailed(number, description)
            )
        self._ports[port] = description
        if self.paused:
            port.stopReading()

    def unwatchPort(self, port: Any) -> None:
        """
        Forget C{port} (it stops listening): it is not resumed any more.
        """
        self._ports.pop(port, None)

    def connectFailed(self, number: int, backend: str, client: str) -> None:
        """
        A connect to C{backend} for C{client} failed with a local error: the
        client is being closed.
        """
        self.connectErrors += 1
        self._report(
            number,
            f"Connect to {backend} for {client} failed on this host",
            "the client is closed and the backend stays up",
            backend=backend,
            client=client,
        )

    def acceptFailed(self, number: int, listener: str) -> None:
        """
        Accepting on C{listener} failed with a local error: the client stays
        queued.
        """
        self.acceptErrors += 1
        self._report(
            number,
            f"Accepting on {listener} failed",
            "clients wait in the listen queue",
            listener=listener,
        )

    def checkFailed(self, number: int, backend: str) -> None:
        """
        A health check of C{backend} could not connect for a local reason:
        it counts neither for nor against the backend.
        """
        self.checkErrors += 1
        self._report(
            number,
            f"Health check of {backend} could not run",
            "it counts neither for nor against the backend",
            backend=backend,
        )

    def stop(self) -> None:
        """
        Cancel the pending resume, leaving no timer behind.
        """
        if self._resume is not None:
            if self._resume.active():
                self._resume.cancel()
            self._resume = None

    def _report(self, number: int, what: str, outcome: str, **fields: Any) -> None:
        pause = self._pauseAccepting()
        unlogged = self._logLimit.allow()
        if unlogged is None:
            return
        parts = [f"{what}: {describeErrno(number)}; {outcome}"]
        advice = _ADVICE.get(number)
        if advice is not None:
            parts.append(advice)
        parts.append(f"accepting paused for {pause:.2f}s")
        if unlogged:
            parts.append(f"{unlogged} more local error(s) since the last message")
        # One field in the format string, as in the relay's log lines; the
        # parts stay in the event for structured observers.
        log.warn(
            "{problem}",
            problem="; ".join(parts),
            errno=number,
            pause=pause,
            unlogged=unlogged,
            **fields,
        )

    def _pauseAccepting(self) -> float:
        """
        Pause every watched port, for longer while errors keep coming.

        @return: the seconds until accepting resumes.
        """
        now = self.clock.seconds()
        quiet = self._lastError is None or now - self._lastError > self.longestPause
        self._lastError = now
        if self._resume is not None:
            return max(0.0, self._resume.getTime() - now)
        if quiet:
            self._pause = self.firstPause
        else:
            self._pause = min(self._pause * 2, self.longestPause)
        self.pauses += 1
        for port in list(self._ports):
            port.stopReading()
        self._resume = self.clock.callLater(self._pause, self._resumeAccepting)
        return self._pause

    def _resumeAccepting(self) -> None:
        self._resume = None
        for port in list(self._ports):
            if getattr(port, "connected", True) and not getattr(
                port, "disconnecting", False
            ):
                port.startReading()
