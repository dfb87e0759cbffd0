# -*- test-case-name: tests.unit.test_tap -*-
"""
The C{twistd tlbalance} command line: L{Options} turns arguments (and an
optional TOML file) into a L{BalancerConfig}; L{makeService} builds the
balancer from it, hosting the tlsession daemon when C{--sessions} asks.

This is where the balancer and the session daemon meet: tlbalance's
library modules do not import tlsession, and this module imports it only
when a configuration has sessions, to check them against the daemon's
rules and to build the daemon.

Every error in the command line, the configuration or at start-up ends the
command with one line per problem and exit status 1 (see
L{tlsuite._startup}).
"""

from __future__ import annotations

from typing import Any, Callable, NoReturn, Optional, TypeVar

from attrs import fields
from twisted.application.service import IService
from twisted.python import usage

from tlbalance._loglevel import LEVEL_NAMES, logLevelFor, parseLogLevel
from tlbalance.config import (
    ALGORITHMS,
    BalancerConfig,
    ConfigError,
    HealthCheckConfig,
    SessionDaemonSettings,
    buildConfig,
    describeSetting,
    loadConfig,
    parseSetting,
)
from tlsuite._startup import CommandLineOptions, exitWith, reportStartupErrors

__all__ = ["Options", "makeService"]

_Method = TypeVar("_Method", bound=Callable[..., Any])


def _coerce(key: str) -> Callable[[str], Any]:
    """
    A coerce function for C{--key}: checks the text as soon as it is read,
    with a message naming the option, and documents the range in C{--help}.
    """

    def coerce(text: str) -> Any:
        return parseSetting(key, text)

    coerce.coerceDoc = describeSetting(key)  # type: ignore[attr-defined]
    return coerce


def _oneParagraph(method: _Method) -> _Method:
    """
    Fold an C{opt_} method's docstring into one line: L{usage.Options}
    shows it as the option's help and would keep the indentation of every
    continuation line.
    """
    method.__doc__ = " ".join((method.__doc__ or "").split())
    return method


def _default(cls: type, attribute: str) -> str:
    """
    The default of a configuration attribute, for help texts.
    """
    value = getattr(fields(cls), attribute).default
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _daemonConfig(settings: SessionDaemonSettings) -> Any:
    """
    Check the hosted session daemon's settings against the daemon's own
    rules (private listeners, unless allowed; a private, long enough secret
    file) and build its configuration. Imports tlsession.

    @return: a L{tlsession.daemonconfig.DaemonConfig}; unix sockets without
        a mode get C{mode=600}.
    @raise ConfigError: one line per problem, naming the setting.
    """
    from tlsession.daemonconfig import (
        DaemonConfig,
        DaemonConfigError,
        checkListenEndpoint,
        readSecretFile,
    )

    problems = []
    listen = []
    for description in settings.listen:
        try:
            listen.append(
                checkListenEndpoint(
                    description, settings.insecure, settings.insecureFlag
                )
            )
        except DaemonConfigError as e:
            problems.append(f"{settings.listenLabel}: {e}")
    try:
        readSecretFile(settings.secretFile)
    except DaemonConfigError as e:
        problems.append(f"{settings.secretLabel}: {e}")
    if problems:
        raise ConfigError(*problems)
    try:
        return DaemonConfig(
            tuple(listen), settings.secretFile, insecure=settings.insecure
        )
    except DaemonConfigError as e:
        raise ConfigError(f"{settings.listenLabel}: {e}") from None


