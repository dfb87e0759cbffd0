# -*- test-case-name: tests.unit.test_config -*-
"""
The balancer's configuration: one validated, frozen L{BalancerConfig} built
from a TOML file, the command line, or both.

The file uses the command line's option names as keys (C{client-timeout =
300}, C{send-proxy = "v2"}) plus one C{[[backend]]} table per backend. A
setting given on the command line wins over the file; C{--listen} and
C{--backend} replace the file's lists. Every problem is a L{ConfigError}
whose message names the option or key (C{backend[2].weight}, counting
backends from 0) and says what was expected.

Backends may be written as client endpoint strings or, for convenience, as
C{HOST:PORT}, C{[IPv6]:PORT} or an absolute socket path; these become
C{tcp:host=HOST:port=PORT} and C{unix:path=PATH}, and the backend keeps the
short form as its default name. C{check}, C{check-inter}, C{check-rise},
C{check-fall} and C{check-timeout} at the top level are defaults for every
backend that does not set its own; C{check = "none"} turns a check off.

C{sessions} (endpoint strings), C{secret-file} and C{sessions-insecure}
host the tlsession daemon in the balancer (see L{tlsession.tap}); the secret
file is checked (present, private, long enough) when the configuration is
built.

Nothing here listens, connects or uses a reactor. Endpoint strings are
checked by parsing them against an object that is not a reactor, so a typo
fails start-up instead of the first connection. Parsing an C{ssl:} or
C{tls:} string that names certificate or key files reads those files, as
Twisted's parsers do, and a C{tlsni:} string loads its certificate
directory. C{tls-ciphers} is checked against OpenSSL.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
import os
import re
import sys
from typing import Any, Iterable, Mapping, Optional, Union

from attrs import Attribute, Factory, field, fields, frozen
from twisted.internet.endpoints import _parse, clientFromString, serverFromString
from twisted.internet.interfaces import (
    IHostnameResolver,
    IReactorPluggableNameResolver,
    IStreamClientEndpointStringParserWithReactor,
)
from twisted.plugin import getPlugins
from zope.interface import implementer

from tlbalance._endpoints import quoteEndpointArgument, unparseEndpoint
from tlbalance.tls import TLSConfigError, TLSSettings, checkCiphers, splitServerTLS

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

__all__ = [
    "ALGORITHMS",
    "BackendConfig",
    "BalancerConfig",
    "ConfigError",
    "DEFAULT_BACKLOG",
    "HealthCheckConfig",
    "buildConfig",
    "describeSetting",
    "loadConfig",
    "parseSetting",
    "withListenBacklog",
]

ALGORITHMS = ("roundrobin", "leastconn", "source", "random")

_CHECK_SYNTAX = '"tcp", "http [METHOD] [/PATH] [STATUS]" or "none"'


class ConfigError(ValueError):
    """
    The configuration is unusable. The message names the option or key and
    the problem, ready to show to the user as it is.
    """


def _show(value: object) -> str:
    """
    Render a configuration value the way it would be written in TOML, so
    that an error message quotes what the user wrote.
    """
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show(item) for item in value) + "]"
    if isinstance(value, Mapping):
        return "a table"
    return str(value)


# Rules: the type and range of one setting. The same rule converts a value
# read from TOML, parses command-line text, and (as an attrs validator)
# guards objects built directly in code.


@frozen
class _Number:
    """
    An integer or a finite number within a range.

    @ivar above: the value must be strictly greater than C{minimum}.
    @ivar optional: C{None} is allowed too (never written in a file, since
        TOML has no null: it means "not set").
    """

    integer: bool
    minimum: float
    maximum: Optional[float] = None
    above: bool = False
    unit: str = ""
    optional: bool = False

    def describe(self) -> str:
        """
        Say what is expected, e.g. C{an integer from 0 to 256}.
        """
        noun = "an integer" if self.integer else "a number"
        if self.unit:
            noun += f" of {self.unit}"
        low = _number(self.minimum)
        if self.maximum is not None:
            return f"{noun} from {low} to {_number(self.maximum)}"
        return f"{noun} {'>' if self.above else '>='} {low}"

    def check(self, label: str, value: object) -> Any:
        """
        Return C{value} as an C{int} or C{float}, or raise L{ConfigError}.
        """
        if value is None and self.optional:
            return None
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or (self.integer and not isinstance(value, int))
        ):
            raise self.error(label, value)
        if (
            not math.isfinite(value)
            or value < self.minimum
            or (self.above and value == self.minimum)
            or (self.maximum is not None and value > self.maximum)
        ):
            raise self.error(label, value)
        return value if self.integer else float(value)

    def parse(self, label: str, text: str) -> Any:
        """
        Convert command-line text, then L{check} it; errors quote the text.
        """
        try:
            number: float = int(text) if self.integer else float(text)
            return self.check(label, number)
        except (ValueError, ConfigError):
            # Quote what was typed ("0"), not the converted number (0.0).
            raise self.error(label, text) from None

    def error(self, label: str, value: object) -> ConfigError:
        """
        The error for a value that breaks this rule.
        """
        return ConfigError(f"{label}: expected {self.describe()}, got {_show(value)}")


def _number(value: float) -> str:
    """
    Print C{2.0} as C{2} in messages.
    """
    return str(int(value)) if float(value).is_integer() else str(value)


@frozen
class _Choice:
    """
    One word out of a fixed list; case does not matter.

    @ivar noneWord: a word that means "off" and becomes C{None}.
    """

    choices: tuple[str, ...]
    optional: bool = False
    noneWord: Optional[str] = None

    def describe(self) -> str:
        """
        List the words accepted.
        """
        words = self.choices + ((self.noneWord,) if self.noneWord else ())
        return "one of " + ", ".join(words)

    def check(self, label: str, value: object) -> Optional[str]:
        """
        Return the word in lower case (or C{None}), or raise L{ConfigError}.
        """
        if value is None and self.optional:
            return None
        if isinstance(value, str):
            word = value.strip().lower()
            if word in self.choices:
                return word
            if self.noneWord is not None and word == self.noneWord:
                return None
        raise ConfigError(f"{label}: expected {self.describe()}, got {_show(value)}")

    def parse(self, label: str, text: str) -> Optional[str]:
        """
        Command-line text is checked as it is.
        """
        return self.check(label, text)


@frozen
class _Boolean:
    """
    C{true} or C{false}.
    """

    def describe(self) -> str:
        """
        Say what is expected.
        """
        return "true or false"

    def check(self, label: str, value: object) -> bool:
        """
        Return the boolean, or raise L{ConfigError}.
        """
        if not isinstance(value, bool):
            raise ConfigError(f"{label}: expected true or false, got {_show(value)}")
        return value


@frozen
class _Peers:
    """
    Trusted PROXY senders: CIDR networks, bare IP addresses and C{unix},
    as a list or one comma-separated string. Bare addresses become
    single-address networks (C{127.0.0.1/32}).
    """

    def describe(self) -> str:
        """
        Say what is expected.
        """
        return 'CIDR networks, IP addresses and/or "unix", separated by commas'

    def parse(self, label: str, text: str) -> tuple[str, ...]:
        """
        Command-line text is one comma-separated string.
        """
        return self.check(label, text)

    def check(self, label: str, value: object) -> tuple[str, ...]:
        """
        Return the normalised entries, or raise L{ConfigError}.
        """
        if isinstance(value, str):
            items: list[object] = list(value.split(","))
        elif isinstance(value, (list, tuple)):
            items = list(value)
        else:
            raise ConfigError(
                f"{label}: expected {self.describe()}, got {_show(value)}"
            )
        peers: list[str] = []
        for item in items:
            if not isinstance(item, str):
                raise ConfigError(
                    f"{label}: expected {self.describe()}, got {_show(item)}"
                )
            text = item.strip()
            if not text:
                continue
            if text.lower() == "unix":
                peers.append("unix")
                continue
            try:
                network = ipaddress.ip_network(text, strict=True)
            except ValueError:
                try:
                    loose = ipaddress.ip_network(text, strict=False)
                except ValueError:
                    raise ConfigError(
                        f"{label}: {_show(text)} is not an IP address, a CIDR "
                        'network or "unix"'
                    ) from None
                raise ConfigError(
                    f"{label}: {_show(text)} has host bits set; did you mean "
                    f"{_show(str(loose))}?"
                ) from None
            peers.append(str(network))
        return tuple(peers)


@frozen
class _Ciphers:
    """
    The TLS 1.2 cipher suites of every TLS listener: an OpenSSL cipher
    string that OpenSSL selects something from.
    """

    def describe(self) -> str:
        """
        Say what is expected.
        """
        return "an OpenSSL cipher string for TLS 1.2, e.g. ECDHE+AESGCM:ECDHE+CHACHA20"

    def check(self, label: str, value: object) -> Optional[str]:
        """
        Return the string (C{None} when not set), or raise L{ConfigError}.
        """
        if value is None:
            return None
        if not isinstance(value, str):
            raise ConfigError(
                f"{label}: expected {self.describe()}, got {_show(value)}"
            )
        try:
            return checkCiphers(value.strip())
        except TLSConfigError as e:
            raise ConfigError(f"{label}: {e}") from None

    def parse(self, label: str, text: str) -> Optional[str]:
        """
        Command-line text is checked as it is.
        """
        return self.check(label, text)


_Rule = Union[_Number, _Choice, _Boolean, _Peers, _Ciphers]

_SECONDS = _Number(integer=False, minimum=0, unit="seconds")
_POSITIVE_SECONDS = _Number(integer=False, minimum=0, above=True, unit="seconds")


def _setting(key: str, rule: _Rule) -> dict[str, Any]:
    """
    Field metadata: the setting's name in files and on the command line, and
    its rule.
    """
    return {"key": key, "rule": rule}


def _validateField(instance: object, attribute: Attribute[Any], value: Any) -> None:
    """
    attrs validator applying a field's rule, for objects built in code.
    """
    attribute.metadata["rule"].check(attribute.name, value)


@frozen
class HealthCheckConfig:
    """
    An active health check: a TCP connect, or an HTTP request whose answer
    must carry an expected status. C{inter}/C{rise}/C{fall} follow HAProxy:
    check every C{inter} seconds, C{rise} passes in a row bring a backend
    up, C{fall} failures in a row take it down.

    @ivar timeout: seconds to wait for one check; C{None} means C{inter}.
    """

    kind: str = field(
        validator=_validateField, metadata=_setting("kind", _Choice(("tcp", "http")))
    )
    method: str = "GET"
    path: str = "/"
    expectStatus: int = field(
        default=200,
        validator=_validateField,
        metadata=_setting("status", _Number(integer=True, minimum=100, maximum=599)),
    )
    inter: float = field(
        default=2.0,
        validator=_validateField,
        metadata=_setting("check-inter", _POSITIVE_SECONDS),
    )
    rise: int = field(
        default=2,
        validator=_validateField,
        metadata=_setting("check-rise", _Number(integer=True, minimum=1)),
    )
    fall: int = field(
        default=3,
        validator=_validateField,
        metadata=_setting("check-fall", _Number(integer=True, minimum=1)),
    )
    timeout: Optional[float] = field(
        default=None,
        validator=_validateField,
        metadata=_setting(
            "check-timeout",
            _Number(
                integer=False, minimum=0, above=True, unit="seconds", optional=True
            ),
        ),
    )

    @classmethod
    def parse(cls, text: str, **defaults: Any) -> HealthCheckConfig:
        """
        Read a check written as C{tcp} or C{http [METHOD] [/PATH] [STATUS]}
        (C{http} alone is C{http GET / 200}).

        @param text: the check, e.g. C{"http GET /health 200"}.
        @param defaults: other attributes (C{inter}, C{rise}, C{fall},
            C{timeout}).
        @raise ConfigError: the text is not a check; the message quotes it.
        """
        words = text.split()
        if not words:
            raise ConfigError(f"empty health check; expected {_CHECK_SYNTAX}")
        kind = words[0].lower()
        rest = words[1:]
        if kind == "tcp":
            if rest:
                raise ConfigError(f"{_show(text)}: a tcp check takes no arguments")
            return cls(kind="tcp", **defaults)
        if kind != "http":
            raise ConfigError(
                f"{_show(text)}: unknown kind of check {_show(words[0])}; "
                f"expected {_CHECK_SYNTAX}"
            )
        method, path, status = "GET", "/", 200
        if rest and not rest[0].startswith("/") and not rest[0].isdigit():
            word = rest.pop(0)
            if not re.fullmatch("[A-Z]+", word):
                raise ConfigError(
                    f"{_show(text)}: {_show(word)} is neither a method "
                    '(upper case, like GET) nor a path (starting with "/")'
                )
            method = word
        if rest and rest[0].startswith("/"):
            path = rest.pop(0)
            if not all(33 <= ord(c) < 127 for c in path):
                raise ConfigError(
                    f"{_show(text)}: the path must be printable ASCII "
                    "(percent-encode anything else)"
                )
        if rest and re.fullmatch("[0-9]{3}", rest[0]):
            status = int(rest.pop(0))
            if not 100 <= status <= 599:
                raise ConfigError(
                    f"{_show(text)}: the status must be from 100 to 599, got {status}"
                )
        if rest:
            raise ConfigError(
                f"{_show(text)}: unexpected {_show(rest[0])}; expected {_CHECK_SYNTAX}"
            )
        return cls(
            kind="http", method=method, path=path, expectStatus=status, **defaults
        )


@frozen
class BackendConfig:
    """
    One backend server as configured.

    @ivar endpoint: a client endpoint string (C{tcp:host=...:port=...},
        C{unix:path=...}, C{ssl:...}, C{tls:...}).
    @ivar name: the name in logs and stats; the endpoint as the user wrote
        it unless given.
    @ivar weight: 0 to 256; 0 takes no new connections (as in HAProxy).
    @ivar backup: used only when no normal backend is available.
    @ivar maxconn: concurrent connections allowed; 0 means no limit.
    @ivar sendProxy: C{"v1"}, C{"v2"}, C{"none"} to send no header even
        when the balancer-wide setting asks for one, or C{None} to follow
        the global L{BalancerConfig.sendProxy}.
    @ivar check: the active health check, or C{None} for none.
    """

    endpoint: str
    name: str = field(default=Factory(lambda self: self.endpoint, takes_self=True))
    weight: int = field(
        default=1,
        validator=_validateField,
        metadata=_setting("weight", _Number(integer=True, minimum=0, maximum=256)),
    )
    backup: bool = field(
        default=False, validator=_validateField, metadata=_setting("backup", _Boolean())
    )
    maxconn: int = field(
        default=0,
        validator=_validateField,
        metadata=_setting("maxconn", _Number(integer=True, minimum=0)),
    )
    sendProxy: Optional[str] = field(
        default=None,
        validator=_validateField,
        metadata=_setting("send-proxy", _Choice(("v1", "v2", "none"), optional=True)),
    )
    check: Optional[HealthCheckConfig] = None


@frozen
class BalancerConfig:
    """
    Everything C{twistd tlbalance} needs, validated.

    @ivar listen: server endpoint strings to accept clients on.
    @ivar backends: the servers to balance over, in configuration order.
    @ivar algorithm: one of L{ALGORITHMS}.
    @ivar sendProxy: the PROXY version written to backends (C{"v1"},
        C{"v2"}), or C{None} for none; a backend's own setting wins.
    @ivar proxyCRC32C: add the CRC32C TLV to v2 headers.
    @ivar dontlogNormal: log only the connections that ended in an error
        (HAProxy's C{option dontlog-normal}), for very busy balancers.
    @ivar acceptProxy: peers trusted to send a PROXY header: normalised
        CIDRs and/or C{"unix"}. Empty: PROXY headers are not accepted.
    @ivar proxyHeaderTimeout: seconds a trusted peer has to send its header.
    @ivar connectTimeout: seconds to connect to a backend.
    @ivar clientTimeout: idle seconds allowed on the client side; 0 sets no
        limit for that side. A relayed connection is idle when no byte moves
        either way, so the smaller non-zero of this and C{serverTimeout}
        closes it (see L{warnings}).
    @ivar serverTimeout: the same for the backend side.
    @ivar firstByteTimeout: seconds the backend has to send its first byte
        once the client has sent something and gone quiet; 0 turns this off.
        For protocols where the client speaks first (HTTP), it frees clients
        of a backend that accepts connections but never answers (hung, or
        stopped while its kernel still completes handshakes) well before the
        idle timeout. Only the first byte of a connection is timed.
    @ivar retries: connect attempts after the first; the last one goes to
        another backend.
    @ivar failTimeout: seconds a backend marked down by a failed connect
        (and without active checks) stays down.
    @ivar drainTimeout: seconds open connections get to finish on stop.
    @ivar pendingBufferBytes: client bytes held while the backend connects.
    @ivar sessions: server endpoint strings on which the balancer also hosts
        the tlsession daemon (unix sockets get C{mode=600}); empty for none.
    @ivar secretFile: the daemon's shared secret file (absolute path), set
        exactly when C{sessions} is.
    @ivar sessionsInsecure: let the daemon listen on plain endpoints such
        as C{tcp:}.
    @ivar tlsCiphers: the TLS 1.2 cipher suites of every TLS listener, an
        OpenSSL cipher string; C{None} for tlbalance's default (Mozilla's
        intermediate profile, L{tlbalance.tls.DEFAULT_CIPHERS}).
    """

    listen: tuple[str, ...] = field(converter=tuple)
    backends: tuple[BackendConfig, ...] = field(converter=tuple)
    algorithm: str = field(
        default="roundrobin",
        validator=_validateField,
        metadata=_setting("algorithm", _Choice(ALGORITHMS)),
    )
    sendProxy: Optional[str] = field(
        default=None,
        validator=_validateField,
        metadata=_setting(
            "send-proxy", _Choice(("v1", "v2"), optional=True, noneWord="none")
        ),
    )
    proxyCRC32C: bool = field(
        default=False,
        validator=_validateField,
        metadata=_setting("proxy-crc32c", _Boolean()),
    )
    dontlogNormal: bool = field(
        default=False,
        validator=_validateField,
        metadata=_setting("dontlog-normal", _Boolean()),
    )
    acceptProxy: tuple[str, ...] = field(
        default=(),
        converter=tuple,
        validator=_validateField,
        metadata=_setting("accept-proxy", _Peers()),
    )
    proxyHeaderTimeout: float = field(
        default=5.0,
        validator=_validateField,
        metadata=_setting("proxy-header-timeout", _POSITIVE_SECONDS),
    )
    connectTimeout: float = field(
        default=5.0,
        validator=_validateField,
        metadata=_setting("connect-timeout", _POSITIVE_SECONDS),
    )
    # HAProxy's documentation puts "timeout server" at 30 to 50 seconds in
    # practice and wants "timeout client" equal to it in TCP mode.
    clientTimeout: float = field(
        default=30.0,
        validator=_validateField,
        metadata=_setting("client-timeout", _SECONDS),
    )
    serverTimeout: float = field(
        default=30.0,
        validator=_validateField,
        metadata=_setting("server-timeout", _SECONDS),
    )
    firstByteTimeout: float = field(
        default=0.0,
        validator=_validateField,
        metadata=_setting("first-byte-timeout", _SECONDS),
    )
    retries: int = field(
        default=3,
        validator=_validateField,
        metadata=_setting("retries", _Number(integer=True, minimum=0, maximum=10)),
    )
    failTimeout: float = field(
        default=10.0,
        validator=_validateField,
        metadata=_setting("fail-timeout", _SECONDS),
    )
    drainTimeout: float = field(
        default=30.0,
        validator=_validateField,
        metadata=_setting("drain-timeout", _SECONDS),
    )
    pendingBufferBytes: int = field(
        default=262144,
        validator=_validateField,
        metadata=_setting(
            "pending-buffer-bytes", _Number(integer=True, minimum=1024, unit="bytes")
        ),
    )
    sessions: tuple[str, ...] = field(default=(), converter=tuple)
    secretFile: Optional[str] = None
    sessionsInsecure: bool = field(
        default=False,
        validator=_validateField,
        metadata=_setting("sessions-insecure", _Boolean()),
    )
    tlsCiphers: Optional[str] = field(
        default=None,
        validator=_validateField,
        metadata=_setting("tls-ciphers", _Ciphers()),
    )

    def tlsSettings(self) -> TLSSettings:
        """
        The TLS settings of every TLS listener, for
        L{tlbalance.tls.splitServerTLS}.
        """
        if self.tlsCiphers is None:
            return TLSSettings()
        return TLSSettings(ciphers=self.tlsCiphers)

    def warnings(self) -> list[str]:
        """
        Settings that are allowed but probably a mistake, in words to log at
        start-up (HAProxy warns about infinite timeouts the same way).
        """
        found = []
        if self.clientTimeout == 0 and self.serverTimeout == 0:
            found.append(
                "client-timeout and server-timeout are both 0: idle connections "
                "are never closed, so a stuck or malicious client or backend can "
                "hold a connection open forever; set a number of seconds to "
                "bound them"
            )
        idleLimits = [t for t in (self.clientTimeout, self.serverTimeout) if t > 0]
        if self.firstByteTimeout and idleLimits:
            idle = min(idleLimits)
            if self.firstByteTimeout >= idle:
                found.append(
                    f"first-byte-timeout ({self.firstByteTimeout:g}s) is not "
                    f"below the idle timeout ({idle:g}s): it has no effect; set "
                    "it below client-timeout and server-timeout"
                )
        if self.backends and all(b.weight == 0 for b in self.backends):
            found.append(
                "every backend has weight 0: no new connection will be "
                "forwarded until one gets a weight above 0"
            )
        if self.proxyCRC32C and "v2" not in {
            b.sendProxy or self.sendProxy for b in self.backends
        }:
            found.append(
                "proxy-crc32c has no effect: no backend is sent PROXY v2 headers "
                "(set send-proxy to v2)"
            )
        return found


def _rulesOf(cls: type) -> dict[str, tuple[str, _Rule]]:
    """
    Map each setting name of C{cls} to its attribute name and rule.
    """
    return {
        f.metadata["key"]: (f.name, f.metadata["rule"])
        for f in fields(cls)
        if "rule" in f.metadata
    }


_BALANCER_RULES = _rulesOf(BalancerConfig)
_BACKEND_RULES = _rulesOf(BackendConfig)
_CHECK_RULES = {
    key: rule
    for key, rule in _rulesOf(HealthCheckConfig).items()
    if key.startswith("check-")
}
_TOP_KEYS = {
    "listen",
    "backend",
    "check",
    "sessions",
    "secret-file",
    *_BALANCER_RULES,
    *_CHECK_RULES,
}
_BACKEND_KEYS = {"endpoint", "name", "check", *_BACKEND_RULES, *_CHECK_RULES}
_COMMAND_LINE_RULES = {**_BALANCER_RULES, **_CHECK_RULES}


def describeSetting(key: str) -> str:
    """
    Say what a setting takes, for C{--help}: C{"An integer from 0 to 10."}.

    @param key: a setting with a type or range (a timeout, C{retries},
        C{algorithm}, ...).
    """
    text = _COMMAND_LINE_RULES[key][1].describe()
    return text[0].upper() + text[1:] + "."


def parseSetting(key: str, text: str) -> Any:
    """
    Convert a setting's command-line text to its value.

    @param key: the setting's name, without the leading C{--}.
    @param text: what the user typed.
    @return: an C{int}, C{float}, or word (C{None} for C{"none"}).
    @raise ConfigError: C{text} does not fit; the message names C{--key}.
    """
    rule = _COMMAND_LINE_RULES[key][1]
    if isinstance(rule, _Boolean):
        raise KeyError(f"{key} is a flag: it takes no value")
    return rule.parse("--" + key, text)


def loadConfig(path: Union[str, os.PathLike[str]]) -> dict[str, Any]:
    """
    Read a TOML configuration file, without checking its settings (that is
    L{buildConfig}'s job).

    @return: the file's top-level table.
    @raise ConfigError: the file cannot be read or is not TOML (the message
        gives the line and column).
    """
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError(
            f"{name}: cannot read the configuration file: {e.strerror or e}"
        ) from e
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{name}: not valid TOML: not UTF-8 text (byte {e.start})"
        ) from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{name}: not valid TOML: {e}") from e


def buildConfig(
    fileValues: Mapping[str, Any], overrides: Optional[Mapping[str, Any]] = None
) -> BalancerConfig:
    """
    Merge a configuration file's settings with the command line's and check
    the result.

    @param fileValues: the TOML file's top-level table (see L{loadConfig}),
        or C{{}} with no file. Errors name its keys as written.
    @param overrides: command-line settings under the same kebab-case names
        (C{"client-timeout": 0.0}); C{"listen"} and C{"backend"} are lists of
        endpoint strings and replace the file's. Errors name them C{--key}.
    @raise ConfigError: naming the option or key and the problem.
    """
    if not isinstance(fileValues, Mapping):
        raise ConfigError("the configuration must be a table of settings")
    settings: dict[str, tuple[str, Any]] = {
        key: (key, value) for key, value in fileValues.items()
    }
    for key, value in (overrides or {}).items():
        settings[key] = ("--" + key, value)
    for key, (label, _) in settings.items():
        if key not in _TOP_KEYS:
            raise _unknown(label, key, _TOP_KEYS)

    values: dict[str, Any] = {}
    for key, (attribute, rule) in _BALANCER_RULES.items():
        if key in settings:
            values[attribute] = rule.check(*settings[key])
    checkDefaults = {
        _CHECK_RULES[key][0]: _CHECK_RULES[key][1].check(*settings[key])
        for key in _CHECK_RULES
        if key in settings
    }
    defaultCheck = settings.get("check")

    listenLabel, listenValue = settings.get("listen", ("--listen", []))
    values["listen"] = _listenEndpoints(listenLabel, listenValue)
    backendLabel, backendValue = settings.get("backend", ("--backend", []))
    values["backends"] = _backends(
        backendLabel, backendValue, defaultCheck, checkDefaults
    )
    values.update(_sessionDaemon(settings, values.get("sessionsInsecure", False)))
    return BalancerConfig(**values)


def _sessionDaemon(
    settings: Mapping[str, tuple[str, Any]], insecure: bool
) -> dict[str, Any]:
    """
    Check the hosted session daemon's settings: its listen endpoints (kept
    private unless C{sessions-insecure}) and its secret file.
    """
    from tlsession.tap import DaemonConfigError, checkListenEndpoint, readSecretFile

    sessionsLabel, sessionsValue = settings.get("sessions", ("--sessions", []))
    secretLabel, secretValue = settings.get("secret-file", ("--secret-file", None))
    sessions = _strings(sessionsLabel, sessionsValue, "server endpoint strings")
    if not sessions:
        if secretValue is not None:
            raise ConfigError(
                f"{secretLabel}: only used with --sessions ENDPOINT (the session "
                "daemon the balancer can host)"
            )
        return {}
    if secretValue is None:
        raise ConfigError(
            f"{sessionsLabel}: the session daemon needs --secret-file FILE (the "
            "secret its clients log in with)"
        )
    if not isinstance(secretValue, str) or not secretValue.strip():
        raise ConfigError(
            f"{secretLabel}: expected a file name, got {_show(secretValue)}"
        )
    # Name the flag the way the user would set it, where they set sessions.
    if sessionsLabel.startswith("--"):
        flag = "--sessions-insecure"
    else:
        flag = "sessions-insecure = true"
    checked = []
    for description in sessions:
        _checkServerEndpoint(sessionsLabel, description)
        try:
            description = checkListenEndpoint(description, insecure, flag)
        except DaemonConfigError as e:
            raise ConfigError(f"{sessionsLabel}: {e}") from None
        if description in checked:
            raise ConfigError(f"{sessionsLabel}: {_show(description)} is given twice")
        checked.append(description)
    secretFile = os.path.abspath(secretValue)
    try:
        readSecretFile(secretFile)
    except DaemonConfigError as e:
        raise ConfigError(f"{secretLabel}: {e}") from None
    return {"sessions": tuple(checked), "secretFile": secretFile}


def _unknown(label: str, key: str, known: Iterable[str]) -> ConfigError:
    """
    The error for a misspelt or unsupported key, with the nearest real one.
    """
    message = f"{label}: unknown {'option' if label.startswith('--') else 'setting'}"
    close = difflib.get_close_matches(key, sorted(known), n=1)
    if close:
        message += f"; did you mean {close[0]}?"
    return ConfigError(message)


def _strings(label: str, value: object, what: str) -> list[str]:
    """
    A list of strings, or one string as a list of one.
    """
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(
        isinstance(item, str) for item in items
    ):
        raise ConfigError(f"{label}: expected a list of {what}, got {_show(value)}")
    return list(items)


def _listenEndpoints(label: str, value: object) -> tuple[str, ...]:
    """
    Check the listen endpoint strings.
    """
    listen = _strings(label, value, "server endpoint strings")
    if not listen:
        raise ConfigError(
            "no listen endpoint: give --listen ENDPOINT (or listen = [...] in "
            "the configuration file)"
        )
    seen = set()
    for description in listen:
        _checkServerEndpoint(label, description)
        if description in seen:
            raise ConfigError(f"{label}: {_show(description)} is given twice")
        seen.add(description)
    return tuple(listen)


def _backends(
    label: str,
    value: object,
    defaultCheck: Optional[tuple[str, Any]],
    checkDefaults: dict[str, Any],
) -> tuple[BackendConfig, ...]:
    """
    Build every backend, each from an endpoint string or a C{[[backend]]}
    table, giving them the default check where they name none.
    """
    if isinstance(value, Mapping):
        raise ConfigError(
            f"{label}: expected a list of backends, got a table; write "
            "[[backend]] (double brackets) before each backend"
        )
    entries = [value] if isinstance(value, str) else value
    if not isinstance(entries, (list, tuple)):
        raise ConfigError(f"{label}: expected a list of backends, got {_show(value)}")
    if not entries:
        raise ConfigError(
            "no backend: give --backend ENDPOINT (or [[backend]] tables in "
            "the configuration file)"
        )
    backends: list[BackendConfig] = []
    names: dict[str, str] = {}
    for index, entry in enumerate(entries):
        entryLabel = label if label.startswith("--") else f"{label}[{index}]"
        if isinstance(entry, str):
            entry = {"endpoint": entry}
            keyLabel = {"endpoint": entryLabel}
        elif isinstance(entry, Mapping):
            keyLabel = {key: f"{entryLabel}.{key}" for key in entry}
        else:
            raise ConfigError(
                f"{entryLabel}: expected a [[backend]] table or an endpoint "
                f"string, got {_show(entry)}"
            )
        backend = _backend(entryLabel, entry, keyLabel, defaultCheck, checkDefaults)
        if backend.name in names:
            if entryLabel.startswith("--"):
                raise ConfigError(f"{entryLabel}: {_show(backend.name)} is given twice")
            raise ConfigError(
                f"{entryLabel}.name: the backend name {_show(backend.name)} is "
                f"already used by {names[backend.name]}; give each backend a "
                "distinct name"
            )
        names[backend.name] = entryLabel
        backends.append(backend)
    return tuple(backends)


def _backend(
    label: str,
    table: Mapping[str, Any],
    keyLabel: Mapping[str, str],
    defaultCheck: Optional[tuple[str, Any]],
    checkDefaults: dict[str, Any],
) -> BackendConfig:
    """
    Build one backend from its table.

    @param keyLabel: how to name each of the table's keys in errors.
    """
    for key in table:
        if key not in _BACKEND_KEYS:
            raise _unknown(keyLabel[key], key, _BACKEND_KEYS)
    if "endpoint" not in table:
        raise ConfigError(f"{label}: missing endpoint (a client endpoint string)")
    given = table["endpoint"]
    endpoint = _clientEndpoint(keyLabel["endpoint"], given)
    values: dict[str, Any] = {"endpoint": endpoint, "name": given.strip()}
    if "name" in table:
        name = table["name"]
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(
                f"{keyLabel['name']}: expected a non-empty string, got {_show(name)}"
            )
        values["name"] = name
    for key, (attribute, rule) in _BACKEND_RULES.items():
        if key in table:
            values[attribute] = rule.check(keyLabel[key], table[key])

    params = dict(checkDefaults)
    for key, (attribute, rule) in _CHECK_RULES.items():
        if key in table:
            params[attribute] = rule.check(keyLabel[key], table[key])
    checkSetting = (
        (keyLabel["check"], table["check"]) if "check" in table else defaultCheck
    )
    check = None
    if checkSetting is not None:
        check = _healthCheck(*checkSetting, params)
    if check is None:
        for key in _CHECK_RULES:
            if key in table:
                raise ConfigError(
                    f"{keyLabel[key]}: set, but this backend has no check"
                )
    values["check"] = check
    return BackendConfig(**values)


def _healthCheck(
    label: str, text: object, params: Mapping[str, Any]
) -> Optional[HealthCheckConfig]:
    """
    Parse a check setting; C{"none"} means no check.
    """
    if not isinstance(text, str):
        raise ConfigError(
            f"{label}: expected a health check ({_CHECK_SYNTAX}), got {_show(text)}"
        )
    if text.strip().lower() == "none":
        return None
    try:
        return HealthCheckConfig.parse(text, **params)
    except ConfigError as e:
        raise ConfigError(f"{label}: {e}") from None


# Endpoint strings.


@implementer(IReactorPluggableNameResolver)
class _ParseOnlyReactor:
    """
    Stands in for the reactor while endpoint strings are parsed: endpoints
    only store it, and anything that tried to listen or connect through it
    would fail loudly.
    """

    nameResolver = None

    def installNameResolver(self, resolver: IHostnameResolver) -> IHostnameResolver:
        """
        Never called while parsing; present for the interface.
        """
        raise RuntimeError("endpoint strings are only parsed here")


_PARSE_ONLY = _ParseOnlyReactor()

# Where the port sits among an endpoint string's positional arguments
# (counting the type): Twisted's parsers take any integer, so 70000 would
# otherwise only fail when listening or, worse, on every connection attempt.
_SERVER_PORT_POSITION = {"tcp": 1, "tcp6": 1, "ssl": 1}
_CLIENT_PORT_POSITION = {"tcp": 2, "ssl": 2, "tls": 2}

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


def withListenBacklog(description: str, backlog: int = DEFAULT_BACKLOG) -> str:
    """
    The server endpoint string to listen with: C{description} with
    C{backlog=BACKLOG} added, unless it sets a backlog itself or its type
    takes none (C{systemd:} sockets come with the backlog systemd gave
    them).

    C{tcp:}, C{tcp6:}, C{unix:}, C{ssl:} and C{tls:} take a backlog, also
    when wrapped in C{tlsni:} and C{tlproxy:}.
    """
    args, kwargs = _parse(description)
    kinds = [str(arg).lower() for arg in args]
    index = 0
    while index < len(kinds) and kinds[index] in _WRAPPER_TYPES:
        index += 1
    if index == len(kinds) or kinds[index] not in _BACKLOG_TYPES:
        return description
    if "backlog" in kwargs:
        return description
    return unparseEndpoint(args, {**kwargs, "backlog": str(backlog)})


# The tlsni: parser's own options (tlbalance.tls); the rest is the inner
# endpoint.
_TLSNI_OPTIONS = ("certdir", "strict")

_HOST_PORT = re.compile(
    r"(?P<host>[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?):(?P<port>[0-9]+)"
)
_BRACKETED_HOST_PORT = re.compile(r"\[(?P<host>[0-9A-Fa-f:.]+)\]:(?P<port>[0-9]+)")


def _reason(error: Exception) -> str:
    """
    Say why Twisted refused an endpoint string, in one line.
    """
    original = getattr(error, "originalException", None)
    if isinstance(original, Exception):
        error = original
    text = str(error)
    if isinstance(error, LookupError) or not text:
        return f"{type(error).__name__} {text}".strip()
    return text


def _checkPort(
    label: str,
    given: str,
    description: str,
    positions: Mapping[str, int],
    lowest: int,
    example: str,
) -> None:
    """
    Refuse a missing port, or one outside C{lowest}..65535, in
    C{description}, which the user wrote as C{given}.
    """
    args, kwargs = _parse(description)
    position = positions.get(args[0].lower()) if args else None
    if position is None:
        return
    port = kwargs.get("port", args[position] if len(args) > position else None)
    if port is None:
        raise ConfigError(f"{label}: {_show(given)}: no port given, as in {example}")
    if port.isdigit() and not lowest <= int(port) <= 65535:
        raise ConfigError(
            f"{label}: {_show(given)}: the port must be from {lowest} to 65535, "
            f"got {port}"
        )


def _checkServerEndpoint(label: str, description: str) -> None:
    """
    Check that C{description} parses as a server endpoint string.
    """
    args, kwargs = _parse(description)
    if args and args[0].lower() == "tlsni":
        if not kwargs.get("certdir"):
            raise ConfigError(
                f"{label}: {_show(description)}: tlsni needs "
                "certdir=DIRECTORY (a directory of PEM files)"
            )
        innerKwargs = {k: v for k, v in kwargs.items() if k not in _TLSNI_OPTIONS}
        if len(args) < 2:
            raise ConfigError(
                f"{label}: {_show(description)}: tlsni needs an endpoint to "
                "wrap, as in tlsni:certdir=/etc/certs:tcp:443"
            )
        _checkServerEndpoint(label, unparseEndpoint(args[1:], innerKwargs))
    else:
        _checkPort(
            label, description, description, _SERVER_PORT_POSITION, 0, "tcp:8080"
        )
    try:
        # For tlsni: this reads the certificate directory, so a bad file
        # stops start-up with a one-line message, as a bad ssl: key does.
        # Splitting the TLS off refuses what tlbalance's TLS settings do not
        # support (Twisted's tls: server endpoint, ssl:'s dhParameters=).
        splitServerTLS(serverFromString(_PARSE_ONLY, description))
    except Exception as e:
        reason = _reason(e)
        if args and args[0].lower() == "systemd" and isinstance(e, LookupError):
            reason = (
                "systemd passed no such socket (is the .socket unit active, "
                "and does its FileDescriptorName match?)"
            )
        raise ConfigError(
            f"{label}: {_show(description)} is not a valid server endpoint: {reason}"
        ) from None


def _clientEndpointTypes() -> set[str]:
    """
    The endpoint types a client endpoint string can start with.
    """
    return {"tcp", "ssl", "unix"} | {
        plugin.prefix.lower()
        for plugin in getPlugins(IStreamClientEndpointStringParserWithReactor)
    }


def _clientEndpoint(label: str, value: object) -> str:
    """
    Check a backend endpoint and return it as a client endpoint string.

    Besides endpoint strings, C{HOST:PORT}, C{[IPv6]:PORT} and absolute
    paths are accepted and become C{tcp:host=HOST:port=PORT} and
    C{unix:path=PATH}.
    """
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(
            f"{label}: expected a client endpoint string, got {_show(value)}"
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
                        f"{label}: {_show(value)}: {_show(host)} is not an IPv6 address"
                    ) from None
            description = (
                f"tcp:host={quoteEndpointArgument(host)}:port={match.group('port')}"
            )
    _checkPort(
        label,
        value,
        description,
        _CLIENT_PORT_POSITION,
        1,
        "tcp:host=HOST:port=PORT or HOST:PORT",
    )
    try:
        clientFromString(_PARSE_ONLY, description)
    except Exception as e:
        hint = ""
        if not isinstance(e, OSError):
            hint = (
                " (expected e.g. tcp:host=HOST:port=PORT, HOST:PORT, "
                "unix:path=PATH or /PATH)"
            )
        raise ConfigError(
            f"{label}: {_show(value)} is not a valid client endpoint: "
            f"{_reason(e)}{hint}"
        ) from None
    return description
