# -*- test-case-name: tests.unit.test_config -*-
"""
The balancer's configuration as frozen attrs classes: L{BalancerConfig},
its L{BackendConfig}s and their L{HealthCheckConfig}s. Each field with a
type or range carries its rule (L{tlbalance._rules}) and its setting's
name, which the TOML file and the command line use
(L{tlbalance._merge}), and checks it when built in code too.
"""

from __future__ import annotations

from typing import Any, Optional

from attrs import Factory, field, frozen

from tlbalance._checktext import parseCheckText
from tlbalance._rules import (
    POSITIVE_SECONDS,
    SECONDS,
    Boolean,
    Choice,
    Ciphers,
    Number,
    Peers,
    setting,
    validateField,
)
from tlbalance.tls import TLSSettings

#: The ways of picking a backend.
ALGORITHMS = ("roundrobin", "leastconn", "source", "random")


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
        validator=validateField, metadata=setting("kind", Choice(("tcp", "http")))
    )
    method: str = "GET"
    path: str = "/"
    expectStatus: int = field(
        default=200,
        validator=validateField,
        metadata=setting("status", Number(integer=True, minimum=100, maximum=599)),
    )
    inter: float = field(
        default=2.0,
        validator=validateField,
        metadata=setting("check-inter", POSITIVE_SECONDS),
    )
    rise: int = field(
        default=2,
        validator=validateField,
        metadata=setting("check-rise", Number(integer=True, minimum=1)),
    )
    fall: int = field(
        default=3,
        validator=validateField,
        metadata=setting("check-fall", Number(integer=True, minimum=1)),
    )
    timeout: Optional[float] = field(
        default=None,
        validator=validateField,
        metadata=setting(
            "check-timeout",
            Number(integer=False, minimum=0, above=True, unit="seconds", optional=True),
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
        return cls(**parseCheckText(text), **defaults)


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
        validator=validateField,
        metadata=setting("weight", Number(integer=True, minimum=0, maximum=256)),
    )
    backup: bool = field(
        default=False, validator=validateField, metadata=setting("backup", Boolean())
    )
    maxconn: int = field(
        default=0,
        validator=validateField,
        metadata=setting("maxconn", Number(integer=True, minimum=0)),
    )
    sendProxy: Optional[str] = field(
        default=None,
        validator=validateField,
        metadata=setting("send-proxy", Choice(("v1", "v2", "none"), optional=True)),
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
    @ivar sessions: server endpoint strings, as written, on which
        C{twistd tlbalance} also hosts the tlsession daemon; empty for none.
        Only data here: L{tlbalance.tap} applies the daemon's rules (unix
        sockets get C{mode=600}) and builds it.
    @ivar secretFile: the daemon's shared secret file (absolute path), set
        exactly when C{sessions} is.
    @ivar sessionsInsecure: let the daemon listen on plain endpoints such
        as C{tcp:}.
    @ivar stats: server endpoint strings of the read-only HTTP stats
        listeners (status page, C{/stats.json}, C{/metrics}); empty for
        none.
    @ivar control: the path of the unix socket (made mode 0600) of the
        runtime API (L{tlbalance.control}), or C{None} for none.
    @ivar tlsCiphers: the TLS 1.2 cipher suites of every TLS listener, an
        OpenSSL cipher string; C{None} for tlbalance's default (Mozilla's
        intermediate profile, L{tlbalance.tls.DEFAULT_CIPHERS}).
    """

    listen: tuple[str, ...] = field(converter=tuple)
    backends: tuple[BackendConfig, ...] = field(converter=tuple)
    algorithm: str = field(
        default="roundrobin",
        validator=validateField,
        metadata=setting("algorithm", Choice(ALGORITHMS)),
    )
    sendProxy: Optional[str] = field(
        default=None,
        validator=validateField,
        metadata=setting(
            "send-proxy", Choice(("v1", "v2"), optional=True, noneWord="none")
        ),
    )
    proxyCRC32C: bool = field(
        default=False,
        validator=validateField,
        metadata=setting("proxy-crc32c", Boolean()),
    )
    dontlogNormal: bool = field(
        default=False,
        validator=validateField,
        metadata=setting("dontlog-normal", Boolean()),
    )
    acceptProxy: tuple[str, ...] = field(
        default=(),
        converter=tuple,
        validator=validateField,
        metadata=setting("accept-proxy", Peers()),
    )
    proxyHeaderTimeout: float = field(
        default=5.0,
        validator=validateField,
        metadata=setting("proxy-header-timeout", POSITIVE_SECONDS),
    )
    connectTimeout: float = field(
        default=5.0,
        validator=validateField,
        metadata=setting("connect-timeout", POSITIVE_SECONDS),
    )
    # HAProxy's documentation puts "timeout server" at 30 to 50 seconds in
    # practice and wants "timeout client" equal to it in TCP mode.
    clientTimeout: float = field(
        default=30.0,
        validator=validateField,
        metadata=setting("client-timeout", SECONDS),
    )
    serverTimeout: float = field(
        default=30.0,
        validator=validateField,
        metadata=setting("server-timeout", SECONDS),
    )
    firstByteTimeout: float = field(
        default=0.0,
        validator=validateField,
        metadata=setting("first-byte-timeout", SECONDS),
    )
    retries: int = field(
        default=3,
        validator=validateField,
        metadata=setting("retries", Number(integer=True, minimum=0, maximum=10)),
    )
    failTimeout: float = field(
        default=10.0,
        validator=validateField,
        metadata=setting("fail-timeout", SECONDS),
    )
    drainTimeout: float = field(
        default=30.0,
        validator=validateField,
        metadata=setting("drain-timeout", SECONDS),
    )
    pendingBufferBytes: int = field(
        default=262144,
        validator=validateField,
        metadata=setting(
            "pending-buffer-bytes", Number(integer=True, minimum=1024, unit="bytes")
        ),
    )
    sessions: tuple[str, ...] = field(default=(), converter=tuple)
    stats: tuple[str, ...] = field(default=(), converter=tuple)
    secretFile: Optional[str] = None
    sessionsInsecure: bool = field(
        default=False,
        validator=validateField,
        metadata=setting("sessions-insecure", Boolean()),
    )
    tlsCiphers: Optional[str] = field(
        default=None,
        validator=validateField,
        metadata=setting("tls-ciphers", Ciphers()),
    )
    control: Optional[str] = None

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