class Options(CommandLineOptions):
    """
    Options of C{twistd tlbalance}. After parsing, C{self["config"]} holds
    the validated L{BalancerConfig}, and C{self["sessionDaemon"]} the
    hosted session daemon's configuration (a
    L{tlsession.daemonconfig.DaemonConfig}), or C{None}.
    """

    command = "twistd tlbalance"
    program = "tlbalance"

    synopsis = "--listen ENDPOINT --backend ENDPOINT [options]"

    longdesc = (
        "A TCP/TLS/unix load balancer that tells backends the real client "
        "address with the PROXY protocol. --listen takes server endpoint "
        "strings (tcp:, tcp6:, unix:, ssl:, systemd:, tlsni:); --backend takes "
        "client endpoint strings (tcp:host=H:port=P, unix:path=P, ssl:, tls:) "
        "or the shorthands HOST:PORT, [IPv6]:PORT and /path/to/socket. Both "
        "can be repeated. --config reads the same settings from a TOML file, "
        "with [[backend]] tables for per-backend weight, backup, maxconn, "
        "send-proxy and check; options given on the command line override "
        "the file, and --listen/--backend replace its lists. --sessions "
        "ENDPOINT --secret-file FILE also hosts the tlsession daemon, which "
        "keeps the backends' shared sessions, in this process. Example: twistd "
        "-n tlbalance --listen tcp:8080 --backend 127.0.0.1:8081 --backend "
        '127.0.0.1:8082 --send-proxy v2 --check "http GET /health 200"'
    )

    optFlags: list[list[Any]] = [
        [
            "proxy-crc32c",
            None,
            "Add a CRC32C checksum TLV to PROXY v2 headers.",
        ],
        [
            "dontlog-normal",
            None,
            "Log only connections that end in an error (timeouts, refused "
            "or failed connects, resets), not every finished connection.",
        ],
        [
            "sessions-insecure",
            None,
            "Let the session daemon (--sessions) listen on plain endpoints "
            "such as tcp:, which carry its login and every session "
            "unencrypted (only on a private network).",
        ],
        [
            "check-config",
            None,
            "Check the configuration (the file, endpoints, certificates, "
            "keys, the session daemon's settings) without listening: print "
            "every problem, one per line, and exit 1, or exit 0.",
        ],
    ]

    optParameters: list[list[Any]] = [
        [
            "algorithm",
            None,
            None,
            "How to pick a backend: roundrobin (by weight), leastconn (fewest "
            "open connections), source (consistent hash of the client "
            "address) or random (the less loaded of two random picks). "
            f"[default: {_default(BalancerConfig, 'algorithm')}]",
            _coerce("algorithm"),
        ],
        [
            "send-proxy",
            None,
            None,
            "Send a PROXY protocol header of this version (v1, v2) to "
            "backends, or none. [default: none]",
            _coerce("send-proxy"),
        ],
        [
            "accept-proxy",
            None,
            None,
            "Require a PROXY header (v1 or v2) on every listener, accepted "
            "only from these peers: comma-separated CIDRs, IP addresses "
            "and/or 'unix'. Empty: PROXY headers are not accepted. "
            "[default: empty]",
            _coerce("accept-proxy"),
        ],
        [
            "proxy-header-timeout",
            None,
            None,
            "Seconds a trusted peer has to send its PROXY header. "
            f"[default: {_default(BalancerConfig, 'proxyHeaderTimeout')}]",
            _coerce("proxy-header-timeout"),
        ],
        [
            "connect-timeout",
            None,
            None,
            "Seconds to connect to a backend. "
            f"[default: {_default(BalancerConfig, 'connectTimeout')}]",
            _coerce("connect-timeout"),
        ],
        [
            "client-timeout",
            None,
            None,
            "Idle seconds allowed on the client side; 0 sets no limit. A "
            "connection is idle when no byte moves either way, so the smaller "
            "non-zero of this and --server-timeout applies. "
            f"[default: {_default(BalancerConfig, 'clientTimeout')}]",
            _coerce("client-timeout"),
        ],
        [
            "server-timeout",
            None,
            None,
            "Idle seconds allowed on the backend side; 0 sets no limit. "
            f"[default: {_default(BalancerConfig, 'serverTimeout')}]",
            _coerce("server-timeout"),
        ],
        [
            "first-byte-timeout",
            None,
            None,
            "Seconds a backend has to send its first byte once the client "
            "has sent something and gone quiet; 0 turns this off. For "
            "protocols where the client speaks first (HTTP), it frees clients "
            "of a hung backend long before the idle timeout. "
            f"[default: {_default(BalancerConfig, 'firstByteTimeout')}]",
            _coerce("first-byte-timeout"),
        ],
        [
            "retries",
            None,
            None,
            "Connect attempts after the first; the last one goes to another "
            f"backend. [default: {_default(BalancerConfig, 'retries')}]",
            _coerce("retries"),
        ],
        [
            "fail-timeout",
            None,
            None,
            "Seconds a backend without health checks stays down after a "
            "failed connect. "
            f"[default: {_default(BalancerConfig, 'failTimeout')}]",
            _coerce("fail-timeout"),
        ],
        [
            "drain-timeout",
            None,
            None,
            "Seconds open connections get to finish when the balancer stops. "
            f"[default: {_default(BalancerConfig, 'drainTimeout')}]",
            _coerce("drain-timeout"),
        ],
        [
            "pending-buffer-bytes",
            None,
            None,
            "Client bytes held while the backend connection is made. "
            f"[default: {_default(BalancerConfig, 'pendingBufferBytes')}]",
            _coerce("pending-buffer-bytes"),
        ],
        [
            "check",
            None,
            None,
            "Health check for backends that name none: tcp, "
            "'http [METHOD] [/PATH] [STATUS]' such as 'http GET /health 200', "
            "or none. [default: none]",
        ],
        [
            "check-inter",
            None,
            None,
            "Seconds between health checks. "
            f"[default: {_default(HealthCheckConfig, 'inter')}]",
            _coerce("check-inter"),
        ],
        [
            "check-rise",
            None,
            None,
            "Passed checks in a row that bring a backend up. "
            f"[default: {_default(HealthCheckConfig, 'rise')}]",
            _coerce("check-rise"),
        ],
        [
            "check-fall",
            None,
            None,
            "Failed checks in a row that take a backend down. "
            f"[default: {_default(HealthCheckConfig, 'fall')}]",
            _coerce("check-fall"),
        ],
        [
            "check-timeout",
            None,
            None,
            "Seconds to wait for one health check. [default: check-inter]",
            _coerce("check-timeout"),
        ],
        [
            "tls-ciphers",
            None,
            None,
            "The TLS 1.2 cipher suites of every TLS listener, as an OpenSSL "
            "cipher string. TLS 1.3 suites are fixed. [default: Mozilla's "
            "intermediate profile: ECDHE with AES-GCM or ChaCha20-Poly1305]",
            _coerce("tls-ciphers"),
        ],
        [
            "secret-file",
            None,
            None,
            "The session daemon's shared secret (with --sessions): a file "
            "of one line, at least 16 characters, not accessible by group "
            "or others.",
        ],
        [
            "control",
            None,
            None,
            "Serve the runtime API (tlbalancectl) on a unix socket at this "
            "path, made mode 0600.",
        ],
    ]

    # Numbers, CIDRs and endpoint strings are typed, not picked from files.
    compData = usage.Completions(
        optActions={
            "algorithm": usage.CompleteList(list(ALGORITHMS)),
            "send-proxy": usage.CompleteList(["v1", "v2", "none"]),
            "check": usage.CompleteList(["tcp", "http", "none"]),
            "log-level": usage.CompleteList(list(LEVEL_NAMES)),
            "config": usage.CompleteFiles("*.toml"),
            "secret-file": usage.CompleteFiles(),
            "control": usage.CompleteFiles(),
            "takeover": usage.CompleteFiles(),
            "sessions": usage.Completer(descr="server endpoint string"),
            "stats": usage.Completer(descr="server endpoint string"),
            "listen": usage.Completer(descr="server endpoint string"),
            "backend": usage.Completer(descr="client endpoint string"),
            "accept-proxy": usage.Completer(descr="trusted CIDRs"),
            "tls-ciphers": usage.Completer(descr="OpenSSL cipher string"),
            **{
                name: usage.Completer(descr=name)
                for name in [
                    "proxy-header-timeout",
                    "connect-timeout",
                    "client-timeout",
                    "server-timeout",
                    "first-byte-timeout",
                    "retries",
                    "fail-timeout",
                    "drain-timeout",
                    "pending-buffer-bytes",
                    "check-inter",
                    "check-rise",
                    "check-fall",
                    "check-timeout",
                ]
            },
        },
        multiUse=["listen", "backend", "sessions", "stats"],
    )

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["backend"] = []
        self["sessions"] = []
        self["stats"] = []
        self["configFile"] = None
        self["logLevel"] = None
        self["sessionDaemon"] = None
        self["takeover"] = None

    @_oneParagraph
    def opt_listen(self, description: str) -> None:
        """
        Accept clients on this server endpoint string, e.g. tcp:8080,
        tcp6:8080, unix:/run/lb.sock, ssl:443:privateKey=key.pem,
        systemd:domain=INET:index=0, tlsni:certdir=/etc/certs:tcp:443.
        Repeatable.
        """
        self["listen"].append(description)

    @_oneParagraph
    def opt_backend(self, description: str) -> None:
        """
        Balance over this client endpoint string: tcp:host=H:port=P,
        unix:path=P, ssl:..., tls:..., or the shorthands HOST:PORT,
        [IPv6]:PORT and /path/to/socket. Repeatable.
        """
        self["backend"].append(description)

    @_oneParagraph
    def opt_sessions(self, description: str) -> None:
        """
        Also host the tlsession daemon, serving the app processes' sessions
        on this server endpoint string (unix:/run/tlsession.sock, made mode
        0600, or ssl:...; tcp: needs --sessions-insecure). Needs
        --secret-file. Repeatable.
        """
        self["sessions"].append(description)

    @_oneParagraph
    def opt_stats(self, description: str) -> None:
        """
        Serve the read-only status page (/), /stats.json and /metrics
        (Prometheus) over HTTP on this server endpoint string, e.g.
        tcp:8404:interface=127.0.0.1. Repeatable.
        """
        self["stats"].append(description)

    @_oneParagraph
    def opt_log_level(self, name: str) -> None:
        """
        The lowest level of the balancer's log events: debug, info, warn,
        error or critical. [default: info; under twist, twist's own
        --log-level]
        """
        try:
            self["logLevel"] = parseLogLevel(name)
        except ValueError as e:
            raise usage.UsageError(f"--log-level: {e}") from None

    @_oneParagraph
    def opt_takeover(self, path: str) -> None:
        """
        Hitless upgrade: take the listening sockets over from the tlbalance
        whose control socket (--control) is at this path, then tell it to
        stop accepting, drain (its --drain-timeout) and exit.
        """
        self["takeover"] = path

    @_oneParagraph
    def opt_config(self, path: str) -> None:
        """
        Read settings from this TOML file; the command line overrides it.
        """
        self["configFile"] = path

    def postOptions(self) -> None:
        """
        Build the configuration into C{self["config"]}, and the hosted
        session daemon's into C{self["sessionDaemon"]}.

        @raise usage.UsageError: with the configuration's complaints, one
            line each, which name the option or key at fault (and which
            C{parseOptions} turns into a one-line-per-problem exit).
        """
        overrides: dict[str, Any] = {}
        for parameter in self.optParameters:
            name = parameter[0]
            if self[name] is not None:
                overrides[name] = self[name]
        for flag in ("proxy-crc32c", "dontlog-normal", "sessions-insecure"):
            if self[flag]:
                overrides[flag] = True
        if self["listen"]:
            overrides["listen"] = list(self["listen"])
        if self["backend"]:
            overrides["backend"] = list(self["backend"])
        if self["sessions"]:
            overrides["sessions"] = list(self["sessions"])
        if self["stats"]:
            overrides["stats"] = list(self["stats"])
        self["overrides"] = overrides
        if self["check-config"]:
            self._checkConfig()
        try:
            self["config"] = self.readConfig()
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None

    def readConfig(self) -> BalancerConfig:
        """
        Build the configuration from the file, read now, and the command
        line, as at start-up: a reload calls it again, so the command
        line's settings stay in force over the file.

        @raise ConfigError: every problem, one line each.
        """
        fileValues = {}
        if self["configFile"] is not None:
            fileValues = loadConfig(self["configFile"])
        return buildConfig(fileValues, self["overrides"], self._checkSessions)

    def _checkConfig(self) -> NoReturn:
        """
        C{--check-config}: check everything start-up checks, listening on
        nothing, and exit: 0 with a summary, or 1 with every problem.
        """
        try:
            config = self.readConfig()
        except ConfigError as e:
            exitWith(self.command, e)
        summary = (
            f"{len(config.listen)} listener(s), {len(config.backends)} "
            f"backend(s), {config.algorithm}"
        )
        if config.sessions:
            summary += f", session daemon on {', '.join(config.sessions)}"
        print(f"configuration OK: {summary}")
        raise SystemExit(0)

    def _checkSessions(self, settings: SessionDaemonSettings) -> None:
        self["sessionDaemon"] = _daemonConfig(settings)


