# -*- test-case-name: tests.unit.test_sessiontap -*-
"""
C{twistd tlsession}: the session daemon's command line (L{Options}) and
L{makeService}. The configuration itself, its checks and the daemon it
describes are library code in L{tlsession.daemonconfig}; the names are
re-exported here for the code that still imports them from this module.

Every error in the command line, the configuration or at start-up ends the
command with one line naming the problem and exit status 1 (see
L{tlsuite._startup}).
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.application.service import IService
from twisted.python import usage

from tlsession.daemon import (
    DEFAULT_LOGIN_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_UNAUTHENTICATED_PER_ADDRESS,
    MAX_VALUE_BYTES_LIMIT,
)
from tlsession.daemonconfig import (
    MIN_SECRET_LENGTH,
    DaemonConfig,
    DaemonConfigError,
    checkListenEndpoint,
    makeDaemonService,
    readSecretFile,
)
from tlsuite._startup import CommandLineOptions, exitWith, reportStartupErrors

__all__ = [
    "MIN_SECRET_LENGTH",
    "DaemonConfig",
    "DaemonConfigError",
    "Options",
    "checkListenEndpoint",
    "makeDaemonService",
    "makeService",
    "readSecretFile",
]


def _number(label: str, integer: bool, zero: bool = False) -> Callable[[str], Any]:
    """
    A coerce function for a positive number option (or zero, if C{zero}),
    with its range in C{--help}; L{DaemonConfig} checks the range.
    """

    def coerce(text: str) -> Any:
        try:
            value: float = int(text) if integer else float(text)
        except ValueError:
            kind = "an integer" if integer else "a number"
            raise ValueError(f"--{label}: expected {kind}, got {text!r}") from None
        return value

    kind = "An integer" if integer else "A number"
    coerce.coerceDoc = f"{kind} {'>=' if zero else '>'} 0."  # type: ignore[attr-defined]
    return coerce


class Options(CommandLineOptions):
    """
    Options of C{twistd tlsession}. After parsing, C{self["config"]} holds
    the checked L{DaemonConfig}.
    """

    command = "twistd tlsession"
    program = "tlsession"
    synopsis = "--listen ENDPOINT --secret-file FILE [options]"

    longdesc = (
        "The tlsession daemon: keeps the sessions of every app process of a "
        "site in memory and serves them over Perspective Broker to clients "
        "that know the shared secret. It listens on unix sockets (made mode "
        "0600 unless the endpoint sets mode=) or TLS (ssl:); plain tcp: only "
        "with --insecure. Sessions live in memory only: a restart ends them. "
        "Example: twistd -n tlsession --listen unix:/run/tlsession/daemon.sock "
        "--secret-file /etc/tlsession/secret"
    )

    optFlags: list[list[Any]] = [
        [
            "insecure",
            None,
            "Allow plain listeners such as tcp:, which carry the login and "
            "every session unencrypted (only on a private network).",
        ],
    ]

    optParameters: list[list[Any]] = [
        [
            "secret-file",
            None,
            None,
            "File holding the shared secret clients log in with (one line, "
            "at least 16 characters, not accessible by group or others).",
        ],
        [
            "max-sessions",
            None,
            100_000,
            "Sessions kept; beyond, the least recently used are evicted, "
            "sessions never used since their creation first.",
            _number("max-sessions", integer=True),
        ],
        [
            "max-bytes",
            None,
            256 * 2**20,
            "Total bytes of session data kept; beyond, sessions are evicted "
            "as for --max-sessions.",
            _number("max-bytes", integer=True),
        ],
        [
            "max-value-bytes",
            None,
            65536,
            "Largest data of one session; larger saves are refused "
            f"(at most {MAX_VALUE_BYTES_LIMIT}).",
            _number("max-value-bytes", integer=True),
        ],
        [
            "idle-timeout",
            None,
            1800.0,
            "Seconds without activity after which a session ends, unless it "
            "sets its own.",
            _number("idle-timeout", integer=False),
        ],
        [
            "absolute-timeout",
            None,
            86400.0,
            "Seconds after its creation when any session ends.",
            _number("absolute-timeout", integer=False),
        ],
        [
            "stats-interval",
            None,
            60.0,
            "Seconds between one-line summaries in the log (sessions, bytes, "
            "evictions, operations per second); 0 turns them off.",
            _number("stats-interval", integer=False, zero=True),
        ],
        [
            "max-connections",
            None,
            DEFAULT_MAX_CONNECTIONS,
            "Client connections served at once, logged in or not; when all "
            "are logged in, new ones are refused.",
            _number("max-connections", integer=True),
        ],
        [
            "max-unauthenticated",
            None,
            None,
            "Connections that may be waiting to log in at once (default: a "
            "tenth of --max-connections); past it, a waiting one is closed "
            "to make room. The other slots are kept for logged-in clients.",
            _number("max-unauthenticated", integer=True),
        ],
        [
            "max-unauthenticated-per-address",
            None,
            DEFAULT_MAX_UNAUTHENTICATED_PER_ADDRESS,
            "Connections from one client address (an IPv6 /64) that may be "
            "waiting to log in at once, on TCP and TLS listeners.",
            _number("max-unauthenticated-per-address", integer=True),
        ],
        [
            "login-timeout",
            None,
            DEFAULT_LOGIN_TIMEOUT,
            "Seconds a new connection has to log in before it is closed.",
            _number("login-timeout", integer=False),
        ],
    ]

    compData = usage.Completions(
        optActions={
            "secret-file": usage.CompleteFiles(),
            "listen": usage.Completer(descr="server endpoint string"),
        },
        multiUse=["listen"],
    )

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []

    def opt_listen(self, description: str) -> None:
        """
        Serve clients on this server endpoint string, e.g.
        unix:/run/tlsession/daemon.sock or ssl:7100:privateKey=key.pem:certKey=cert.pem.
        Repeatable.
        """
        self["listen"].append(description)

    def postOptions(self) -> None:
        """
        Check everything and build C{self["config"]}.

        @raise usage.UsageError: naming the problem (which C{parseOptions}
            turns into a one-line exit).
        """
        if self["secret-file"] is None:
            raise usage.UsageError(
                "no secret: give --secret-file FILE (one line the clients know too)"
            )
        try:
            self["config"] = DaemonConfig.build(
                self["listen"],
                self["secret-file"],
                maxSessions=self["max-sessions"],
                maxBytes=self["max-bytes"],
                maxValueBytes=self["max-value-bytes"],
                idleTimeout=float(self["idle-timeout"]),
                absoluteTimeout=float(self["absolute-timeout"]),
                statsInterval=float(self["stats-interval"]),
                maxConnections=self["max-connections"],
                maxUnauthenticated=self["max-unauthenticated"],
                maxUnauthenticatedPerAddress=self["max-unauthenticated-per-address"],
                loginTimeout=float(self["login-timeout"]),
                insecure=bool(self["insecure"]),
            )
        except DaemonConfigError as e:
            raise usage.UsageError(str(e)) from None


def makeService(options: Options) -> IService:
    """
    Build the daemon from parsed options.

    @raise SystemExit: with one line, when the secret file became unreadable
        since the options were checked.
    """
    reportStartupErrors(options.command)
    try:
        service: IService = makeDaemonService(options["config"])
    except DaemonConfigError as e:
        exitWith(options.command, e)
    return service
