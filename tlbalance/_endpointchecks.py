# -*- test-case-name: tests.unit.test_config -*-
"""
The balancer's endpoint strings, checked before anything listens or
connects: listen strings (C{tlsni:} included), backend strings and their
shorthands (C{HOST:PORT}, C{[IPv6]:PORT}, C{/path}), and the listen queue
given to listeners whose string sets none.

Strings are parsed against tlsuite's stand-in reactor
(L{tlsuite._endpoints.PARSE_ONLY}), so a typo fails start-up rather than the
first connection. Parsing an C{ssl:} or C{tls:} string that names
certificate or key files reads those files, as Twisted's parsers do, and a
C{tlsni:} string loads its certificate directory.
"""

from __future__ import annotations

import ipaddress
import re

from twisted.internet.endpoints import clientFromString
from twisted.internet.interfaces import IStreamClientEndpointStringParserWithReactor
from twisted.plugin import getPlugins

from tlbalance._endpoints import quoteEndpointArgument, unparseEndpoint
from tlbalance._rules import ConfigError, show
from tlbalance.tls import splitServerTLS
from tlsuite._endpoints import PARSE_ONLY, portProblem, refusalReason
from tlsuite._twisted import parseEndpointString

#: The listen queue given to listeners whose endpoint string sets none:
#: Twisted's own default of 50 overflows in a burst of connects, leaving
#: clients whose handshake the kernel completed but nobody accepts (511 is
#: the value nginx, Redis and Apache use; the kernel caps it at
#: net.core.somaxconn).
DEFAULT_BACKLOG = 511

# Server endpoint types whose parsers take backlog=, and the wrappers that
# pass every option they do not know on to the endpoint they wrap.
_BACKLOG_TYPES = frozenset({"tcp", "tcp6", "unix", "ssl", "tls"})
_WRAPPER_TYPES = frozenset({"tlsni", "tlproxy"})

# The tlsni: parser's own options (tlbalance.tls); the rest is the inner
# endpoint.
_TLSNI_OPTIONS = ("certdir", "strict")

_HOST_PORT = re.compile(
    r"(?P<host>[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?):(?P<port>[0-9]+)"
)
_BRACKETED_HOST_PORT = re.compile(r"\[(?P<host>[0-9A-Fa-f:.]+)\]:(?P<port>[0-9]+)")

_CLIENT_EXAMPLES = (
    "expected e.g. tcp:host=HOST:port=PORT, HOST:PORT, unix:path=PATH or /PATH"
)


def withListenBacklog(description: str, backlog: int = DEFAULT_BACKLOG) -> str:
    """
    The server endpoint string to listen with: C{description} with
    C{backlog=BACKLOG} added, unless it sets a backlog itself or its type
    takes none (C{systemd:} sockets come with the backlog systemd gave
    them).

    C{tcp:}, C{tcp6:}, C{unix:}, C{ssl:} and C{tls:} take a backlog, also
    when wrapped in C{tlsni:} and C{tlproxy:}.
    """
    args, kwargs = parseEndpointString(description)
    kinds = [arg.lower() for arg in args]
    index = 0
    while index < len(kinds) and kinds[index] in _WRAPPER_TYPES:
        index += 1
    if index == len(kinds) or kinds[index] not in _BACKLOG_TYPES:
        return description
    if "backlog" in kwargs:
        return description
    return unparseEndpoint(args, {**kwargs, "backlog": str(backlog)})


def checkListenString(label: str, description: str) -> None:
    """
    Check that C{description} is a server endpoint string the balancer can
    listen on, without listening.

    @param label: the option or key that set it, for the message.
    @raise ConfigError: naming C{label} and the string.
    """
    args, kwargs = parseEndpointString(description)
    kind = args[0].lower() if args else ""
    if kind == "tlsni":
        if not kwargs.get("certdir"):
            raise ConfigError(
                f"{label}: {show(description)}: tlsni needs "
                "certdir=DIRECTORY (a directory of PEM files)"
            )
        if len(args) < 2:
            raise ConfigError(
                f"{label}: {show(description)}: tlsni needs an endpoint to "
                "wrap, as in tlsni:certdir=/etc/certs:tcp:443"
            )
        innerKwargs = {k: v for k, v in kwargs.items() if k not in _TLSNI_OPTIONS}
        checkListenString(label, unparseEndpoint(args[1:], innerKwargs))
    else:
        problem = portProblem(description, example="tcp:8080")
        if problem is not None:
            raise ConfigError(f"{label}: {show(description)}: {problem}")
    try:
        # For tlsni: this reads the certificate directory, so a bad file
        # stops start-up with a one-line message, as a bad ssl: key does.
        # Splitting the TLS off refuses what tlbalance's TLS settings do not
        # support (Twisted's tls: server endpoint, ssl:'s dhParameters=).
        splitServerTLS(PARSE_ONLY, description)
    except Exception as e:
        raise ConfigError(
            f"{label}: {show(description)} is not a valid server endpoint: "
            f"{refusalReason(e, kind)}"
        ) from None


def _clientEndpointTypes() -> set[str]:
    """
    The endpoint types a client endpoint string can start with.
    """
    return {"tcp", "ssl", "unix"} | {
        plugin.prefix.lower()
        for plugin in getPlugins(IStreamClientEndpointStringParserWithReactor)
    }


def backendEndpointString(label: str, value: object) -> str:
    """
    Check a backend endpoint and return it as a client endpoint string.

    Besides endpoint strings, C{HOST:PORT}, C{[IPv6]:PORT} and absolute
    paths are accepted and become C{tcp:host=HOST:port=PORT} and
    C{unix:path=PATH}.

    @param label: the option or key that set it, for the message.
    @raise ConfigError: naming C{label} and quoting C{value}.
    """
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(
            f"{label}: expected a client endpoint string, got {show(value)}"
        )
    description = value.strip()
    if description.startswith("/"):
        description = "unix:path=" + quoteEndpointArgument(description)
    else:
        match = _HOST_PORT.fullmatch(description) or _BRACKETED_HOST_PORT.fullmatch(
            description
        )
        if (
            match is not None
            and match.group("host").lower() not in _clientEndpointTypes()
        ):
            host = match.group("host")
            if match.re is _BRACKETED_HOST_PORT:
                try:
                    host = str(ipaddress.IPv6Address(host))
                except ValueError:
                    raise ConfigError(
                        f"{label}: {show(value)}: {show(host)} is not an IPv6 address"
                    ) from None
            description = (
                f"tcp:host={quoteEndpointArgument(host)}:port={match.group('port')}"
            )
    problem = portProblem(
        description, client=True, example="tcp:host=HOST:port=PORT or HOST:PORT"
    )
    if problem is not None:
        raise ConfigError(f"{label}: {show(value)}: {problem}")
    try:
        clientFromString(PARSE_ONLY, description)
    except Exception as e:
        # A file an ssl: or tls: string names is missing: the example
        # strings would not help.
        hint = "" if isinstance(e, OSError) else f" ({_CLIENT_EXAMPLES})"
        raise ConfigError(
            f"{label}: {show(value)} is not a valid client endpoint: "
            f"{refusalReason(e)}{hint}"
        ) from None
    return description