def makeService(options: Options, reactor: Optional[Any] = None) -> IService:
    """
    Build the balancer service from parsed options, hosting the session
    daemon if they configure one.

    @param options: an L{Options} after C{parseOptions}.
    @param reactor: the reactor to use; the global one when C{None}.
    @return: the service for twistd to start.
    @raise SystemExit: with one line, when the session daemon's secret file
        became unreadable since the options were checked.
    """
    from tlbalance.service import makeBalancerService

    reportStartupErrors(options.command)
    service = makeBalancerService(
        options["config"],
        reactor,
        logLevel=logLevelFor(options["logLevel"], options.parent),
    )
    if options["sessionDaemon"] is not None:
        from tlsession.daemonconfig import DaemonConfigError, makeDaemonService

        try:
            daemon = makeDaemonService(options["sessionDaemon"], reactor)
        except DaemonConfigError as e:
            exitWith(options.command, e)
        service.hostSessionDaemon(daemon)
    if options["configFile"] is not None:
        from tlbalance.reload import Reloader, SIGHUPReload

        # SIGHUP and the runtime API's reload read the file again; the
        # session daemon stays as it started.
        reloader = Reloader(service, options.readConfig)
        onSIGHUP = SIGHUPReload(reloader, service.balancer.clock)
        onSIGHUP.setServiceParent(service)
        service.reload = onSIGHUP
    if options["takeover"] is not None:
        from tlbalance.takeover import installTakeover

        # Last: the old balancer is told to go once everything started.
        installTakeover(service, options["takeover"], reactor)
    return service
