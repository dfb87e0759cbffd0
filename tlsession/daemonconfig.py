# -*- test-case-name: tests.unit.test_daemonconfig -*-
"""
The session daemon's configuration (L{DaemonConfig}, checked when built:
private listen endpoints, a private secret file, sane limits) and the
daemon it describes (L{makeDaemonService}).

C{twistd tlsession} (L{tlsession.tap}) builds it from its command line;
C{twistd tlbalance --sessions} builds it to host the daemon inside the
balancer.
"""

from __future__ import annotations

import math
import os
import stat
from typing import Any, Iterable, Optional

from attrs import frozen

from tlsession.daemon import (
    DEFAULT_LOGIN_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_UNAUTHENTICATED_PER_ADDRESS,
    MAX_VALUE_BYTES_LIMIT,
    SessionDaemonService,
)
from tlsession.stores.memory import MemorySessionStore
from tlsuite._endpoints import EndpointStringError, checkServerEndpoint, endpointKind
from tlsuite._twisted import parseEndpointString

__all__ = [
    "MAX_SECRET_FILE_BYTES",
    "MIN_SECRET_LENGTH",
    "DaemonConfig",
    "DaemonConfigError",
    "checkListenEndpoint",
    "makeDaemonService",
    "readSecretFile",
]

#: A secret shorter than this is refused: PB's challenge/response is MD5.
MIN_SECRET_LENGTH = 16

#: Secret files are read up to this size.
MAX_SECRET_FILE_BYTES = 4096


class DaemonConfigError(ValueError):
    """
    The daemon cannot start with this configuration; the message says why
    and what to do, ready to show to the operator.
    """


def readSecretFile(path: str) -> bytes:
    """
    Read the shared secret, refusing files that would leak it.

    @param path: a file holding the secret; surrounding whitespace (the
        newline an editor adds) is stripped.
    @return: the secret.
    @raise DaemonConfigError: the file is missing, unreadable, not a regular
        file, accessible by its group or others, empty, too short or too
        long.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOCTTY", 0))
    except OSError as e:
        raise DaemonConfigError(
            f"{path}: cannot read the secret file: {e.strerror or e}"
        ) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise DaemonConfigError(f"{path}: the secret file is not a regular file")
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise DaemonConfigError(
                f"{path}: the secret file is accessible by its group or others "
                f"(mode {mode:04o}); make it private with: chmod 600 {path}"
            )
        with os.fdopen(os.dup(fd), "rb") as f:
            content = f.read(MAX_SECRET_FILE_BYTES + 1)
    finally:
        os.close(fd)
    if len(content) > MAX_SECRET_FILE_BYTES:
        raise DaemonConfigError(
            f"{path}: the secret file is over {MAX_SECRET_FILE_BYTES} bytes; it "
            "should hold one line"
        )
    secret = content.strip()
    if not secret:
        raise DaemonConfigError(f"{path}: the secret file is empty")
    if len(secret) < MIN_SECRET_LENGTH:
        raise DaemonConfigError(
            f"{path}: the secret is shorter than {MIN_SECRET_LENGTH} characters; "
            "make a strong one with: python3 -c 'import secrets; "
            f"print(secrets.token_urlsafe(32))' > {path}"
        )
    return secret


def checkListenEndpoint(
    description: str, insecure: bool = False, flag: str = "--insecure"
) -> str:
    """
    Check that a listen endpoint keeps the login and the sessions private.

    Unix sockets and TLS (C{ssl:}) are accepted; a unix socket without a
    C{mode} gets C{mode=600}, so only the daemon's user can connect (the
    default would be 0666). Anything else, such as C{tcp:}, carries PB's MD5
    login and every session in the clear and is refused unless C{insecure}.

    @param description: a server endpoint string.
    @param insecure: accept plain endpoints too.
    @param flag: the option that sets C{insecure}, for the message.
    @return: the endpoint string to listen on.
    @raise DaemonConfigError: naming the endpoint and C{flag}.
    """
    _, kwargs = parseEndpointString(description)
    kind = endpointKind(description)
    if kind == "unix":
        if "mode" not in kwargs:
            description += ":mode=600"
        return description
    if kind == "ssl":
        return description
    if kind == "systemd" and str(kwargs.get("domain", "")).upper() == "UNIX":
        return description
    if insecure:
        return description
    raise DaemonConfigError(
        f"{description!r}: the session daemon would send its login (an MD5 "
        "challenge) and every session unencrypted; listen on unix:PATH or "
        f"ssl:..., or pass {flag} to allow it on a private network"
    )


def _positive(label: str, value: float, integer: bool = False) -> Any:
    """
    Check a configured number is finite and above zero.
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (integer and not isinstance(value, int))
        or not math.isfinite(value)
        or value <= 0
    ):
        kind = "an integer" if integer else "a number"
        raise DaemonConfigError(f"{label}: expected {kind} > 0, got {value!r}")
    return value


@frozen
class DaemonConfig:
    """
    What the daemon needs to run, checked when built.

    @ivar listen: server endpoint strings, already passed through
        L{checkListenEndpoint}.
    @ivar secretFile: where the shared secret is (read at start).
    @ivar maxSessions: sessions kept before some are evicted (new sessions
        first, see L{tlsession.stores.memory.MemorySessionStore}).
    @ivar maxBytes: total session bytes kept before some are evicted.
    @ivar maxValueBytes: the largest value of one session.
    @ivar idleTimeout: default seconds of inactivity before a session ends.
    @ivar absoluteTimeout: seconds after creation when any session ends.
    @ivar insecure: plain TCP listeners were allowed.
    @ivar statsInterval: seconds between summary log lines; 0 turns them off.
    @ivar loginTimeout: seconds a new connection has to log in.
    @ivar maxConnections: connections served at once, logged in or not.
    @ivar maxUnauthenticated: connections that may be waiting to log in at
        once; C{None} for a tenth of C{maxConnections}
        (L{tlsession.daemon.defaultMaxUnauthenticated}).
    @ivar maxUnauthenticatedPerAddress: of those, from one client address
        (an IPv6 /64) on TCP and TLS listeners.
    """

    listen: tuple[str, ...]
    secretFile: str
    maxSessions: int = 100_000
    maxBytes: int = 256 * 2**20
    maxValueBytes: int = 65536
    idleTimeout: float = 1800.0
    absoluteTimeout: float = 86400.0
    insecure: bool = False
    statsInterval: float = 60.0
    loginTimeout: float = DEFAULT_LOGIN_TIMEOUT
    maxConnections: int = DEFAULT_MAX_CONNECTIONS
    maxUnauthenticated: Optional[int] = None
    maxUnauthenticatedPerAddress: int = DEFAULT_MAX_UNAUTHENTICATED_PER_ADDRESS

    def __attrs_post_init__(self) -> None:
        if not self.listen:
            raise DaemonConfigError(
                "no listen endpoint: give --listen ENDPOINT, e.g. "
                "unix:/run/tlsession/daemon.sock"
            )
        for description in self.listen:
            checkListenEndpoint(description, self.insecure)
        _positive("--max-sessions", self.maxSessions, integer=True)
        _positive("--max-bytes", self.maxBytes, integer=True)
        _positive("--max-value-bytes", self.maxValueBytes, integer=True)
        if self.maxValueBytes > MAX_VALUE_BYTES_LIMIT:
            raise DaemonConfigError(
                f"--max-value-bytes: at most {MAX_VALUE_BYTES_LIMIT} (Perspective "
                f"Broker refuses larger strings), got {self.maxValueBytes}"
            )
        if self.maxValueBytes > self.maxBytes:
            raise DaemonConfigError(
                f"--max-value-bytes ({self.maxValueBytes}) is over --max-bytes "
                f"({self.maxBytes}): one session could never be stored"
            )
        _positive("--idle-timeout", self.idleTimeout)
        _positive("--absolute-timeout", self.absoluteTimeout)
        if self.statsInterval != 0:
            _positive("--stats-interval", self.statsInterval)
        _positive("--login-timeout", self.loginTimeout)
        _positive("--max-connections", self.maxConnections, integer=True)
        if self.maxUnauthenticated is not None:
            _positive("--max-unauthenticated", self.maxUnauthenticated, integer=True)
            if self.maxUnauthenticated > self.maxConnections:
                raise DaemonConfigError(
                    f"--max-unauthenticated ({self.maxUnauthenticated}) is over "
                    f"--max-connections ({self.maxConnections})"
                )
        _positive(
            "--max-unauthenticated-per-address",
            self.maxUnauthenticatedPerAddress,
            integer=True,
        )

    @classmethod
    def build(
        cls, listen: Iterable[str], secretFile: str, **settings: Any
    ) -> DaemonConfig:
        """
        Check the endpoints (adding C{mode=600} to unix sockets) and the
        secret file, and build the configuration.

        @raise DaemonConfigError: naming the problem.
        """
        insecure = bool(settings.get("insecure", False))
        checked = tuple(checkListenEndpoint(d, insecure) for d in listen)
        for description in checked:
            _checkParses(description)
        secretFile = os.path.abspath(secretFile)
        readSecretFile(secretFile)
        return cls(checked, secretFile, **settings)


def _checkParses(description: str) -> None:
    """
    Refuse an endpoint string Twisted cannot parse, at start-up.
    """
    try:
        checkServerEndpoint(description)
    except EndpointStringError as e:
        raise DaemonConfigError(
            f"--listen: {e} (a server endpoint string, e.g. "
            "unix:/run/tlsession/daemon.sock or "
            "ssl:7100:privateKey=key.pem:certKey=cert.pem)"
        ) from None


def makeDaemonService(
    config: DaemonConfig, reactor: Optional[Any] = None, clock: Optional[Any] = None
) -> SessionDaemonService:
    """
    Build the daemon for C{config}, with an in-memory store.

    @param reactor: listens and schedules (the global reactor if C{None}).
    @param clock: the store's clock (C{reactor} if C{None}).
    @raise DaemonConfigError: the secret file became unreadable.
    """
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = globalReactor
    if clock is None:
        clock = reactor
    store = MemorySessionStore(
        clock,
        idleTimeout=config.idleTimeout,
        absoluteTimeout=config.absoluteTimeout,
        maxValueBytes=config.maxValueBytes,
        maxSessions=config.maxSessions,
        maxBytes=config.maxBytes,
    )
    return SessionDaemonService(
        store,
        readSecretFile(config.secretFile),
        config.listen,
        clock,
        reactor,
        statsInterval=config.statsInterval,
        loginTimeout=config.loginTimeout,
        maxConnections=config.maxConnections,
        maxUnauthenticated=config.maxUnauthenticated,
        maxUnauthenticatedPerAddress=config.maxUnauthenticatedPerAddress,
    )
